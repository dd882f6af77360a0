"""Stale cache keys at scale (prints figures): Redis keys `product:{id}` against PostgreSQL.

    python bench/redis_keys.py --keys 1000000

Loads --keys keys (keys only; 1 in 1000 names a product that does not exist) into Redis
logical database 14 under `bench:` and a products table of the same size into a new
PostgreSQL database, then times, each in a child process with its peak RSS:
  baseline  listing the keys with SCAN ... COUNT 10000 (redis-py) plus `psql \\copy` of the ids
  auditor   `auditor run` of the reference rule (keys -> products), --max-findings 0
and checks auditor found exactly the seeded orphans. Cleans up after itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa
import yaml
from measure import measured

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"
PREFIX = "bench:product:"
LIST_KEYS = (
    "import redis, sys; r = redis.Redis.from_url(sys.argv[1]); "
    "print(sum(1 for _ in r.scan_iter(match=sys.argv[2], count=10000)))"
)


def load(keys: int, client: redis.Redis, database: str) -> int:
    """The keys and the table; returns how many keys name no product."""
    engine = sa.create_engine(PG_ADMIN.rsplit("/", 1)[0] + "/" + database)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE products (id bigint PRIMARY KEY)")
        conn.execute(sa.text("INSERT INTO products SELECT generate_series(1, :n)"), {"n": keys})
        conn.exec_driver_sql("ANALYZE products")
    engine.dispose()
    orphans = 0
    pipe = client.pipeline(transaction=False)
    for number in range(1, keys + 1):
        product = number if number % 1000 else keys + number  # 1 in 1000: no such product
        orphans += number % 1000 == 0
        pipe.set(f"{PREFIX}{product}", b"")
        if number % 10_000 == 0:
            pipe.execute()
    pipe.execute()
    return orphans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    client = redis.Redis.from_url(REDIS_URL)
    database = f"auditor_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    try:
        orphans = load(args.keys, client, database)
        with tempfile.TemporaryDirectory(prefix="auditor-bench-") as tmp:
            config = Path(tmp) / "cache.yaml"
            url = PG_ADMIN.rsplit("/", 1)[0] + "/" + database
            rule = {"name": "product-cache", "type": "reference",
                    "from": {"db": "cache", "table": PREFIX + "{id}", "columns": ["id"]},
                    "to": {"db": "shop", "table": "products", "columns": ["id"]}}  # fmt: skip
            databases = {"cache": {"url": REDIS_URL}, "shop": {"url": url}}
            config.write_text(yaml.safe_dump({"version": 1, "databases": databases,
                                              "rules": [rule]}))  # fmt: skip
            listed = measured([sys.executable, "-c", LIST_KEYS, REDIS_URL, PREFIX + "*"])
            copy_ids = f"\\copy (SELECT id FROM products) TO '{tmp}/ids.txt'"
            copied = measured(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database,
                               "-c", copy_ids])  # fmt: skip
            report = Path(tmp) / "out.json"
            run = measured([sys.executable, "-m", "auditor", "run", str(config), "-q",
                            "--max-findings", "0", "--json", str(report)])  # fmt: skip
            import json

            found = json.loads(report.read_text())["rules"][0]["counts"]
        baseline = listed[1] + copied[1]
        print(f"{args.keys:,} Redis keys against a {args.keys:,}-row PostgreSQL table")
        print(
            f"  SCAN COUNT 10000 listing  {listed[1]:6.2f} s  {listed[2]:5.0f} MB  ({listed[3].strip()} keys)"
        )
        print(f"  psql \\copy of the ids     {copied[1]:6.2f} s  {copied[2]:5.0f} MB")
        print(f"  auditor run               {run[1]:6.2f} s  {run[2]:5.0f} MB  "
              f"ratio {run[1] / baseline:.2f}  found {found} (seeded {orphans} orphans)"
              + ("" if found == {"orphan": orphans} else "  FAIL"))  # fmt: skip
    finally:
        for key in client.scan_iter(match=PREFIX + "*", count=10_000):
            client.delete(key)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.dispose()


if __name__ == "__main__":
    main()
