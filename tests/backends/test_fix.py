"""`auditor fix` (SPEC §10) on every SQL backend pair: audit -> fix -> apply -> audit again.

Each scenario also applies the same plan twice (the second changes nothing) and runs the undo
file, after which every row is what it was, compared row by row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from auditor import api, fix
from auditor.config import load_config
from auditor.engine import RunOptions
from auditor.errors import ConfigError
from auditor.report import json as json_report
from tests import conftest
from tests.conftest import IN_CI
from tests.scenarios import build_pii, build_reference

REFERENCE_FIX = {
    "reviews-products": {"stale_alias": "rewrite", "orphan": "delete", "soft_deleted": "none"},
    "legacy-refs": {"orphan": "delete"},
    "cart-variants": {"orphan": "nullify"},
}
PII_FIX = {"mismatch": "copy_source", "missing_value": "copy_source", "wrong_entity": "rekey"}


def audit(config_path: Path, report: Path) -> dict[str, dict[str, int]]:
    """Run the audit into a JSON report; the counts per rule."""
    config = load_config(config_path)
    options = RunOptions.from_settings(config.settings)
    result = api.run(config, options=options)
    with report.open("w", encoding="utf-8") as out:
        json_report.write(result, out)
    return {rule.name: dict(rule.counts) for rule in result.rules}


def rows(database: conftest.TestDatabase, table: str) -> list[tuple]:
    with database.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT * FROM {table}")).fetchall()
    return sorted((tuple(row) for row in found), key=repr)


def run_file(database: conftest.TestDatabase, path: Path) -> None:
    """Run a plan or undo file the way plan.md tells a person to: with the backend's client."""
    url = sa.make_url(database.url)
    if database.backend == "sqlite":
        command = ["sqlite3", str(url.database)]
    elif database.backend == "postgresql":
        command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(url.host)]
        command += ["-U", str(url.username), "-d", str(url.database)]
    else:
        command = ["mariadb", "-h", str(url.host), "-u", str(url.username), str(url.database)]
    try:
        with path.open("rb") as stdin:
            done = subprocess.run(command, stdin=stdin, capture_output=True, timeout=120)
    except FileNotFoundError:
        if IN_CI:
            raise
        pytest.skip(f"{command[0]} is not installed")
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()


def reference_config(pair, write_config) -> tuple[Path, conftest.TestDatabase]:
    catalog, reviews = pair
    data = build_reference(catalog, reviews)
    data["rules"] = [r for r in data["rules"] if r["name"] in REFERENCE_FIX]
    for rule in data["rules"]:
        rule["fix"] = REFERENCE_FIX[rule["name"]]
    data["databases"]["reviews"]["fix_url"] = reviews.url
    return write_config(data), reviews


def test_reference_fixes_round_trip(pair, write_config, tmp_path):
    path, reviews = reference_config(pair, write_config)
    before = {t: rows(reviews, t) for t in ("reviews", "legacy_refs", "cart")}
    counts = audit(path, tmp_path / "before.json")
    assert counts["reviews-products"] == {"soft_deleted": 2, "orphan": 3, "stale_alias": 2}

    out = tmp_path / "fixes"
    result = fix.fix(load_config(path), str(tmp_path / "before.json"), out=out, apply=True)
    by_rule = {r.name: r for r in result.rules}
    assert by_rule["reviews-products"].applied == 5
    assert by_rule["reviews-products"].left_alone == {("soft_deleted", "fix.soft_deleted: none"): 2}
    assert by_rule["legacy-refs"].applied == 2 and by_rule["cart-variants"].applied == 2
    assert result.exit_code == 0
    assert {p.name for p in out.iterdir()} == {"reviews.sql", "plan.md", "undo"}
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in out.rglob("*") if p.is_file())

    after = audit(path, tmp_path / "after.json")
    assert after == {
        "reviews-products": {"soft_deleted": 2},  # left at none: unchanged
        "legacy-refs": {},
        "cart-variants": {},
    }
    product_of = {row[0]: row[1] for row in rows(reviews, "reviews")}
    assert (product_of[4], product_of[5]) == (1, 5)
    assert [r[0] for r in rows(reviews, "cart") if r[1] is None] == [2, 4]
    fixed = {t: rows(reviews, t) for t in before}

    again = fix.fix(
        load_config(path), str(tmp_path / "before.json"), out=tmp_path / "again", apply=True
    )
    assert sum(r.applied for r in again.rules) == 0
    assert again.exit_code == 1  # every finding skipped: it no longer holds
    assert {t: rows(reviews, t) for t in before} == fixed
    run_file(reviews, out / "reviews.sql")  # the first plan by hand, again: still a no-op
    assert {t: rows(reviews, t) for t in before} == fixed

    run_file(reviews, out / "undo" / "reviews.sql")
    assert {t: rows(reviews, t) for t in before} == before


def pii_config(pair, write_config, fix_block: dict[str, str]) -> tuple[Path, Any]:
    crm, orders = pair
    data = build_pii(crm, orders)
    data["rules"] = [r for r in data["rules"] if r["name"] != "order-names-accents"]
    data["rules"][0]["fix"] = fix_block
    data["databases"]["orders"]["fix_url"] = orders.url
    return write_config(data), orders


def test_pii_fixes_round_trip(pair, write_config, tmp_path):
    path, orders = pii_config(pair, write_config, PII_FIX)
    before = rows(orders, "orders")
    audit(path, tmp_path / "before.json")
    out = tmp_path / "fixes"
    result = fix.fix(load_config(path), str(tmp_path / "before.json"), out=out, apply=True)
    outcome = result.rules[0]
    assert dict(outcome.planned) == {
        ("mismatch", "copy_source"): 3,  # 2 email, 3 name, 4 phone
        ("missing_value", "copy_source"): 2,  # 4 name, 10 email
        ("mismatch", "rekey"): 2,  # orders 7 and 8 hold each other's customer
    }
    assert outcome.applied == 7 and result.exit_code == 0
    assert outcome.left_alone == {("missing_source", "no fix exists for this kind"): 1}

    after = audit(path, tmp_path / "after.json")
    assert after["order-customer-pii"] == {"missing_source": 1}
    assert after["invoice-accounts"] == {"duplicate_key": 1}  # no fix block: untouched
    now = {row[0]: row for row in rows(orders, "orders")}
    assert (now[7][1], now[8][1]) == (5, 1)  # re-pointed at the rows whose PII they hold
    assert now[7][2] == "dee@example.com"  # a rekeyed copy's values are not overwritten
    assert now[2][2] == "bob@example.com" and now[4][3] == "Cy Young"
    assert now[1] == dict((r[0], r) for r in before)[1]  # near misses only: untouched

    fixed = rows(orders, "orders")
    again = fix.fix(
        load_config(path), str(tmp_path / "before.json"), out=tmp_path / "b", apply=True
    )
    assert again.rules[0].applied == 0 and rows(orders, "orders") == fixed
    run_file(orders, out / "orders.sql")
    assert rows(orders, "orders") == fixed
    run_file(orders, out / "undo" / "orders.sql")
    assert rows(orders, "orders") == before


@pytest.mark.parametrize("pair", ["sqlite-sqlite", "postgresql-mariadb"], indirect=True)
def test_wrong_entity_is_left_alone_by_copy_source(pair, write_config, tmp_path):
    path, orders = pii_config(pair, write_config, {"mismatch": "copy_source"})
    before = {row[0]: row for row in rows(orders, "orders")}
    audit(path, tmp_path / "before.json")
    result = fix.fix(load_config(path), str(tmp_path / "before.json"), out=tmp_path / "f")
    assert (
        result.rules[0].left_alone[
            (
                "mismatch",
                "wrong entity (suggested_key): copy_source never touches it; wrong_entity: none",
            )
        ]
        == 6
    )
    plan = (tmp_path / "f" / "orders.sql").read_text()
    assert "dee@example.com" not in plan and "ann@example.com" not in plan
    assert "wrong entity" in (tmp_path / "f" / "plan.md").read_text()
    fix.fix(load_config(path), str(tmp_path / "before.json"), out=tmp_path / "g", apply=True)
    now = {row[0]: row for row in rows(orders, "orders")}
    assert (now[7], now[8]) == (before[7], before[8])
    assert now[2][2] == "bob@example.com"


@pytest.mark.parametrize(
    "pair", ["sqlite-sqlite", "postgresql-postgresql", "mariadb-mariadb"], indirect=True
)
def test_a_row_changed_after_the_audit_is_skipped(pair, write_config, tmp_path, monkeypatch):
    """Concurrent writers: after the audit, while the person is asked (applying re-checks
    every finding again), and between the re-check and the batch (the statement's guard):
    no changed row is overwritten."""
    path, reviews = reference_config(pair, write_config)
    audit(path, tmp_path / "before.json")
    reviews.execute("UPDATE reviews SET product_id = 1 WHERE id = 6")  # fixed by someone else

    def while_asked(planned) -> bool:
        reviews.execute("UPDATE reviews SET product_id = 51 WHERE id = 3")  # another orphan
        return True

    real_apply = fix._Applier.apply

    def just_before_the_batch(self, outcome, plan, changes):
        if plan.rule.name == "reviews-products":
            reviews.execute("UPDATE reviews SET product_id = 100 WHERE id = 5")  # another alias
            reviews.execute("UPDATE reviews SET product_id = 50 WHERE id = 7")  # another orphan
        return real_apply(self, outcome, plan, changes)

    monkeypatch.setattr(fix._Applier, "apply", just_before_the_batch)
    result = fix.fix(load_config(path), str(tmp_path / "before.json"), apply=True,
                     confirm=while_asked, out=tmp_path / "f")  # fmt: skip
    outcome = {r.name: r for r in result.rules}["reviews-products"]
    assert outcome.skipped == {"no longer holds": 2, "changed since it was planned": 2}
    assert outcome.applied == 1 and result.exit_code == 1  # 4 -> 1 only
    now = {row[0]: row[1] for row in rows(reviews, "reviews")}
    assert (now[3], now[4], now[5], now[6], now[7]) == (51, 1, 100, 1, 50)
    plan = (tmp_path / "f" / "reviews.sql").read_text()  # written before the person was asked
    assert plan.count("\n-- rule reviews-products") == 1


HOSTILE = [
    "O'Brien; DROP TABLE orders; --",
    "back\\slash \\' \\\\ \\n \\0 end\\",
    "emoji 🦄 and ÿ, \u200b zero width",
    "percent %s %% %(name)s {0}",
    "ctl \x01\x02\x1f\x7f tab\tnewline\nCR\r",
    "\"double\" `tick` $$dollar$$ E'x'",
    "".join(chr(c) for c in range(1, 256) if c != 0),  # every NUL-free byte as text
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_hostile_values_round_trip_exactly(backend, database_factory, write_config, tmp_path):
    crm, orders = database_factory(backend), database_factory(backend)
    md = sa.MetaData()
    sa.Table(
        "customers", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("note", sa.Text),
    )  # fmt: skip
    crm.load(md, {"customers": [{"id": i, "note": v} for i, v in enumerate(HOSTILE)]})
    md2 = sa.MetaData()
    sa.Table(
        "orders", md2, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer), sa.Column("note", sa.Text),
    )  # fmt: skip
    copies = [{"id": i, "customer_id": i, "note": f"old {i} '\\"} for i in range(len(HOSTILE))]
    orders.load(md2, {"orders": copies})
    data = {
        "version": 1,
        "databases": {"crm": {"url": crm.url}, "orders": {"url": orders.url, "fix_url": orders.url}},
        "settings": {"mask": "hash"},
        "rules": [{
            "name": "notes", "type": "pii", "suggest_keys": False,
            "source": {"db": "crm", "table": "customers", "key": ["id"]},
            "copy": {"db": "orders", "table": "orders", "key": ["customer_id"]},
            "fields": [{"source": "note", "copy": "note"}],
            "fix": {"mismatch": "copy_source"},
        }],
    }  # fmt: skip
    path = write_config(data)
    audit(path, tmp_path / "report.json")
    result = fix.fix(load_config(path), str(tmp_path / "report.json"), out=tmp_path / "f")
    assert result.rules[0].planned_total == len(HOSTILE)
    original = rows(orders, "orders")
    run_file(orders, tmp_path / "f" / "orders.sql")  # the rendered literals
    assert [row[2] for row in rows(orders, "orders")] == HOSTILE
    run_file(orders, tmp_path / "f" / "orders.sql")  # twice: nothing changes
    assert [row[2] for row in rows(orders, "orders")] == HOSTILE

    orders.execute("DELETE FROM orders")  # the same through --apply (bound values) and undo
    orders.engine.dispose()
    with orders.engine.begin() as conn:
        conn.execute(md2.tables["orders"].insert(), copies)
    applied = fix.fix(
        load_config(path), str(tmp_path / "report.json"), out=tmp_path / "g", apply=True
    )
    assert applied.rules[0].applied == len(HOSTILE)
    assert [row[2] for row in rows(orders, "orders")] == HOSTILE
    run_file(orders, tmp_path / "g" / "undo" / "orders.sql")
    assert rows(orders, "orders") == original


def auditor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("pair", ["sqlite-sqlite", "postgresql-mariadb"], indirect=True)
def test_cli_prints_no_raw_value_and_exits_per_spec(pair, write_config, tmp_path):
    path, orders = pii_config(pair, write_config, PII_FIX)
    report = tmp_path / "before.json"
    ran = auditor("run", str(path), "--json", str(report), "--quiet")
    assert ran.returncode == 1, ran.stderr
    log = tmp_path / "fix.log"
    env_out = tmp_path / "f"
    planned = auditor("fix", str(report), "--config", str(path), "--out", str(env_out))
    assert planned.returncode == 0, planned.stderr
    applied = subprocess.run(
        [sys.executable, "-m", "auditor", "fix", str(report), "--config", str(path),
         "--out", str(tmp_path / "g"), "--apply", "--yes", "--log-file", str(log), "--verbose"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "Applied" in applied.stdout
    shown = planned.stdout + planned.stderr + applied.stdout + applied.stderr
    shown += log.read_text()
    assert '"event": "fix_applied"' in shown
    for raw in ("bob@example.com", "bob@example.org", "Cy Young", "Jose Nunez", "4155550199"):
        assert raw not in shown
    assert "bob@example.com" in (env_out / "orders.sql").read_text()  # only in the 0600 plan
    again = auditor("fix", str(report), "--config", str(path), "--out", str(tmp_path / "h"),
                    "--apply", "--yes")  # fmt: skip
    assert again.returncode == 1 and "no longer holds" in again.stdout


def test_apply_needs_yes_without_a_terminal(tmp_path, write_config, database_factory):
    path, _ = pii_config(
        (database_factory("sqlite"), database_factory("sqlite")), write_config, PII_FIX
    )
    report = tmp_path / "r.json"
    audit(path, report)
    done = auditor("fix", str(report), "--config", str(path), "--apply")
    assert done.returncode == 2 and "--yes" in done.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(fix={"mismatch": "copy_source"}), "unknown key 'mismatch'"),
        (lambda r: r.pop("aliases"), "rewrite needs aliases"),
        (lambda r: r.update(allow_null=False, fix={"orphan": "nullify"}), "null_reference"),
    ],
)
def test_fix_block_mistakes_name_their_line(change, message, tmp_path, write_config):
    rule = {
        "name": "r", "type": "reference",
        "from": {"db": "a", "table": "t", "columns": ["x"]},
        "to": {"db": "a", "table": "u", "columns": ["id"]},
        "aliases": {"db": "a", "table": "v", "old": ["o"], "new": ["n"]},
        "fix": {"stale_alias": "rewrite"},
    }  # fmt: skip
    change(rule)
    path = write_config({"version": 1, "databases": {"a": {"url": "sqlite:///x.db"}},
                         "rules": [rule]})  # fmt: skip
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in error.value.message and f"{path}:" in error.value.message
    assert ".fix" in error.value.message


def test_nullify_on_a_not_null_column_is_a_config_error(database_factory, write_config, tmp_path):
    catalog, reviews = database_factory("sqlite"), database_factory("sqlite")
    data = build_reference(catalog, reviews)
    reviews.execute(
        "CREATE TABLE strict_refs (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL)"
    )
    reviews.execute("INSERT INTO strict_refs VALUES (1, 50)")
    data["rules"] = [{
        "name": "strict", "type": "reference",
        "from": {"db": "reviews", "table": "strict_refs", "columns": ["product_id"]},
        "to": {"db": "catalog", "table": "products", "columns": ["id"]},
        "fix": {"orphan": "nullify"},
    }]  # fmt: skip
    path = write_config(data)
    audit(path, tmp_path / "r.json")
    for done in (
        auditor("fix", str(tmp_path / "r.json"), "--config", str(path)),
        auditor("check", str(path)),  # `check` says so first
    ):
        assert done.returncode == 2, done.stderr
        assert "NOT NULL" in done.stderr and f"{path.name}:" in done.stderr
        assert "rules[0].fix.orphan" in done.stderr and "Traceback" not in done.stderr


def test_a_truncated_report_is_refused(database_factory, write_config, tmp_path):
    path, _ = reference_config(
        (database_factory("sqlite"), database_factory("sqlite")), write_config
    )
    done = auditor("run", str(path), "--json", str(tmp_path / "r.json"), "--max-findings", "1")
    assert done.returncode == 1
    refused = auditor("fix", str(tmp_path / "r.json"), "--config", str(path))
    assert refused.returncode == 2 and "--max-findings 0" in refused.stderr


def test_a_changed_rule_is_named(database_factory, write_config, tmp_path):
    path, _ = reference_config(
        (database_factory("sqlite"), database_factory("sqlite")), write_config
    )
    audit(path, tmp_path / "r.json")
    data = yaml.safe_load(path.read_text())
    data["rules"][0]["from"]["where"] = "status = 'ok'"
    data["rules"][1]["fix"] = {"orphan": "none"}  # a fix block is not the rule: no warning
    path.write_text(yaml.safe_dump(data))
    result = fix.fix(load_config(path), str(tmp_path / "r.json"), out=tmp_path / "f")
    assert [w for w in result.warnings if "changed" in w] == [
        f"rule 'reviews-products' changed in {path} since the report was written: its "
        "findings are re-checked under the rule as it is now"
    ]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_sigterm_rolls_back_the_batch_in_flight(backend, database_factory, write_config,
                                                tmp_path, monkeypatch):  # fmt: skip
    """SIGTERM during the third batch: two batches stay applied, the third rolls back, the
    undo file holds exactly the two, exit 130."""
    path, reviews = reference_config(
        (database_factory(backend), database_factory(backend)), write_config
    )
    before = rows(reviews, "legacy_refs")
    audit(path, tmp_path / "r.json")
    monkeypatch.setattr(fix.sql, "BATCH", 1)
    config = load_config(path)
    config = config.model_copy(update={"rules": [config.rule("legacy-refs"),
                                                 config.rule("reviews-products")]})  # fmt: skip
    real_locked, real_statement = fix.sql.locked_rows, fix.sql.statement
    batches = []

    def locked_rows(*args):
        batches.append(args)
        return real_locked(*args)

    def statement(target, changes):
        if len(batches) == 3:  # its undo is written: the signal comes as it changes rows
            os.kill(os.getpid(), signal.SIGTERM)
        return real_statement(target, changes)

    monkeypatch.setattr(fix.sql, "locked_rows", locked_rows)
    monkeypatch.setattr(fix.sql, "statement", statement)
    result = fix.fix(config, str(tmp_path / "r.json"), out=tmp_path / "f", apply=True)
    assert result.interrupted and result.exit_code == 130
    applied = {r.name: r.applied for r in result.rules}
    assert applied == {"legacy-refs": 2, "reviews-products": 0}
    assert len(rows(reviews, "legacy_refs")) == len(before) - 2
    assert {r[0] for r in rows(reviews, "reviews")} >= {3, 4, 5, 6, 7}  # rolled back
    undo = (tmp_path / "f" / "undo" / "reviews.sql").read_text()
    assert undo.count("INSERT") == 2 and "UPDATE" not in undo and "DELETE" not in undo
    run_file(reviews, tmp_path / "f" / "undo" / "reviews.sql")
    assert rows(reviews, "legacy_refs") == before


def _keyspace(client, prefix: str) -> dict[bytes, Any]:
    """Every key under the prefix: its value (a hash as a dict) and whether it expires."""
    state = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        kind = client.type(key)
        value = client.hgetall(key) if kind == b"hash" else client.get(key)
        state[key] = (value, client.ttl(key) > 0)
    return state


def _redis_config(tmp_path, shop, prefix: str) -> Path:
    from tests.conftest import REDIS_URL

    shop.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER)")
    shop.execute("INSERT INTO products VALUES (1, 0), (2, 0), (3, 1)")
    shop.execute("CREATE TABLE aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER)")
    shop.execute("INSERT INTO aliases VALUES (100, 1)")
    shop.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(80))")
    shop.execute("INSERT INTO customers VALUES (1, 'ann@example.com'), (2, 'bob@example.com')")
    aliases = {"db": "shop", "table": "aliases", "old": ["old_id"], "new": ["new_id"]}
    live = {"db": "shop", "table": "products", "columns": ["id"], "soft_delete": "deleted = 1"}
    rules = [
        {"name": "pages", "type": "reference", "to": live,
         "from": {"db": "cache", "table": f"{prefix}:page:{{id}}", "columns": ["id"]},
         "fix": {"orphan": "delete", "soft_deleted": "delete"}},
        {"name": "carts", "type": "reference", "to": live, "aliases": aliases,
         "from": {"db": "cache", "table": f"{prefix}:cart:{{cart}}", "value": "hash",
                  "columns": ["product_id"]},
         "fix": {"stale_alias": "rewrite", "orphan": "delete"}},
        {"name": "customers", "type": "pii",
         "source": {"db": "shop", "table": "customers", "key": ["id"]},
         "copy": {"db": "cache", "table": f"{prefix}:customer:{{id}}", "value": "hash",
                  "key": ["id"]},
         "fields": [{"source": "email", "copy": "email", "normalize": ["email"]}],
         "fix": {"mismatch": "copy_source", "missing_value": "copy_source"}},
    ]  # fmt: skip
    data = {
        "version": 1,
        "rules": rules,
        "databases": {"shop": {"url": shop.url}, "cache": {"url": REDIS_URL, "fix_url": REDIS_URL}},
    }
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_redis_fixes_round_trip(backend, cache, database_factory, tmp_path):
    client, prefix = cache
    path = _redis_config(tmp_path, database_factory(backend), prefix)
    for key in ("page:1", "page:9", "page:3", "page:2:reviews"):
        client.set(f"{prefix}:{key}", "cached page \x00\xff", ex=3600 if key == "page:9" else None)
    client.hset(f"{prefix}:cart:a", mapping={"product_id": "100", "qty": "2"})  # stale -> 1
    client.hset(f"{prefix}:cart:b", mapping={"product_id": "77"})  # orphan
    client.hset(f"{prefix}:cart:c", mapping={"product_id": "2"})  # fine
    client.hset(f"{prefix}:customer:1", mapping={"email": " ANN@example.com "})  # near miss
    client.hset(f"{prefix}:customer:2", mapping={"email": "bobby@example.com", "n": "B"})
    client.hset(f"{prefix}:customer:3", mapping={"email": "who@example.com"})  # no source
    before = _keyspace(client, prefix)
    audit(path, tmp_path / "before.json")

    out = tmp_path / "f"
    result = fix.fix(load_config(path), str(tmp_path / "before.json"), out=out, apply=True)
    assert {r.name: r.applied for r in result.rules} == {"pages": 2, "carts": 2, "customers": 1}
    assert result.exit_code == 0
    assert oct((out / "cache.redis").stat().st_mode)[-3:] == "600"
    after = audit(path, tmp_path / "after.json")
    assert after == {"pages": {}, "carts": {}, "customers": {"missing_source": 1}}
    now = _keyspace(client, prefix)
    assert f"{prefix}:page:9".encode() not in now and f"{prefix}:cart:b".encode() not in now
    assert now[f"{prefix}:cart:a".encode()][0] == {b"product_id": b"1", b"qty": b"2"}
    assert now[f"{prefix}:customer:2".encode()][0] == {b"email": b"bob@example.com", b"n": b"B"}
    assert now[f"{prefix}:customer:1".encode()] == before[f"{prefix}:customer:1".encode()]

    again = fix.fix(load_config(path), str(tmp_path / "before.json"), out=tmp_path / "g",
                    apply=True)  # fmt: skip
    assert sum(r.applied for r in again.rules) == 0 and _keyspace(client, prefix) == now
    _redis_cli(out / "cache.redis")  # the plan by hand: every script finds its key changed
    assert _keyspace(client, prefix) == now

    _redis_cli(out / "undo" / "cache.redis")
    assert _keyspace(client, prefix) == before


def _redis_cli(path: Path) -> None:
    from tests.conftest import REDIS_URL

    try:
        with path.open("rb") as stdin:
            done = subprocess.run(["redis-cli", "-u", REDIS_URL], stdin=stdin,
                                  capture_output=True, timeout=60)  # fmt: skip
    except FileNotFoundError:
        if IN_CI:
            raise
        pytest.skip("redis-cli is not installed")
    assert done.returncode == 0 and b"ERR" not in done.stdout + done.stderr, done


def test_redis_values_other_than_hash_take_only_delete(cache, database_factory, tmp_path):
    client, prefix = cache
    path = _redis_config(tmp_path, database_factory("sqlite"), prefix)
    data = yaml.safe_load(path.read_text())
    data["rules"][0]["fix"] = {"orphan": "nullify"}
    path.write_text(yaml.safe_dump(data))
    client.set(f"{prefix}:page:9", "x")
    audit(path, tmp_path / "r.json")
    done = auditor("fix", str(tmp_path / "r.json"), "--config", str(path))
    assert done.returncode == 2 and "rules[0].fix.orphan" in done.stderr
    assert "no NULL" in done.stderr


def test_files_get_a_redirects_csv(database_factory, tmp_path):
    shop = database_factory("sqlite")
    shop.execute("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    shop.execute("INSERT INTO products VALUES (1), (5)")
    shop.execute("CREATE TABLE aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER)")
    shop.execute("INSERT INTO aliases VALUES (100, 1), (101, 5)")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "a.log").write_text(
        "GET /products/100?x=/products/101 200\nGET /products/1 200\nGET /products/100 304\n"
        "GET /products/9 404\n"
    )
    data = {"version": 1, "databases": {"shop": {"url": shop.url}, "exports": {"path": "exports"}},
            "rules": [{"name": "log", "type": "reference",
                       "from": {"db": "exports", "table": "*.log", "columns": ["id"],
                                "extract": {"column": "line", "pattern": "/products/(?P<id>\\d+)"}},
                       "to": {"db": "shop", "table": "products", "columns": ["id"]},
                       "aliases": {"db": "shop", "table": "aliases", "old": ["old_id"],
                                   "new": ["new_id"]},
                       "fix": {"stale_alias": "rewrite"}}]}  # fmt: skip
    path = tmp_path / "files.yaml"
    path.write_text(yaml.safe_dump(data))
    audit(path, tmp_path / "r.json")
    log = (exports / "a.log").read_text()
    result = fix.fix(load_config(path), str(tmp_path / "r.json"), out=tmp_path / "f", apply=True)
    assert result.exit_code == 0 and result.rules[0].applied == 0
    assert (exports / "a.log").read_text() == log  # files are never changed
    redirects = (tmp_path / "f" / "exports-redirects.csv").read_text().splitlines()
    assert redirects == [
        "old,new,lines",
        "/products/100,/products/1,2",
        "/products/101,/products/5,1",
    ]
    assert "exports-redirects.csv" in (tmp_path / "f" / "plan.md").read_text()


@pytest.mark.parametrize(("answer", "code"), [("n", 1), ("y", 0)])
def test_apply_asks_once_on_a_terminal(answer, code, database_factory, write_config, tmp_path,
                                       monkeypatch):  # fmt: skip
    from typer.testing import CliRunner

    from auditor import cli

    path, orders = pii_config(
        (database_factory("sqlite"), database_factory("sqlite")), write_config, PII_FIX
    )
    audit(path, tmp_path / "r.json")
    before = rows(orders, "orders")
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    done = CliRunner().invoke(
        cli.app, ["fix", str(tmp_path / "r.json"), "--config", str(path), "--apply",
                  "--out", str(tmp_path / "f")], input=f"{answer}\n",
    )  # fmt: skip
    assert done.exit_code == code, done.output
    assert done.output.count("Apply 7 changes to orders") == 1
    assert (rows(orders, "orders") == before) == (answer == "n")
    assert (tmp_path / "f" / "orders.sql").exists()  # the plan is there to read either way


def test_a_copy_changed_since_the_audit_is_skipped(database_factory, write_config, tmp_path):
    """The report is masked: the copy's value now must still fit the masked value it holds."""
    path, orders = pii_config(
        (database_factory("sqlite"), database_factory("sqlite")), write_config, PII_FIX
    )
    audit(path, tmp_path / "r.json")
    orders.execute("UPDATE orders SET customer_email = 'zoe@example.net' WHERE id = 2")
    result = fix.fix(load_config(path), str(tmp_path / "r.json"), out=tmp_path / "f")
    assert result.rules[0].skipped == {"the copy's value changed since the audit": 1}
    assert "zoe" not in (tmp_path / "f" / "orders.sql").read_text()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_failing_batch_is_rolled_back_and_counted(backend, database_factory, write_config,
                                                    tmp_path, monkeypatch):  # fmt: skip
    """A rewrite the database refuses (a unique key): that batch rolls back, its undo is cut,
    the next batch still applies; exit 1, and the refused value is not shown."""
    catalog, shop = database_factory(backend), database_factory(backend)
    catalog.execute("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    catalog.execute("INSERT INTO products VALUES (1), (2)")
    catalog.execute("CREATE TABLE aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER)")
    catalog.execute("INSERT INTO aliases VALUES (100, 1), (200, 2)")
    shop.execute("CREATE TABLE favourites (id INTEGER PRIMARY KEY, product_id INTEGER UNIQUE)")
    shop.execute("INSERT INTO favourites VALUES (1, 1), (2, 100), (3, 200)")
    data = {"version": 1,
            "databases": {"catalog": {"url": catalog.url},
                          "shop": {"url": shop.url, "fix_url": shop.url}},
            "rules": [{"name": "favourites", "type": "reference",
                       "from": {"db": "shop", "table": "favourites", "columns": ["product_id"]},
                       "to": {"db": "catalog", "table": "products", "columns": ["id"]},
                       "aliases": {"db": "catalog", "table": "aliases", "old": ["old_id"],
                                   "new": ["new_id"]},
                       "fix": {"stale_alias": "rewrite"}}]}  # fmt: skip
    path = write_config(data)
    audit(path, tmp_path / "r.json")
    monkeypatch.setattr(fix.sql, "BATCH", 1)
    result = fix.fix(load_config(path), str(tmp_path / "r.json"), out=tmp_path / "f", apply=True)
    outcome = result.rules[0]
    assert (outcome.applied, outcome.failed, result.exit_code) == (1, 1, 1)
    assert "a batch failed" in outcome.errors[0] and "100" not in outcome.errors[0]
    assert rows(shop, "favourites") == [(1, 1), (2, 100), (3, 2)]
    undo = (tmp_path / "f" / "undo" / "shop.sql").read_text()
    assert undo.count("UPDATE") == 1
    run_file(shop, tmp_path / "f" / "undo" / "shop.sql")
    assert rows(shop, "favourites") == [(1, 1), (2, 100), (3, 200)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_undo_puts_back_a_row_two_rules_changed(backend, database_factory, write_config, tmp_path):
    """A copy's email is copied from the source (one rule), then the same row is deleted as an
    orphan (another): the undo inserts the row, then puts the email back: last change first."""
    crm, shop = database_factory(backend), database_factory(backend)
    crm.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(40))")
    crm.execute("INSERT INTO customers VALUES (1, 'ann@x.org')")
    crm.execute("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    crm.execute("INSERT INTO products VALUES (1)")
    shop.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, "
                 "email VARCHAR(40), product_id INTEGER)")  # fmt: skip
    shop.execute("INSERT INTO orders VALUES (1, 1, 'old@x.org', 99), (2, 1, 'ann@x.org', 1)")
    data = {"version": 1,
            "databases": {"crm": {"url": crm.url}, "shop": {"url": shop.url, "fix_url": shop.url}},
            "rules": [
                {"name": "emails", "type": "pii", "suggest_keys": False,
                 "source": {"db": "crm", "table": "customers", "key": ["id"]},
                 "copy": {"db": "shop", "table": "orders", "key": ["customer_id"]},
                 "fields": [{"source": "email", "copy": "email"}],
                 "fix": {"mismatch": "copy_source"}},
                {"name": "products", "type": "reference",
                 "from": {"db": "shop", "table": "orders", "columns": ["product_id"]},
                 "to": {"db": "crm", "table": "products", "columns": ["id"]},
                 "fix": {"orphan": "delete"}}]}  # fmt: skip
    path = write_config(data)
    before = rows(shop, "orders")
    audit(path, tmp_path / "r.json")
    result = fix.fix(load_config(path), str(tmp_path / "r.json"), out=tmp_path / "f", apply=True)
    assert [r.applied for r in result.rules] == [1, 1]
    assert rows(shop, "orders") == [(2, 1, "ann@x.org", 1)]
    undo = (tmp_path / "f" / "undo" / "shop.sql").read_text()
    assert undo.index("INSERT") < undo.index("UPDATE")  # last applied, first undone
    run_file(shop, tmp_path / "f" / "undo" / "shop.sql")
    assert rows(shop, "orders") == before
