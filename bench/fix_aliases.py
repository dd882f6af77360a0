"""Stale aliases repaired at scale (prints figures): `auditor fix --apply` on PostgreSQL.

    python bench/fix_aliases.py --stale 100000

Builds a new PostgreSQL database with 2 x --stale products, an alias table mapping --stale
retired ids to current ones, and as many reviews, each holding a retired id (plus as many that
are fine); audits it into a JSON report (--max-findings 0), then times, each in a child process
with its peak RSS:
  plan    `auditor fix REPORT --config C`: every finding re-checked by key, plan files written
  apply   `auditor fix REPORT --config C --apply --yes`: re-checked again, applied with undo
and checks that the audit after the apply finds no stale alias and that every review points
at its current id. Cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import sys

import sqlalchemy as sa
import yaml
from measure import audit, bench_stores, measured


def load(stale: int, url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE products (id bigint PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE aliases (old_id bigint PRIMARY KEY, new_id bigint)")
        conn.exec_driver_sql(
            "CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint, body text)"
        )
        params = {"n": stale}
        conn.execute(sa.text("INSERT INTO products SELECT generate_series(1, 2 * :n)"), params)
        conn.execute(  # retired ids above every current one
            sa.text("INSERT INTO aliases SELECT 10 * :n + i, i FROM generate_series(1, :n) i"),
            params,
        )
        conn.execute(
            sa.text(
                "INSERT INTO reviews SELECT i, CASE WHEN i <= :n THEN 10 * :n + i ELSE i END, "
                "'review ' || i FROM generate_series(1, 2 * :n) i"
            ),
            params,
        )
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stale", type=int, default=100_000)
    args = parser.parse_args()
    with bench_stores("bench:none:") as (_client, url, tmp):
        load(args.stale, url)
        rule = {
            "name": "reviews-products",
            "type": "reference",
            "from": {"db": "shop", "table": "reviews", "columns": ["product_id"]},
            "to": {"db": "shop", "table": "products", "columns": ["id"]},
            "aliases": {"db": "shop", "table": "aliases", "old": ["old_id"], "new": ["new_id"]},
            "fix": {"stale_alias": "rewrite"},
        }
        databases = {"shop": {"url": url, "fix_url": url}}
        run, found = audit(tmp, databases, rule)
        assert found == {"stale_alias": args.stale}, found
        config, report = tmp / "bench.yaml", tmp / "report.json"
        (tmp / "out.json").rename(report)
        fix = [sys.executable, "-m", "auditor", "fix", str(report), "--config", str(config)]
        planned = measured([*fix, "--out", str(tmp / "plan")])
        applied = measured([*fix, "--out", str(tmp / "applied"), "--apply", "--yes"])
        after, counts = audit(tmp, databases, rule)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            wrong = conn.exec_driver_sql(  # review i holds product i now
                "SELECT count(*) FROM reviews WHERE product_id IS DISTINCT FROM id"
            ).scalar()
        engine.dispose()
    check = "" if counts == {} and wrong == 0 and applied[0] == 0 else "  FAIL"
    print(f"fix {args.stale:,} stale aliases on PostgreSQL (reviews: {2 * args.stale:,} rows)")
    print(f"  auditor run (the report)  {run[1]:6.2f} s  {run[2]:5.0f} MB")
    print(f"  auditor fix (plan)        {planned[1]:6.2f} s  {planned[2]:5.0f} MB  "
          f"exit {planned[0]}")  # fmt: skip
    print(f"  auditor fix --apply       {applied[1]:6.2f} s  {applied[2]:5.0f} MB  "
          f"exit {applied[0]}{check}")  # fmt: skip
    if check:
        print(json.dumps(counts), wrong, applied[4][-2000:], file=sys.stderr)
        print(yaml.safe_dump(rule), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
