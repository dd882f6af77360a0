"""Rules on a Dask LocalCluster of two worker processes (SPEC §12): the same findings as one
process, on every backend pair, also when a worker is killed mid-run. Integer keys are
sliced by key ranges; other keys are shuffled (row slices routed into buckets by key)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import auditor
from auditor import api
from auditor.cluster import (
    Cluster,
    RowSlice,
    bucket_count,
    compare_bucket,
    read_slice,
    row_slices,
    shuffled,
    sliceable,
    slices,
)
from auditor.engine import RunOptions
from tests.scenarios import build_pii, build_reference


@pytest.fixture(scope="module")
def cluster():
    started = Cluster(workers=2)
    started.client()
    yield started
    started.close()


def found(config, cluster=None) -> dict:
    options = RunOptions.from_settings(config.settings, max_findings=0, cluster=cluster)
    result = auditor.run(config, options=options)
    rules = {}
    for rule in result.rules:
        assert rule.status in ("pass", "warn", "fail"), (rule.name, rule.error)
        listed = sorted(json.dumps(f.to_dict(), sort_keys=True, default=str) for f in rule.findings)
        rules[rule.name] = (rule.counts, listed, rule.status)
    return rules


def test_the_scenarios_find_the_same_on_a_cluster(pair, write_config, cluster):
    first, second = pair
    reference = auditor.load_config(write_config(build_reference(first, second), "ref.yaml"))
    assert found(reference, cluster) == found(reference)


def test_the_pii_scenario_finds_the_same_on_a_cluster(pair, write_config, cluster):
    first, second = pair
    pii = auditor.load_config(write_config(build_pii(first, second), "pii.yaml"))
    assert found(pii, cluster) == found(pii)


def test_rules_are_sliced_by_integer_key_only(database_factory, write_config):
    catalog, reviews = database_factory("sqlite"), database_factory("sqlite")
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))
    databases = api.open_databases(config)
    plans = {r.name: api.plan_rule(config, r, databases) for r in config.rules}
    # legacy-refs holds ids as text: a text range is no integer range; one task runs it.
    sliced = {name for name, plan in plans.items() if sliceable(plan)}
    assert sliced == {"reviews-products", "reviews-not-null"}
    spread = {name for name, plan in plans.items() if shuffled(plan)}
    assert spread == {"items-by-sku", "legacy-refs", "shares-by-uid", "cart-variants"}
    parts = slices(plans["reviews-products"], 4)
    assert parts[0].low is None and parts[0].nulls and parts[-1].high is None
    assert not any(part.nulls for part in parts[1:])
    for database in databases.values():
        database.engine.dispose()


@contextlib.contextmanager
def _killing_a_worker(client, task: str) -> Iterator[None]:
    """SIGKILL the first worker seen running a task named `task` while the block runs."""
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for address, keys in client.processing().items():
                if address in pids and any(str(key).startswith(task) for key in keys):
                    os.kill(pids[address], signal.SIGKILL)
                    killed.append(pids[address])
                    break
            time.sleep(0.01)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    yield
    killer.join()
    assert killed, f"no worker ran {task} long enough to be killed"


def test_a_worker_killed_mid_run_changes_nothing(database_factory, write_config, cluster):
    catalog, reviews = database_factory("sqlite"), database_factory("sqlite")
    with sqlite3.connect(catalog.url.removeprefix("sqlite:///")) as db:
        db.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER)")
        db.executemany("INSERT INTO products VALUES (?, ?)",
                       ((i, int(i % 97 == 0)) for i in range(1, 50_001) if i % 1000))  # fmt: skip
    with sqlite3.connect(reviews.url.removeprefix("sqlite:///")) as db:
        db.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER)")
        db.executemany("INSERT INTO reviews VALUES (?, ?)",
                       ((i, i % 50_000 + 1) for i in range(1, 600_001)))  # fmt: skip
        db.execute("CREATE INDEX reviews_product ON reviews (product_id)")
    config = auditor.load_config(write_config({
        "version": 1,
        "databases": {"catalog": {"url": catalog.url}, "reviews": {"url": reviews.url}},
        "settings": {"batch_size": 2000},
        "rules": [{"name": "reviews-products", "type": "reference",
                   "from": {"db": "reviews", "table": "reviews", "columns": ["product_id"]},
                   "to": {"db": "catalog", "table": "products", "columns": ["id"],
                          "soft_delete": "deleted = 1"}}],
    }))  # fmt: skip
    alone = found(config)
    with _killing_a_worker(cluster.client(), "run_slice"):
        assert found(config, cluster) == alone
    assert alone["reviews-products"][0] == {"orphan": 50 * 12, "soft_deleted": 515 * 12}


def test_progress_counts_every_row_across_workers(database_factory, write_config, cluster):
    catalog, reviews = database_factory("sqlite"), database_factory("sqlite")
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))
    read: dict[tuple[str, str], int] = {}

    def progress(rule: str, side: str, rows: int, estimate: int | None) -> None:
        read[(rule, side)] = read.get((rule, side), 0) + rows

    options = RunOptions.from_settings(config.settings, cluster=cluster)
    result = auditor.run(config, rules=["reviews-products"], options=options, progress=progress)
    deadline = time.monotonic() + 5  # events travel through the scheduler
    while read.get(("reviews-products", "from"), 0) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    (rule,) = result.rules
    assert read[("reviews-products", "from")] == rule.rows_scanned["from"] == 10
    assert read[("reviews-products", "to")] == rule.rows_scanned["to"] == 7


def test_nothing_of_dask_is_imported_without_the_flags(tmp_path):
    import subprocess

    from auditor import demo

    path = demo.build(tmp_path / "demo")
    code = (
        "import sys, auditor; from auditor.api import run; "
        f"run(auditor.load_config({str(path)!r})); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_command_runs_on_workers(tmp_path):
    from auditor import demo
    from tests.cli.test_cli import auditor as cli

    path = demo.build(tmp_path / "demo")
    sql_rules = ["--rule", "reviews-have-live-products", "--rule", "order-customer-pii"]
    alone = cli("run", str(path), "-q", "--json", str(tmp_path / "a.json"), *sql_rules)
    spread = cli("run", str(path), "-q", "--json", str(tmp_path / "b.json"), "--workers", "2",
                 *sql_rules)  # fmt: skip
    assert alone.returncode == spread.returncode == 1, spread.stderr
    counts = [
        [rule["counts"] for rule in json.loads((tmp_path / name).read_text())["rules"]]
        for name in ("a.json", "b.json")
    ]
    assert counts[0] == counts[1]


def test_a_suggested_key_in_another_slice_is_found(database_factory, write_config, cluster):
    crm, shop = database_factory("postgresql"), database_factory("sqlite")
    crm.execute("CREATE TABLE customers (id bigint PRIMARY KEY, email text)")
    crm.execute(
        "INSERT INTO customers SELECT i, 'user' || i || '@example.com' "
        "FROM generate_series(1, 1000) i"
    )
    with sqlite3.connect(shop.url.removeprefix("sqlite:///")) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, email TEXT)")
        rows = [(i, i, f"USER{i}@example.com") for i in range(1, 1001)]
        rows[1] = (2, 2, "user999@example.com")  # customer 2's order holds customer 999's email
        rows[998] = (999, 999, "user2@example.com")
        rows[4] = (5, 5, "nobody@example.com")  # matches no one
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)", rows)
    config = auditor.load_config(write_config({
        "version": 1,
        "databases": {"crm": {"url": crm.url}, "shop": {"url": shop.url}},
        "rules": [{"name": "orders-customers", "type": "pii",
                   "source": {"db": "crm", "table": "customers", "key": ["id"]},
                   "copy": {"db": "shop", "table": "orders", "key": ["customer_id"]},
                   "fields": [{"source": "email", "copy": "email", "normalize": ["email"]}]}],
    }))  # fmt: skip
    databases = api.open_databases(config)
    plan = api.plan_rule(config, config.rules[0], databases)
    parts = slices(plan, 8)
    for database in databases.values():
        database.engine.dispose()
    assert sliceable(plan)
    assert next(i for i, p in enumerate(parts) if p.high is None or p.high > 2) != next(
        i for i, p in enumerate(parts) if p.high is None or p.high > 999
    )  # customers 2 and 999 are read by different slices
    spread = found(config, cluster)
    assert spread == found(config)
    suggested = {
        json.loads(f)["key"]["id"]: json.loads(f).get("suggested_key")
        for f in spread["orders-customers"][1]
    }
    assert suggested == {2: {"id": 999}, 999: {"id": 2}, 5: None}


def _sku_tables(catalog, shop, orders: int = 5_000) -> dict:
    """A text key: products by sku (one sku held twice, far apart), orders pointing at them."""
    products = [(i, f"SKU-{i:06d}") for i in range(1, 3_001) if i % 100]  # every 100th gone
    products.append((5_000, "SKU-000007"))  # a duplicated sku, in another slice of rows
    items = [(i, f"SKU-{i % 3_000 + 1:06d}") for i in range(1, orders + 1)]
    for database, table, rows, key in ((catalog, "products", products, "id integer"),
                                       (shop, "orders", items, "id integer")):  # fmt: skip
        text = "varchar(20)"
        if database.backend == "sqlite":
            with sqlite3.connect(database.url.removeprefix("sqlite:///")) as db:
                db.execute(f"CREATE TABLE {table} ({key} PRIMARY KEY, sku {text})")
                db.executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)
        else:
            database.execute(f"CREATE TABLE {table} ({key} PRIMARY KEY, sku {text})")
            with database.engine.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO {table} VALUES (:id, :sku)"),
                             [{"id": i, "sku": sku} for i, sku in rows])  # fmt: skip
    return {
        "version": 1,
        "databases": {"catalog": {"url": catalog.url}, "shop": {"url": shop.url}},
        "settings": {"batch_size": 500},
        "rules": [{"name": "orders-products", "type": "reference",
                   "from": {"db": "shop", "table": "orders", "columns": ["sku"]},
                   "to": {"db": "catalog", "table": "products", "columns": ["sku"]}}],
    }  # fmt: skip


def test_row_slices_read_every_row_once(database_factory, write_config):
    """PostgreSQL without an integer primary key: heap pages (ctid); with one: its ranges."""
    catalog, shop = database_factory("postgresql"), database_factory("sqlite")
    catalog.execute("CREATE TABLE codes (code text PRIMARY KEY, note text)")
    catalog.execute("INSERT INTO codes SELECT 'C' || i, repeat('x', 200) "
                    "FROM generate_series(1, 3000) i")  # fmt: skip
    catalog.execute("CREATE VIEW live_codes AS SELECT * FROM codes")
    with sqlite3.connect(shop.url.removeprefix("sqlite:///")) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, code TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)", ((i * 7, f"C{i}") for i in range(900)))
    rule = {"type": "reference", "from": {"db": "shop", "table": "items", "columns": ["code"]}}
    config = auditor.load_config(write_config({
        "version": 1,
        "databases": {"catalog": {"url": catalog.url}, "shop": {"url": shop.url}},
        "rules": [{**rule, "name": "by-page", "to": {"db": "catalog", "table": "codes",
                                                      "columns": ["code"]}},
                  {**rule, "name": "by-view", "to": {"db": "catalog", "table": "live_codes",
                                                      "columns": ["code"]}}],
    }))  # fmt: skip
    databases = api.open_databases(config)
    try:
        page, view = (api.plan_rule(config, r, databases) for r in config.rules)
        by_page = row_slices(page.right, 4)
        assert len(by_page) == 4 and all(p.column is None for p in by_page)
        by_id = row_slices(page.left, 3)
        assert [p.column for p in by_id] == ["id"] * 3
        assert row_slices(view.right, 4) == [RowSlice(None, None, None)]
        for side, parts, total in ((page.right, by_page, 3000), (page.left, by_id, 900)):
            counted = []
            for part in parts:
                narrowed = dataclasses.replace(side, scan_slice=part)
                counted.append(sum(b.num_rows for b in narrowed.stream(10_000)))
            assert sum(counted) == total and all(counted), counted
    finally:
        for database in databases.values():
            database.engine.dispose()


def test_buckets_bring_each_key_together(database_factory, write_config):
    """read_slice and compare_bucket in this process: every key's rows of both sides land in
    one bucket, and the buckets' findings add up to one process's, the duplicate once."""
    catalog, shop = database_factory("sqlite"), database_factory("sqlite")
    path = write_config(_sku_tables(catalog, shop))
    config = auditor.load_config(path)
    options = {"batch_size": 500, "max_findings": 0, "recheck": True, "mask": "partial"}
    databases = api.open_databases(config)
    plan = api.plan_rule(config, config.rules[0], databases)
    parts = {"left": row_slices(plan.left, 3), "right": row_slices(plan.right, 2)}
    for database in databases.values():
        database.engine.dispose()
    read = {
        role: [read_slice(part, str(path), "orders-products", role, 5, options) for part in slices]
        for role, slices in parts.items()
    }
    assert sum(r[0]["from"] for r in read["left"]) == 5_000
    assert sum(r[0]["to"] for r in read["right"]) == 2_971
    buckets = {}
    for results in read.values():
        for result in results:
            for bucket, table in enumerate(result[1:]):
                for key in table["c0"].to_pylist():
                    assert buckets.setdefault(key, bucket) == bucket
    counts: dict[str, int] = {}
    for bucket in range(5):
        result = compare_bucket([r[bucket + 1] for r in read["left"]],
                                [r[bucket + 1] for r in read["right"]],
                                str(path), "orders-products", options)  # fmt: skip
        for kind, n in result.counts.items():
            counts[kind] = counts.get(kind, 0) + n
    alone = found(config)["orders-products"][0]
    assert counts == alone == {"orphan": 5_000 // 100, "duplicate_key": 1}


def test_a_worker_killed_mid_shuffle_changes_nothing(database_factory, write_config, cluster):
    catalog, shop = database_factory("postgresql"), database_factory("sqlite")
    config = auditor.load_config(write_config(_sku_tables(catalog, shop, orders=300_000)))
    alone = found(config)
    # Killed while it compares a bucket: the pieces it held (read there) are lost too and are
    # read again from their tasks.
    with _killing_a_worker(cluster.client(), "compare_bucket"):
        assert found(config, cluster) == alone
    assert alone["orders-products"][0] == {"orphan": 3_000, "duplicate_key": 1}


def test_findings_are_listed_in_report_order_with_flat_client_memory(
    database_factory, write_config, cluster, monkeypatch
):
    """The client lists the slices' findings as one process does (report order), through a
    FindingLog that spills past RUN_FINDINGS (3 here) instead of holding every slice's."""
    from auditor import findings

    catalog, reviews = database_factory("sqlite"), database_factory("postgresql")
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))
    options = RunOptions.from_settings(config.settings, max_findings=0)
    alone = auditor.run(config, options=options)
    monkeypatch.setattr(findings, "RUN_FINDINGS", 3)
    spread = auditor.run(config, options=dataclasses.replace(options, cluster=cluster))
    for one, other in zip(alone.rules, spread.rules, strict=True):
        assert [f.to_dict() for f in other.findings] == [f.to_dict() for f in one.findings]
    sliced = next(r for r in spread.rules if r.name == "reviews-products")
    assert isinstance(sliced.findings, findings.SpilledFindings)


def test_an_unreachable_scheduler_is_one_error_naming_it(tmp_path, monkeypatch, capsys):
    import socket

    from auditor import cluster as spread
    from auditor import demo
    from auditor.cli import main
    from auditor.errors import DatabaseError

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(spread, "CONNECT_TIMEOUT_S", 1)
    path = demo.build(tmp_path / "demo")
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path), "-q", "--cluster", address])
    assert exited.value.code == 3
    assert time.monotonic() - started < 15  # once, not once per rule
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"auditor: error: cannot reach the Dask scheduler at {address}: ")
    unreachable = Cluster(address)
    with pytest.raises(DatabaseError):
        unreachable.client()
    started = time.monotonic()
    with pytest.raises(DatabaseError):  # remembered: a library caller's next rule fails at once
        unreachable.client()
    assert time.monotonic() - started < 0.5


def test_incremental_on_a_cluster_is_refused_before_any_worker_starts(tmp_path, capsys):
    from auditor import demo
    from auditor.cli import main

    path = demo.build(tmp_path / "demo")
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path), "-q", "--workers", "2", "--incremental"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "auditor: error: --incremental runs in one process: leave out --cluster/--workers"
    )
    config = auditor.load_config(path)
    options = RunOptions.from_settings(config.settings, cluster=Cluster(workers=1))
    options.incremental = api.incremental_state(config)
    result = auditor.run(config, rules=["reviews-have-live-products"], options=options)
    assert result.exit_code == 2 and "runs in one process" in result.rules[0].error
    assert options.cluster._client is None  # the library refuses it before connecting too


def test_buckets_are_as_many_as_the_bigger_side_needs_and_at_most_max_partitions():
    from types import SimpleNamespace

    from auditor.scan import MAX_PARTITIONS

    def plan(left: int | None, right: int | None):
        side = lambda rows: SimpleNamespace(info=SimpleNamespace(estimated_rows=rows))  # noqa: E731
        return SimpleNamespace(left=side(left), right=side(right))

    assert bucket_count(plan(None, 10), 8) == 8
    assert bucket_count(plan(20_500_000, 3_000_000), 8) == 21
    assert bucket_count(plan(10**12, 10**9), 8) == MAX_PARTITIONS


def test_a_malformed_scheduler_address_is_a_config_error_that_does_not_echo_it(tmp_path, capsys):
    from auditor import demo
    from auditor.cli import main

    path = demo.build(tmp_path / "demo")
    for address in ("tcp://user:secret@127.0.0.1:9", "nonsense"):
        with pytest.raises(SystemExit) as exited:
            main(["run", str(path), "-q", "--cluster", address])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert (
            err
            == "auditor: error: --cluster: not a Dask scheduler address (e.g. tcp://HOST:8786)\n"
        )
