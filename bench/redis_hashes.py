"""Cached PII at scale (prints figures): Redis hashes `customer:{id}` against PostgreSQL.

    python bench/redis_hashes.py --keys 1000000

Loads --keys hashes (email and name; 1 in 1000 with a drifted email) into Redis logical
database 14 under `bench:` and a customers table into a new PostgreSQL database, then times,
each in a child process with its peak RSS:
  baseline  SCAN ... COUNT 10000 listing, plus every hash read with HMGET pipelined over one
            raw connection (hiredis parsing), plus `psql \\copy` of the customers
  auditor   `auditor run` of the pii rule (copy: the hashes, `value: hash`)
and checks auditor found exactly the seeded mismatches. Cleans up after itself.
"""

from __future__ import annotations

import argparse
import sys

import redis
import sqlalchemy as sa
from measure import REDIS_URL, audit, bench_stores, measured, print_audit, psql_copy

PREFIX = "bench:customer:"
# SCAN every key, then HMGET all of them in packed pipelines of 10,000 on one connection.
READ_ALL = """
import sys, redis
r = redis.Redis.from_url(sys.argv[1])
keys = list(r.scan_iter(match=sys.argv[2], count=10000))
pool = r.connection_pool
conn = pool.get_connection()
tail = b"$5\\r\\nemail\\r\\n$4\\r\\nname\\r\\n"
read = 0
for start in range(0, len(keys), 10000):
    chunk = keys[start:start + 10000]
    conn.send_packed_command([b"".join(
        b"*4\\r\\n$5\\r\\nHMGET\\r\\n$%d\\r\\n%s\\r\\n%s" % (len(k), k, tail) for k in chunk)])
    read += sum(1 for _ in chunk if conn.read_response())
print(read)
"""


def load(keys: int, client: redis.Redis, url: str) -> int:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE customers (id bigint PRIMARY KEY, email text, name text)"
        )
        conn.execute(
            sa.text(
                "INSERT INTO customers SELECT g, 'user' || g || '@example.com', 'Name ' || g "
                "FROM generate_series(1, :n) g"
            ),
            {"n": keys},
        )
        conn.exec_driver_sql("ANALYZE customers")
    engine.dispose()
    drifted = 0
    pipe = client.pipeline(transaction=False)
    for number in range(1, keys + 1):
        email = f"user{number}@example.com" if number % 1000 else f"old{number}@example.com"
        drifted += number % 1000 == 0
        pipe.hset(f"{PREFIX}{number}", mapping={"email": email, "name": f"Name {number}"})
        if number % 10_000 == 0:
            pipe.execute()
    pipe.execute()
    return drifted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with bench_stores(PREFIX) as (client, url, tmp):
        drifted = load(args.keys, client, url)
        read = measured([sys.executable, "-c", READ_ALL, REDIS_URL, PREFIX + "*"])
        copied = psql_copy(url, "SELECT id, email, name FROM customers", tmp)
        rule = {"name": "customer-cache", "type": "pii", "suggest_keys": False,
                "source": {"db": "crm", "table": "customers", "key": ["id"]},
                "copy": {"db": "cache", "table": PREFIX + "{id}", "value": "hash",
                         "key": ["id"]},
                "fields": [{"source": "email", "copy": "email", "normalize": ["email"]},
                           {"source": "name", "copy": "name", "normalize": ["trim"]}]}  # fmt: skip
        run, found = audit(tmp, {"cache": {"url": REDIS_URL}, "crm": {"url": url}}, rule)
    print(f"{args.keys:,} Redis hashes (2 fields) against a {args.keys:,}-row PostgreSQL table")
    print(f"  SCAN + raw HMGET pipeline {read[1]:6.2f} s  ({read[3].strip()} read)")
    print(f"  psql \\copy of customers   {copied[1]:6.2f} s")
    print_audit(run, read[1] + copied[1], found, {"mismatch": drifted})


if __name__ == "__main__":
    main()
