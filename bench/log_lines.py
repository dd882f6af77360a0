"""Ids in a gzipped access log at scale (prints figures): log lines against PostgreSQL.

    python bench/log_lines.py --lines 5000000

Writes a gzipped access log of --lines lines of ~200 bytes, each naming one product (1 in
1,000 a product that does not exist; 1 in 100 no product at all) and a products table into a
new PostgreSQL database, then times, each in a child process with its peak RSS:
  baseline  `zcat | wc -l` of the log plus `psql \\copy` of the product ids
  auditor   `auditor run` of the reference rule (lines, `extract`), --max-findings 0
and checks auditor found exactly the seeded orphans.
"""

from __future__ import annotations

import argparse
import gzip
import random

import sqlalchemy as sa
from measure import audit, bench_stores, measured, print_audit, psql_copy

PRODUCTS = 100_000
AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Safari/537.36"


def write_log(path, lines: int) -> int:
    """The log; returns how many lines name a product that does not exist."""
    rng = random.Random(20261203)
    orphans = 0
    with gzip.open(path, "wt", compresslevel=6) as handle:
        for number in range(1, lines + 1):
            if number % 100 == 0:
                target = "/checkout"
            elif number % 1000 == 1:
                target = f"/products/{PRODUCTS + number}"
                orphans += 1
            else:
                target = f"/products/{rng.randint(1, PRODUCTS)}"
            handle.write(
                f'10.0.{number % 250}.{number % 199} - - [03/Dec/2026:10:00:00 +0000] "GET '
                f'{target} HTTP/1.1" 200 5120 "-" "{AGENT}"\n'
            )
    return orphans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5_000_000)
    args = parser.parse_args()
    with bench_stores("bench:none:") as (_, url, tmp):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE products (id bigint PRIMARY KEY)")
            conn.exec_driver_sql(f"INSERT INTO products SELECT generate_series(1, {PRODUCTS})")
        engine.dispose()
        (tmp / "logs").mkdir()
        log = tmp / "logs" / "access.log.gz"
        orphans = write_log(log, args.lines)
        counted = measured(["sh", "-c", f"zcat {log} | wc -l"])
        copied = psql_copy(url, "SELECT id FROM products", tmp)
        rule = {"name": "logged-products", "type": "reference",
                "from": {"db": "logs", "table": "*.gz", "columns": ["product_id"],
                         "extract": {"column": "line",
                                     "pattern": r"GET /products/(?P<product_id>\d+)"}},
                "to": {"db": "shop", "table": "products", "columns": ["id"]}}  # fmt: skip
        databases = {"logs": {"path": str(tmp / "logs"), "format": "lines"}, "shop": {"url": url}}
        run, found = audit(tmp, databases, rule)
        size = log.stat().st_size / 1e6
    print(f"{args.lines:,} log lines ({size:,.0f} MB gzipped) against {PRODUCTS:,} products")
    print(f"  zcat | wc -l               {counted[1]:6.2f} s  ({counted[3].strip()} lines)")
    print(f"  psql \\copy of the ids      {copied[1]:6.2f} s")
    print_audit(run, counted[1] + copied[1], found, {"orphan": orphans})


if __name__ == "__main__":
    main()
