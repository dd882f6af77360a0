"""Incremental nightly runs (prints figures): a full run against the same night's incremental.

    python bench/incremental.py --reviews 5000000 --products 200000

Builds a new PostgreSQL database (W1's reference rule: reviews -> products; both have a
`version` column, indexed as `auditor check` suggests), runs `auditor run --incremental` once
(full: stores the state), then changes 1% of the reviews (a new product id, version bumped; a tenth of them an
orphan) and 0.1% of the products (half deleted, half soft-deleted), and times, each in a child
process with its peak RSS:
  full         `auditor run` (no state)
  incremental  `auditor run --incremental`
checking both find the same counts, and prints the rows each read, the time spent inside the
run (the report's duration: wall time less the interpreter's start and imports) and the
state's bytes per referenced key, per rule. Cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

import ijson
import sqlalchemy as sa
import yaml
from measure import PG_ADMIN, measured


def load(url: str, products: int, reviews: int, customers: int, orders: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if customers:
            conn.exec_driver_sql(
                "CREATE TABLE customers (id bigint PRIMARY KEY, email text, name text, "
                "version bigint)"
            )
            conn.execute(
                sa.text(
                    "INSERT INTO customers SELECT i, 'user' || i || '@example.com', "
                    "'Name ' || i, i FROM generate_series(1, :n) i"
                ),
                {"n": customers},
            )
            conn.exec_driver_sql("CREATE INDEX customers_version ON customers (version)")
            conn.exec_driver_sql(
                "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, email text, "
                "version bigint)"
            )
            conn.execute(
                sa.text(
                    "INSERT INTO orders SELECT i, c, 'user' || c || '@example.com', i FROM "
                    "(SELECT i, 1 + (i::bigint * 7919) % :c AS c FROM generate_series(1, :n) i) s"
                ),
                {"c": customers, "n": orders},
            )
            conn.exec_driver_sql("CREATE INDEX orders_version ON orders (version)")
            conn.exec_driver_sql("CREATE INDEX orders_customer ON orders (customer_id)")
        conn.exec_driver_sql(
            "CREATE TABLE products (id bigint PRIMARY KEY, deleted boolean NOT NULL DEFAULT false, "
            "version bigint)"
        )
        conn.execute(
            sa.text("INSERT INTO products SELECT i, false, i FROM generate_series(1, :n) i"),
            {"n": products},
        )
        conn.exec_driver_sql("CREATE INDEX products_version ON products (version)")
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


def change(url: str, products: int, reviews: int, customers: int, orders: int) -> None:
    """1% of the reviews re-pointed (a tenth at no product), 0.1% of the products gone; 1% of
    the orders' emails rewritten (a tenth wrongly), 0.1% of the customers' emails changed."""
    engine = sa.create_engine(url)
    every = {"r": 100, "p": 1000}
    with engine.begin() as conn:
        if customers:
            conn.execute(
                sa.text(
                    "UPDATE orders SET version = :n + id, email = CASE WHEN id % 1000 = 0 "
                    "THEN 'typo' || email ELSE upper(email) END WHERE id % 100 = 0"
                ),
                {"n": orders},
            )
            conn.execute(
                sa.text(
                    "UPDATE customers SET email = 'new' || email, version = :n + id "
                    "WHERE id % 1000 = 0"
                ),
                {"n": customers},
            )
        conn.execute(
            sa.text(
                "UPDATE reviews SET version = :n + id, product_id = CASE WHEN id % 1000 = 0 "
                "THEN :p + id ELSE 1 + (id * 31) % :p END WHERE id % :r = 0"
            ),
            {"n": reviews, "p": products, **every},
        )
        conn.execute(sa.text("DELETE FROM products WHERE id % :p = 0 AND id % 2000 <> 0"), every)
        conn.execute(
            sa.text("UPDATE products SET deleted = true, version = :n + id WHERE id % 2000 = 0"),
            {"n": products},
        )
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=5_000_000)
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=0, help="add W1's pii rule (2000000)")
    parser.add_argument("--orders", type=int, default=5_000_000)
    args = parser.parse_args()
    sizes = (args.products, args.reviews, args.customers, args.orders)
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
            load(url, *sizes)
            rule = {
                "name": "reviews-products",
                "type": "reference",
                "from": {"db": "b", "table": "reviews", "columns": ["product_id"],
                         "changed": "version"},
                "to": {"db": "a", "table": "products", "columns": ["id"],
                       "soft_delete": "deleted", "changed": "version"},
            }  # fmt: skip
            rules = [rule]
            if args.customers:
                rules.append({
                    "name": "orders-customers", "type": "pii",
                    "source": {"db": "a", "table": "customers", "key": ["id"],
                               "changed": "version"},
                    "copy": {"db": "b", "table": "orders", "key": ["customer_id"],
                             "changed": "version"},
                    "fields": [{"source": "email", "copy": "email", "normalize": ["email"]}],
                })  # fmt: skip
            config = folder / "nightly.yaml"
            config.write_text(yaml.safe_dump({
                "version": 1, "databases": {"a": {"url": url}, "b": {"url": url}},
                "settings": {"change_lag_s": 0}, "rules": rules}))  # fmt: skip

            def run(*flags: str) -> tuple[tuple, dict]:
                report = folder / f"{uuid.uuid4().hex}.json"
                done = measured([sys.executable, "-m", "auditor", "run", str(config), "-q",
                                 "--json", str(report), *flags])  # fmt: skip
                with report.open("rb") as handle:  # not held: see measure.audit
                    found = list(ijson.items(handle, "rules.item"))
                totals = {
                    "counts": [r["counts"] for r in found],
                    "seconds": {r["name"]: r["duration_s"] for r in found},
                    "rows_scanned": {f"{r['name']}.{k}": v for r in found
                                     for k, v in r["rows_scanned"].items()},
                    "incremental": {"mode": "+".join(
                        (r.get("incremental") or {"mode": "full"})["mode"] for r in found)},
                }  # fmt: skip
                return done, totals

            first, _ = run("--incremental")
            change(url, *sizes)
            full, full_rule = run()
            incremental, inc_rule = run("--incremental")
            state = {
                f.parent.name: f.stat().st_size
                for f in (folder / ".auditor-state").rglob("keys-*.parquet")
            }
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
    same = full_rule["counts"] == inc_rule["counts"]
    full_rows = sum(full_rule["rows_scanned"].values())
    inc_rows = sum(inc_rule["rows_scanned"].values())
    pii = f"; orders {args.orders:,} -> customers {args.customers:,}" if args.customers else ""
    print(f"incremental: reviews {args.reviews:,} -> products {args.products:,}{pii}; "
          f"1% of the copies/references and 0.1% of the referenced rows changed")  # fmt: skip
    print(f"  first run (full, stores state) {first[1]:6.2f} s  {first[2]:5.0f} MB")
    print(f"  full run                       {full[1]:6.2f} s  {full[2]:5.0f} MB  "
          f"rows {full_rows:,}")  # fmt: skip
    print(f"  incremental run                {incremental[1]:6.2f} s  {incremental[2]:5.0f} MB  "
          f"rows {inc_rows:,} ({inc_rows / full_rows:.1%})  mode {inc_rule['incremental']['mode']}"
          f"{'' if same else '  FAIL: counts differ'}")  # fmt: skip
    print(f"  time ratio {incremental[1] / full[1]:.1%} (wall)")
    referenced = {"reviews-products": args.products, "orders-customers": args.customers}
    for name, seconds in full_rule["seconds"].items():
        inside = inc_rule["seconds"][name]
        print(f"  {name}: in-run {seconds:.2f} s full, {inside:.2f} s incremental "
              f"({inside / seconds:.1%}); state {state[name]:,} bytes, "
              f"{state[name] / referenced[name]:.2f} bytes per referenced key")  # fmt: skip
    if not same or set(inc_rule["incremental"]["mode"].split("+")) != {"incremental"}:
        print(json.dumps([full_rule["counts"], inc_rule["counts"], inc_rule["incremental"]]))
        sys.exit(1)


if __name__ == "__main__":
    main()
