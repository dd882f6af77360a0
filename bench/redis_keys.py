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

import redis
import sqlalchemy as sa
from measure import REDIS_URL, audit, bench_stores, measured, print_audit, psql_copy

PREFIX = "bench:product:"
LIST_KEYS = (
    "import redis, sys; r = redis.Redis.from_url(sys.argv[1]); "
    "print(sum(1 for _ in r.scan_iter(match=sys.argv[2], count=10000)))"
)


def load(keys: int, client: redis.Redis, url: str) -> int:
    """The keys and the table; returns how many keys name no product."""
    engine = sa.create_engine(url)
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
    with bench_stores(PREFIX) as (client, url, tmp):
        orphans = load(args.keys, client, url)
        listed = measured([sys.executable, "-c", LIST_KEYS, REDIS_URL, PREFIX + "*"])
        copied = psql_copy(url, "SELECT id FROM products", tmp)
        rule = {"name": "product-cache", "type": "reference",
                "from": {"db": "cache", "table": PREFIX + "{id}", "columns": ["id"]},
                "to": {"db": "shop", "table": "products", "columns": ["id"]}}  # fmt: skip
        run, found = audit(tmp, {"cache": {"url": REDIS_URL}, "shop": {"url": url}}, rule)
    print(f"{args.keys:,} Redis keys against a {args.keys:,}-row PostgreSQL table")
    print(f"  SCAN COUNT 10000 listing  {listed[1]:6.2f} s  ({listed[3].strip()} keys)")
    print(f"  psql \\copy of the ids     {copied[1]:6.2f} s")
    print_audit(run, listed[1] + copied[1], found, {"orphan": orphans})


if __name__ == "__main__":
    main()
