"""Access-time verification latency (prints figures): p50 and p99 of auditor.Verifier.verify.

    python bench/verify.py --calls 10000 --customers 100000

Builds a new PostgreSQL database of customers (id primary key, email indexed as `auditor
check` suggests for suggested_key, name, phone), warms a Verifier with 200 calls, then times
`--calls` calls in one thread: 90% with the customer's own values in another form (case,
spaces: a normalised match), 10% with another customer's values (a mismatch, so the indexed
look-up for `suggested_key` runs too). Cleans up after itself.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import sqlalchemy as sa
import yaml
from measure import bench_stores

import auditor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    with bench_stores("auditor-bench-verify:") as (_redis, url, folder):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE customers (id bigint PRIMARY KEY, email text, name text, phone text)"
            )
            conn.execute(
                sa.text(
                    "INSERT INTO customers SELECT i, 'user' || i || '@example.com', 'Name ' || i, "
                    "'+1415555' || lpad((i % 10000)::text, 4, '0') FROM generate_series(1, :n) i"
                ),
                {"n": args.customers},
            )
            conn.exec_driver_sql("CREATE INDEX customers_email ON customers (email)")
            conn.exec_driver_sql("ANALYZE customers")
        engine.dispose()
        config = folder / "verify.yaml"
        config.write_text(yaml.safe_dump({
            "version": 1,
            "databases": {"crm": {"url": url}, "shop": {"url": url}},
            "rules": [{
                "name": "orders-customers", "type": "pii",
                "source": {"db": "crm", "table": "customers", "key": ["id"]},
                "copy": {"db": "shop", "table": "orders", "key": ["customer_id"]},
                "fields": [
                    {"source": "email", "copy": "email", "normalize": ["email"]},
                    {"source": "name", "copy": "name", "normalize": ["trim", "casefold"]},
                ],
            }],
        }))  # fmt: skip
        rng = random.Random(7)

        def call() -> tuple[float, bool]:
            key = rng.randint(1, args.customers)
            owner = key if rng.random() < 0.9 else rng.randint(1, args.customers)
            values = {"email": f" USER{owner}@Example.com", "name": f"name {owner} "}
            started = time.perf_counter()
            verdict = verifier.verify("orders-customers", key, values)
            return time.perf_counter() - started, verdict.ok

        with auditor.Verifier(config) as verifier:
            for _ in range(200):
                call()
            timed = [call() for _ in range(args.calls)]
    seconds = sorted(t for t, _ in timed)
    ok = sum(good for _, good in timed)
    p50, p99 = statistics.median(seconds), seconds[int(len(seconds) * 0.99) - 1]
    print(f"verify: {args.calls:,} calls against {args.customers:,} customers on PostgreSQL, "
          f"one thread, warm Verifier; {ok:,} ok")  # fmt: skip
    print(f"  p50 {p50 * 1000:.2f} ms  p99 {p99 * 1000:.2f} ms  max {seconds[-1] * 1000:.2f} ms"
          f"  mean {statistics.fmean(seconds) * 1000:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
