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
import json
import sys
import tempfile
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa
import yaml
from measure import measured
from redis_keys import PG_ADMIN, REDIS_URL

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


def load(keys: int, client: redis.Redis, database: str) -> int:
    engine = sa.create_engine(PG_ADMIN.rsplit("/", 1)[0] + "/" + database)
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
    client = redis.Redis.from_url(REDIS_URL)
    database = f"auditor_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    try:
        drifted = load(args.keys, client, database)
        with tempfile.TemporaryDirectory(prefix="auditor-bench-") as tmp:
            config = Path(tmp) / "cache.yaml"
            url = PG_ADMIN.rsplit("/", 1)[0] + "/" + database
            rule = {"name": "customer-cache", "type": "pii", "suggest_keys": False,
                    "source": {"db": "crm", "table": "customers", "key": ["id"]},
                    "copy": {"db": "cache", "table": PREFIX + "{id}", "value": "hash",
                             "key": ["id"]},
                    "fields": [{"source": "email", "copy": "email", "normalize": ["email"]},
                               {"source": "name", "copy": "name", "normalize": ["trim"]}]}  # fmt: skip
            databases = {"cache": {"url": REDIS_URL}, "crm": {"url": url}}
            config.write_text(yaml.safe_dump({"version": 1, "databases": databases,
                                              "rules": [rule]}))  # fmt: skip
            read = measured([sys.executable, "-c", READ_ALL, REDIS_URL, PREFIX + "*"])
            copy = f"\\copy (SELECT id, email, name FROM customers) TO '{tmp}/c.txt'"
            copied = measured(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database,
                               "-c", copy])  # fmt: skip
            report = Path(tmp) / "out.json"
            run = measured([sys.executable, "-m", "auditor", "run", str(config), "-q",
                            "--max-findings", "0", "--json", str(report)])  # fmt: skip
            found = json.loads(report.read_text())["rules"][0]["counts"]
        baseline = read[1] + copied[1]
        print(f"{args.keys:,} Redis hashes (2 fields) against a {args.keys:,}-row PostgreSQL table")
        print(
            f"  SCAN + raw HMGET pipeline {read[1]:6.2f} s  {read[2]:5.0f} MB  ({read[3].strip()} read)"
        )
        print(f"  psql \\copy of customers   {copied[1]:6.2f} s")
        print(f"  auditor run               {run[1]:6.2f} s  {run[2]:5.0f} MB  "
              f"ratio {run[1] / baseline:.2f}  found {found} (seeded {drifted} mismatches)"
              + ("" if found == {"mismatch": drifted} else "  FAIL"))  # fmt: skip
    finally:
        for key in client.scan_iter(match=PREFIX + "*", count=10_000):
            client.delete(key)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.dispose()


if __name__ == "__main__":
    main()
