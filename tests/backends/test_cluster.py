"""Rules on a Dask LocalCluster of two worker processes (SPEC §12): the same findings as one
process, on every backend pair, also when a worker is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
import time

import pytest

import auditor
from auditor import api
from auditor.cluster import Cluster, sliceable, slices
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
    parts = slices(plans["reviews-products"], 4)
    assert parts[0].low is None and parts[0].nulls and parts[-1].high is None
    assert not any(part.nulls for part in parts[1:])
    for database in databases.values():
        database.engine.dispose()


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
    client = cluster.client()
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            busy = [address for address, tasks in client.processing().items() if tasks]
            if busy and busy[0] in pids:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    assert found(config, cluster) == alone
    killer.join()
    assert killed, "no worker was busy long enough to be killed"
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
