"""Incremental nightly runs (prints figures): a full run against the same night's incremental.

    python bench/incremental.py --reviews 5000000 --products 200000

Builds a new PostgreSQL database (W1's reference rule: reviews -> products; reviews has a
`version` column, indexed as `auditor check` suggests, with product_id), runs `auditor run --incremental` once (full: stores the
state), then changes 1% of the reviews (a new product id, version bumped; a tenth of them an
orphan) and 0.1% of the products (half deleted, half soft-deleted), and times, each in a child
process with its peak RSS:
  full         `auditor run` (no state)
  incremental  `auditor run --incremental`
checking both find the same counts, and prints the rows each read and the state's bytes per
referenced key. Cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

import sqlalchemy as sa
import yaml
from measure import PG_ADMIN, measured


def load(url: str, products: int, reviews: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE products (id bigint PRIMARY KEY, deleted boolean NOT NULL DEFAULT false)"
        )
        conn.execute(sa.text("INSERT INTO products SELECT generate_series(1, :n)"), {"n": products})
        conn.exec_driver_sql(
            "CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint, version bigint)"
        )
        conn.execute(
            sa.text(
                "INSERT INTO reviews SELECT i, 1 + (i::bigint * 7919) % :p, i FROM generate_series(1, :n) i"
            ),
            {"p": products, "n": reviews},
        )
        conn.exec_driver_sql("CREATE INDEX reviews_version ON reviews (version)")
        conn.exec_driver_sql("CREATE INDEX reviews_product ON reviews (product_id)")
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def change(url: str, products: int, reviews: int) -> None:
    """1% of the reviews re-pointed (a tenth at no product), 0.1% of the products gone."""
    engine = sa.create_engine(url)
    every = {"r": 100, "p": 1000}
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE reviews SET version = :n + id, product_id = CASE WHEN id % 1000 = 0 "
                "THEN :p + id ELSE 1 + (id * 31) % :p END WHERE id % :r = 0"
            ),
            {"n": reviews, "p": products, **every},
        )
        conn.execute(sa.text("DELETE FROM products WHERE id % :p = 0 AND id % 2000 <> 0"), every)
        conn.execute(sa.text("UPDATE products SET deleted = true WHERE id % 2000 = 0"))
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=5_000_000)
    parser.add_argument("--products", type=int, default=200_000)
    args = parser.parse_args()
    import tempfile
    from pathlib import Path

    name = f"auditor_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        with tempfile.TemporaryDirectory(prefix="bench-auditor-") as tmp:
            folder = Path(tmp)
            load(url, args.products, args.reviews)
            rule = {
                "name": "reviews-products",
                "type": "reference",
                "from": {"db": "b", "table": "reviews", "columns": ["product_id"],
                         "changed": "version"},
                "to": {"db": "a", "table": "products", "columns": ["id"],
                       "soft_delete": "deleted"},
            }  # fmt: skip
            config = folder / "nightly.yaml"
            config.write_text(yaml.safe_dump({
                "version": 1, "databases": {"a": {"url": url}, "b": {"url": url}},
                "settings": {"change_lag_s": 0}, "rules": [rule]}))  # fmt: skip

            def run(*flags: str) -> tuple[tuple, dict]:
                report = folder / f"{uuid.uuid4().hex}.json"
                done = measured([sys.executable, "-m", "auditor", "run", str(config), "-q",
                                 "--json", str(report), *flags])  # fmt: skip
                data = json.loads(report.read_text())["rules"][0]
                return done, data

            first, _ = run("--incremental")
            change(url, args.products, args.reviews)
            full, full_rule = run()
            incremental, inc_rule = run("--incremental")
            state = sum(
                f.stat().st_size for f in (folder / ".auditor-state").rglob("keys-*.parquet")
            )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
    same = full_rule["counts"] == inc_rule["counts"]
    full_rows = sum(full_rule["rows_scanned"].values())
    inc_rows = sum(inc_rule["rows_scanned"].values())
    print(f"incremental: reviews {args.reviews:,} -> products {args.products:,}; "
          f"1% of reviews and 0.1% of products changed")  # fmt: skip
    print(f"  first run (full, stores state) {first[1]:6.2f} s  {first[2]:5.0f} MB")
    print(f"  full run                       {full[1]:6.2f} s  {full[2]:5.0f} MB  "
          f"rows {full_rows:,}")  # fmt: skip
    print(f"  incremental run                {incremental[1]:6.2f} s  {incremental[2]:5.0f} MB  "
          f"rows {inc_rows:,} ({inc_rows / full_rows:.1%})  mode {inc_rule['incremental']['mode']}"
          f"{'' if same else '  FAIL: counts differ'}")  # fmt: skip
    print(f"  time ratio {incremental[1] / full[1]:.1%}; state {state:,} bytes, "
          f"{state / args.products:.2f} bytes per referenced key")  # fmt: skip
    if not same or inc_rule["incremental"]["mode"] != "incremental":
        print(json.dumps([full_rule["counts"], inc_rule["counts"], inc_rule["incremental"]]))
        sys.exit(1)


if __name__ == "__main__":
    main()
