"""Incremental runs (SPEC §11): after any sequence of changes, an incremental run's findings
equal a full run's, exactly. Hypothesis drives inserts, updates, deletes, soft deletes,
restores, alias changes and PII edits on PostgreSQL-PostgreSQL and PostgreSQL-MariaDB; fixed
tests cover a deleted, corrupted or outdated state and a clock that went back.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor import api
from auditor.config import load_config
from auditor.engine import RunOptions

PRODUCTS = range(1, 9)
ALIASES = range(90, 94)


class World:
    """Two databases: a catalog (products, aliases, customers) and a shop (reviews, orders,
    each row with an increasing `version`)."""

    def __init__(self, catalog, shop, folder: Path) -> None:
        self.catalog, self.shop, self.folder = catalog, shop, folder
        self.version = 0
        self.path = folder / "audit.yaml"

    def reset(self) -> None:
        for database, tables in ((self.catalog, ("products", "aliases", "customers")),
                                 (self.shop, ("reviews", "orders"))):  # fmt: skip
            for table in tables:
                database.execute(f"DROP TABLE IF EXISTS {table}")
        self.catalog.execute(
            "CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER NOT NULL, "
            "version BIGINT)"
        )
        self.catalog.execute("CREATE TABLE aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER)")
        self.catalog.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(40), "
            "name VARCHAR(40), version BIGINT)"
        )
        self.shop.execute(
            "CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, version BIGINT)"
        )
        self.shop.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, "
            "email VARCHAR(40), version BIGINT)"
        )
        for product in PRODUCTS:
            self.catalog.execute(f"INSERT INTO products VALUES ({product}, 0, 0)")
            self.catalog.execute(
                f"INSERT INTO customers VALUES ({product}, 'c{product}@x.org', 'C {product}', 0)"
            )
        for row in range(1, 13):
            self.review(row, row % 10)
            self.order(row, row % 10, f"c{row % 10}@x.org")
        shutil.rmtree(self.folder / ".auditor-state", ignore_errors=True)

    def bump(self) -> int:
        self.version += 1
        return self.version

    def review(self, row: int, product: int | None) -> None:
        self.shop.execute("DELETE FROM reviews WHERE id = :r", r=row)
        self.shop.execute(
            "INSERT INTO reviews VALUES (:r, :p, :v)", r=row, p=product, v=self.bump()
        )

    def order(self, row: int, customer: int, email: str) -> None:
        self.shop.execute("DELETE FROM orders WHERE id = :r", r=row)
        self.shop.execute(
            "INSERT INTO orders VALUES (:r, :c, :e, :v)", r=row, c=customer, e=email, v=self.bump()
        )

    def config(self, lag: int = 0, right_changed: bool = False) -> Path:
        """`right_changed`: products and customers name their `changed` column too, so they
        are read as a delta (incremental.read_delta)."""
        changed = {"changed": "version"} if right_changed else {}
        catalog, shop = self.catalog.url, self.shop.url
        aliases = {"db": "catalog", "table": "aliases", "old": ["old_id"], "new": ["new_id"]}
        data = {
            "version": 1,
            "databases": {"catalog": {"url": catalog}, "shop": {"url": shop}},
            "settings": {"change_lag_s": lag, "max_findings": 0, "batch_size": 5},
            "rules": [
                {"name": "reviews", "type": "reference", "aliases": aliases,
                 "from": {"db": "shop", "table": "reviews", "columns": ["product_id"],
                          "changed": "version"},
                 "to": {"db": "catalog", "table": "products", "columns": ["id"],
                        "soft_delete": "deleted = 1", **changed}},
                {"name": "orders", "type": "pii",
                 "source": {"db": "catalog", "table": "customers", "key": ["id"], **changed},
                 "copy": {"db": "shop", "table": "orders", "key": ["customer_id"],
                          "changed": "version"},
                 "fields": [{"source": "email", "copy": "email", "normalize": ["email"]}]},
            ],
        }  # fmt: skip
        self.path.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.path


def findings(
    path: Path, incremental: bool, full: bool = False, rows: int | None = None
) -> tuple[dict, dict]:
    """(every finding of each rule as comparable JSON, the rules' incremental summaries);
    `rows`: rows a partition."""
    config = load_config(path)
    options = RunOptions.from_settings(config.settings, rows_per_partition=rows)
    if incremental:
        options.incremental = api.incremental_state(config, full)
    result = api.run(config, options=options, show_pii=True)
    assert all(rule.error is None for rule in result.rules), [r.error for r in result.rules]
    found = {
        rule.name: sorted(json.dumps(f.to_dict(), sort_keys=True) for f in rule.findings)
        for rule in result.rules
    }
    return found, {rule.name: rule.incremental for rule in result.rules}


OPERATIONS = st.one_of(
    st.tuples(
        st.just("review"),
        st.integers(1, 16),
        st.one_of(st.none(), st.integers(0, 11), st.sampled_from(list(ALIASES))),
    ),  # fmt: skip
    st.tuples(st.just("delete_review"), st.integers(1, 16), st.none()),
    st.tuples(st.just("delete_product"), st.sampled_from(list(PRODUCTS)), st.none()),
    st.tuples(st.just("soft_delete"), st.sampled_from(list(PRODUCTS)), st.booleans()),
    st.tuples(st.just("insert_product"), st.integers(9, 11), st.none()),
    st.tuples(
        st.just("alias"), st.sampled_from(list(ALIASES)), st.one_of(st.none(), st.integers(1, 11))
    ),  # fmt: skip
    st.tuples(
        st.just("customer_email"),
        st.sampled_from(list(PRODUCTS)),
        st.sampled_from(["c1@x.org", "C2@X.org", "new@x.org", None]),
    ),  # fmt: skip
    st.tuples(st.just("delete_customer"), st.sampled_from(list(PRODUCTS)), st.none()),
    st.tuples(st.just("insert_customer"), st.integers(1, 10), st.none()),
    st.tuples(
        st.just("order"),
        st.integers(1, 16),
        st.tuples(st.integers(0, 9), st.sampled_from(["c1@x.org", "c3@x.org", "", "zz@x.org"])),
    ),  # fmt: skip
)


def apply(world: World, operation: tuple[str, int, Any]) -> None:
    name, target, value = operation
    catalog = world.catalog
    if name == "review":
        world.review(target, value)
    elif name == "delete_review":
        world.shop.execute("DELETE FROM reviews WHERE id = :r", r=target)
    elif name == "delete_product":
        catalog.execute("DELETE FROM products WHERE id = :p", p=target)
    elif name == "soft_delete":
        catalog.execute(
            "UPDATE products SET deleted = :d, version = :v WHERE id = :p",
            d=int(value), p=target, v=world.bump(),
        )  # fmt: skip
    elif name == "insert_product":
        catalog.execute("DELETE FROM products WHERE id = :p", p=target)
        catalog.execute("INSERT INTO products VALUES (:p, 0, :v)", p=target, v=world.bump())
    elif name == "alias":
        catalog.execute("DELETE FROM aliases WHERE old_id = :o", o=target)
        if value is not None:
            catalog.execute("INSERT INTO aliases VALUES (:o, :n)", o=target, n=value)
    elif name == "customer_email":
        catalog.execute(
            "UPDATE customers SET email = :e, version = :v WHERE id = :c",
            e=value, c=target, v=world.bump(),
        )  # fmt: skip
    elif name == "delete_customer":
        catalog.execute("DELETE FROM customers WHERE id = :c", c=target)
    elif name == "insert_customer":
        catalog.execute("DELETE FROM customers WHERE id = :c", c=target)
        catalog.execute(
            "INSERT INTO customers VALUES (:c, :e, 'New', :v)",
            c=target, e=f"c{target}@x.org", v=world.bump(),
        )  # fmt: skip
    elif name == "order":
        world.order(target, *value)


@pytest.fixture(params=["postgresql-postgresql", "postgresql-mariadb"])
def world(request, database_factory, tmp_path) -> World:
    first, second = request.param.split("-")
    return World(database_factory(first), database_factory(second), tmp_path)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.lists(OPERATIONS, min_size=1, max_size=4), min_size=1, max_size=4),
    right_changed=st.booleans(),
)
def test_incremental_findings_equal_a_full_runs(world, strategy, steps, right_changed):
    """Every way the referenced side is read: held in memory, into partitions on disk (a side
    too big to hold; a few rows a partition, so the state is diffed partition by partition),
    and, where it has a `changed` column of its own, as a delta (its changed rows and the
    server's counts per key range)."""
    rows = 3 if strategy == "partitioned" else None
    world.reset()
    path = world.config(right_changed=right_changed)
    first, summary = findings(path, incremental=True, rows=rows)
    assert {s["mode"] for s in summary.values()} == {"full"}
    for step in steps:
        for operation in step:
            apply(world, operation)
        incremental, summary = findings(path, incremental=True, rows=rows)
        assert {s["mode"] for s in summary.values()} == {"incremental"}
        assert incremental == findings(path, incremental=False, rows=rows)[0], step


def test_a_lost_corrupted_or_outdated_state_means_a_full_run(database_factory, tmp_path):
    world = World(database_factory("postgresql"), database_factory("postgresql"), tmp_path)
    world.reset()
    path = world.config()
    findings(path, incremental=True)
    state = tmp_path / ".auditor-state" / "audit"
    world.review(3, 99)  # a new orphan, read by the incremental run
    found, summary = findings(path, incremental=True)
    assert summary["reviews"]["mode"] == "incremental" and found == findings(path, False)[0]

    (state / "reviews" / "state.json").write_text("{not json")
    found, summary = findings(path, incremental=True)
    assert summary["reviews"] == {
        "mode": "full",
        "since": None,
        "watermark": 25,
        "reason": "the state could not be read (JSONDecodeError)",
    }
    assert found == findings(path, False)[0]
    for parquet in (state / "orders").glob("*.parquet"):
        parquet.write_bytes(b"garbage")
    assert findings(path, incremental=True)[1]["orders"]["mode"] == "full"

    shutil.rmtree(state / "reviews")
    assert findings(path, incremental=True)[1]["reviews"]["reason"] == "no state yet"

    data = yaml.safe_load(path.read_text())
    data["rules"][0]["allow_null"] = False  # a changed rule: its state is not used
    path.write_text(yaml.safe_dump(data))
    found, summary = findings(path, incremental=True)
    assert summary["reviews"]["reason"] == (
        "the rule or its stores changed since the state was stored"
    )
    assert found == findings(path, False)[0]
    assert findings(path, incremental=True, full=True)[1]["reviews"]["reason"] == "--full"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_clock_that_went_back_within_the_lag_loses_nothing(backend, database_factory,
                                                             tmp_path):  # fmt: skip
    """`changed` a timestamp: a row stamped earlier than the last run's newest (a clock set
    back, a transaction committed late) but within change_lag_s is still read."""
    catalog, shop = database_factory(backend), database_factory(backend)
    catalog.execute("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    catalog.execute("INSERT INTO products VALUES (1), (2)")
    shop.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, "
                 "updated_at TIMESTAMP NULL)")  # fmt: skip
    noon = dt.datetime(2026, 12, 3, 12, 0, 0)
    shop.execute("INSERT INTO reviews VALUES (1, 1, :t), (2, 2, :t)", t=noon)
    data = {"version": 1, "databases": {"c": {"url": catalog.url}, "s": {"url": shop.url}},
            "settings": {"change_lag_s": 300},
            "rules": [{"name": "r", "type": "reference",
                       "from": {"db": "s", "table": "reviews", "columns": ["product_id"],
                                "changed": "updated_at"},
                       "to": {"db": "c", "table": "products", "columns": ["id"]}}]}  # fmt: skip
    path = tmp_path / "clock.yaml"
    path.write_text(yaml.safe_dump(data))
    assert findings(path, incremental=True)[0] == {"r": []}
    late = noon - dt.timedelta(seconds=200)  # within the lag: read again
    shop.execute("UPDATE reviews SET product_id = 7, updated_at = :t WHERE id = 1", t=late)
    found, summary = findings(path, incremental=True)
    assert summary["r"]["mode"] == "incremental" and len(found["r"]) == 1
    assert found == findings(path, incremental=False)[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_delta_read_finds_deletes_by_the_servers_counts(backend, database_factory, tmp_path):
    """A referenced side with `changed` and an integer primary key is read as a delta: its
    changed rows, the server's count/min/max per key range, and only the ranges that differ.
    Deletes at the edges, inside and below/above the known keys, a soft delete, a new row, and
    a row inserted without moving `changed` (seen by its range's count) are all found, and only
    a small part of the side is read."""
    catalog, shop = database_factory(backend), database_factory(backend)
    catalog.execute("CREATE TABLE products (id BIGINT PRIMARY KEY, deleted INTEGER NOT NULL, "
                    "version BIGINT)")  # fmt: skip
    shop.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id BIGINT, "
                  "version BIGINT)")  # fmt: skip
    products = list(range(1, 6001))
    for start in range(0, len(products), 1000):
        chunk = products[start : start + 1000]
        catalog.execute("INSERT INTO products VALUES " + ", ".join(f"({p}, 0, 1)" for p in chunk))
        shop.execute("INSERT INTO reviews VALUES " + ", ".join(f"({p}, {p}, {p})" for p in chunk))
    shop.execute("INSERT INTO reviews VALUES (7001, 0, 7001), (7002, 9000, 7002), (7003, 20, 7003)")
    data = {"version": 1, "databases": {"c": {"url": catalog.url}, "s": {"url": shop.url}},
            "settings": {"change_lag_s": 0, "max_findings": 0},
            "rules": [{"name": "r", "type": "reference",
                       "from": {"db": "s", "table": "reviews", "columns": ["product_id"],
                                "changed": "version"},
                       "to": {"db": "c", "table": "products", "columns": ["id"],
                              "soft_delete": "deleted = 1", "changed": "version"}}]}  # fmt: skip
    path = tmp_path / "delta.yaml"
    path.write_text(yaml.safe_dump(data))
    first, _ = findings(path, incremental=True)
    assert len(first["r"]) == 2  # reviews of products 0 and 9000
    catalog.execute("DELETE FROM products WHERE id IN (1, 20, 2500, 2501, 6000)")
    catalog.execute("UPDATE products SET deleted = 1, version = 2 WHERE id = 4000")
    catalog.execute("INSERT INTO products VALUES (9000, 0, 2)")  # past the known keys
    catalog.execute("INSERT INTO products VALUES (0, 0, 1)")  # `changed` not moved
    found, summary = findings(path, incremental=True)
    assert summary["r"]["mode"] == "incremental"
    assert found == findings(path, incremental=False)[0]
    assert len(found["r"]) == 7  # 6 orphans (two reviews of 20), 1 soft-deleted
    config = load_config(path)
    options = RunOptions.from_settings(config.settings)
    options.incremental = api.incremental_state(config)
    catalog.execute("DELETE FROM products WHERE id = 3333")
    result = api.run(config, options=options)
    assert result.rules[0].counts == {"orphan": 7, "soft_deleted": 1}
    scanned = result.rules[0].rows_scanned
    assert scanned["to"] < 200 and scanned["from"] < 20, scanned


def test_sides_without_changed_or_not_sql_are_read_in_full(database_factory, tmp_path):
    world = World(database_factory("sqlite"), database_factory("sqlite"), tmp_path)
    world.reset()
    path = world.config()
    data = yaml.safe_load(path.read_text())
    del data["rules"][0]["from"]["changed"]
    path.write_text(yaml.safe_dump(data))
    findings(path, incremental=True)
    found, summary = findings(path, incremental=True)
    assert summary["reviews"] == {"mode": "full", "since": None, "watermark": None,
                                  "reason": "from has no `changed` column: read in full"}  # fmt: skip
    assert summary["orders"]["mode"] == "incremental"
    assert found == findings(path, incremental=False)[0]


def test_check_suggests_an_index_on_changed(database_factory, tmp_path):
    world = World(database_factory("sqlite"), database_factory("sqlite"), tmp_path)
    world.reset()
    result = api.check(load_config(world.config()))
    warnings = [w for rule in result.rules for w in rule.warnings if "`changed`" in w]
    assert warnings == [
        "shop.reviews: an incremental run reads it by `changed` and by the referencing columns, "
        "consider: CREATE INDEX ix_reviews_version ON reviews (version); "
        "CREATE INDEX ix_reviews_product_id ON reviews (product_id)",
        "shop.orders: an incremental run reads it by `changed` and by the referencing columns, "
        "consider: CREATE INDEX ix_orders_version ON orders (version); "
        "CREATE INDEX ix_orders_customer_id ON orders (customer_id)",
    ]
    world.shop.execute("CREATE INDEX ix_reviews_version ON reviews (version)")
    world.shop.execute("CREATE INDEX ix_reviews_product_id ON reviews (product_id)")
    result = api.check(load_config(world.config()))
    assert len([w for rule in result.rules for w in rule.warnings if "`changed`" in w]) == 1
    # A referenced side with `changed` is read by it too (incremental.read_delta).
    result = api.check(load_config(world.config(right_changed=True)))
    warnings = [w for rule in result.rules for w in rule.warnings if "`changed`" in w]
    assert warnings[0] == (
        "catalog.products: an incremental run reads it by `changed`, "
        "consider: CREATE INDEX ix_products_version ON products (version)"
    )
    assert "catalog.customers: an incremental run reads it by `changed`, " in warnings[2]


def test_a_crash_while_storing_leaves_the_last_state(database_factory, tmp_path, monkeypatch):
    """The new files are written before `state.json` names them: a run that dies in between
    leaves the last state whole, and the next run reads from it, correctly."""
    import pyarrow.parquet as pq  # imported by auditor.incremental when a state is stored

    world = World(database_factory("sqlite"), database_factory("sqlite"), tmp_path)
    world.reset()
    path = world.config()
    findings(path, incremental=True)
    world.review(2, 77)
    real = pq.write_table
    calls = []

    def dies_after_the_key_groups(*args, **kwargs):  # the findings' file: written second
        calls.append(args)
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", dies_after_the_key_groups)
    config = load_config(path)
    options = RunOptions.from_settings(config.settings, incremental=api.incremental_state(config))
    failed = api.run(config, options=options)
    assert failed.exit_code == 3 and failed.rules[0].error == "cannot read or write: disk full"
    assert (
        calls and len(list((tmp_path / ".auditor-state" / "audit" / "reviews").glob("keys-*"))) == 2
    )
    monkeypatch.setattr(pq, "write_table", real)
    world.review(5, 78)
    found, summary = findings(path, incremental=True)
    assert summary["reviews"]["mode"] == "incremental"
    assert found == findings(path, incremental=False)[0]
    assert len(found["reviews"]) >= 2


def test_field_hashes_tell_rows_apart():
    """FNV-1a as published (test vectors), and rows that a plain join would confuse (a value
    holding the separator, NULL against empty) hash apart."""
    import pyarrow as pa

    from auditor.hashing import fnv1a
    from auditor.incremental import _row_hashes

    assert [int(h) for h in fnv1a(pa.array(["", "a", "foobar"]))] == [
        0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8,
    ]  # fmt: skip
    rows = pa.table({"v0": ["a|b", "a", None, "", "x"], "v1": ["c", "b|c", "x", "x", None]})
    assert len(set(_row_hashes(rows).to_pylist())) == 5
