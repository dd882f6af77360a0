"""A Redis keyspace as a side (SPEC §9), on the Redis this machine runs: stale cache keys and
cached PII drift against SQL, with near misses, a key changed between scan and recheck, a
Redis that is down, and a read-only ACL user. Keys live under a per-test prefix in logical
database 15 and are deleted afterwards."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

import auditor
from auditor.engine import RunOptions
from tests.cli.test_cli import auditor as cli
from tests.cli.test_cli import check_fails_with
from tests.conftest import REDIS_URL


def _catalog(database) -> None:
    database.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER)")
    database.execute("INSERT INTO products VALUES (1, 0), (2, 0), (3, 1)")
    database.execute("CREATE TABLE product_id_aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER)")
    database.execute("INSERT INTO product_id_aliases VALUES (100, 1)")
    database.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(80))")
    database.execute(
        "INSERT INTO customers VALUES (1, 'ann@example.com'), (2, 'bob@example.com'), "
        "(3, 'cy@example.com')"
    )


def _seed(client, prefix: str) -> None:
    for key in ("product:1", "product:9", "product:3", "product:100", "product:2:reviews"):
        client.set(f"{prefix}:{key}", "cached page")
    client.hset(f"{prefix}:customer:1", mapping={"email": " ANN@Example.com "})  # equal
    client.hset(f"{prefix}:customer:2", mapping={"email": "bobby@example.com"})  # drifted
    client.hset(f"{prefix}:customer:7", mapping={"email": "who@example.com"})  # no source
    client.hset(f"{prefix}:customer:3", mapping={"name": "Cy"})  # no email field: missing
    client.set(f"{prefix}:cust:1", json.dumps({"contact": {"email": "ann@example.com"}}))
    client.set(f"{prefix}:cust:2", json.dumps({"contact": {"email": "nope@example.com"}}))


def _config(tmp_path, sql_url: str, prefix: str, redis_url: str = REDIS_URL):
    aliases = {"db": "shop", "table": "product_id_aliases", "old": ["old_id"], "new": ["new_id"]}
    source = {"db": "shop", "table": "customers", "key": ["id"]}
    email = [{"source": "email", "copy": "email", "normalize": ["email"]}]
    rules = [
        {"name": "product-cache", "type": "reference", "aliases": aliases,
         "from": {"db": "cache", "table": f"{prefix}:product:{{id}}", "columns": ["id"]},
         "to": {"db": "shop", "table": "products", "columns": ["id"],
                "soft_delete": "deleted = 1"}},
        {"name": "customer-hash", "type": "pii", "source": source, "fields": email,
         "copy": {"db": "cache", "table": f"{prefix}:customer:{{id}}", "value": "hash",
                  "key": ["id"]}},
        {"name": "customer-json", "type": "pii", "source": source,
         "fields": [{**email[0], "copy": "contact.email"}],
         "copy": {"db": "cache", "table": f"{prefix}:cust:{{id}}", "value": "json",
                  "key": ["id"]}},
    ]  # fmt: skip
    data = {"version": 1, "databases": {"shop": {"url": sql_url}, "cache": {"url": redis_url}},
            "rules": rules}  # fmt: skip
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _found(result) -> dict[str, list[tuple]]:
    return {
        rule.name: [(f.kind, f.key["redis_key"].split(":", 1)[1], f.field) for f in rule.findings]
        for rule in result.rules
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_stale_cache_keys_and_cached_pii_drift(backend, cache, database_factory, tmp_path):
    client, prefix = cache
    shop = database_factory(backend)
    _catalog(shop)
    _seed(client, prefix)
    result = auditor.run(auditor.load_config(_config(tmp_path, shop.url, prefix)))
    assert [r.error for r in result.rules] == [None, None, None]
    assert _found(result) == {
        "product-cache": [
            ("orphan", "product:9", None),
            ("soft_deleted", "product:3", None),
            ("stale_alias", "product:100", None),  # product:2:reviews is no match
        ],
        "customer-hash": [
            ("mismatch", "customer:2", "email"),
            ("missing_source", "customer:7", None),  # customer:1 equal once normalised
            ("missing_value", "customer:3", "email"),
        ],
        "customer-json": [("mismatch", "cust:2", "email")],
    }
    by_rule = {rule.name: rule for rule in result.rules}
    assert by_rule["product-cache"].findings[2].suggested == {"id": 1}
    assert by_rule["customer-hash"].findings[0].copy_value == "b***@e***.com"  # masked
    assert by_rule["product-cache"].rows_scanned["from"] == 4


def test_a_key_changed_between_scan_and_recheck_is_no_finding(cache, database_factory, tmp_path):
    client, prefix = cache
    shop = database_factory("sqlite")
    _catalog(shop)
    _seed(client, prefix)

    def change() -> None:
        client.delete(f"{prefix}:product:9")  # the stale entry expired
        client.hset(f"{prefix}:customer:2", mapping={"email": "bob@example.com"})  # refreshed

    config = auditor.load_config(_config(tmp_path, shop.url, prefix))
    found = _found(auditor.run(config, options=RunOptions(before_recheck=change)))
    assert ("orphan", "product:9", None) not in found["product-cache"]
    assert ("mismatch", "customer:2", "email") not in found["customer-hash"]
    assert ("soft_deleted", "product:3", None) in found["product-cache"]


def test_a_redis_that_is_down_fails_only_its_rules(cache, database_factory, tmp_path):
    client, prefix = cache
    shop = database_factory("sqlite")
    _catalog(shop)
    path = _config(tmp_path, shop.url, prefix, redis_url="redis://:S3cret-pw@127.0.0.1:1/0")
    data = yaml.safe_load(path.read_text())
    data["rules"].append({**data["rules"][0], "name": "sql-only",
                          "from": {"db": "shop", "table": "products", "columns": ["id"]}})  # fmt: skip
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    ran = cli("run", str(path), "-q")
    assert ran.returncode == 3, ran.stderr
    assert "'cache'" in ran.stderr and "S3cret-pw" not in ran.stderr + ran.stdout
    result = auditor.run(auditor.load_config(path))
    assert [r.status for r in result.rules][:3] == ["error", "error", "error"]
    assert result.rules[3].error is None


def test_a_read_only_acl_user_is_enough(cache, database_factory, tmp_path):
    """Only SCAN, GET, HMGET and EXISTS (and PING, SELECT for the connection) are sent: a
    Redis ACL user allowed nothing else runs the whole audit."""
    client, prefix = cache
    shop = database_factory("sqlite")
    _catalog(shop)
    _seed(client, prefix)
    user = f"auditor_{prefix}"
    client.acl_setuser(user, enabled=True, passwords=["+ro-pw"], keys=[f"{prefix}:*"],
                       commands=["-@all", "+scan", "+get", "+hmget", "+exists", "+ping",
                                 "+select"])  # fmt: skip
    try:
        url = REDIS_URL.replace("redis://", f"redis://{user}:ro-pw@")
        result = auditor.run(auditor.load_config(_config(tmp_path, shop.url, prefix, url)))
    finally:
        client.acl_deluser(user)
    assert [r.error for r in result.rules] == [None, None, None]
    assert sum(len(r.findings) for r in result.rules) == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r[0].update(to={**r[0]["to"], "db": "cache"}), "rules[0].to.db: cache is a Redis"),
        (lambda r: r[0]["from"].update(columns=["sku"]), "'sku' is no capture"),
        (lambda r: r[0]["from"].update(where="1 = 1"), "rules[0].from.where: where is not for Redis"),
        (lambda r: r[0]["to"].update(value="hash"), "rules[0].to.value: value is for Redis sides"),
        (lambda r: r[1]["copy"].update(table="customer:{id}:{id}"), "appears twice"),
    ],
)  # fmt: skip
def test_mistakes_on_a_redis_side_are_one_line(cache, tmp_path, change, message):
    _, prefix = cache
    with sqlite3.connect(tmp_path / "shop.db") as shop:
        shop.executescript(
            "CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER);"
            "CREATE TABLE product_id_aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER);"
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT);"
        )
    path = _config(tmp_path, f"sqlite:///{tmp_path}/shop.db", prefix)
    data = yaml.safe_load(path.read_text())
    change(data["rules"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    check_fails_with(path, message)


def test_check_warns_about_a_key_pattern_that_matches_nothing_and_samples_ttls(
    cache, database_factory, tmp_path
):
    client, prefix = cache
    shop = database_factory("sqlite")
    _catalog(shop)
    _seed(client, prefix)
    path = _config(tmp_path, shop.url, prefix)
    data = yaml.safe_load(path.read_text())
    data["rules"][2]["copy"]["table"] = f"{prefix}:customr:{{id}}"  # a typo: no such keys
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    client.expire(f"{prefix}:product:9", 600)
    checked = auditor.check(auditor.load_config(path))
    warnings = [w for rule in checked.rules for w in rule.warnings]
    assert warnings == [f"cache.{prefix}:customr:{{id}}: the key pattern matches no key"]
    notes = [n for rule in checked.rules for n in rule.notes if "sampled keys" in n]
    assert notes == [  # product:{id} matches 4 of the 5 product keys; customer:{id} 4 hashes
        f"cache.{prefix}:product:{{id}}: 1 of 4 sampled keys expire",
        f"cache.{prefix}:customer:{{id}}: 0 of 4 sampled keys expire",
    ]


def test_require_ttl_reports_keys_that_never_expire(cache, database_factory, tmp_path):
    """`no_ttl`: one warning per matched key without an expiry, whatever else is found for it;
    a rule with only such findings is `warn` (exit 0 under fail_on: error)."""
    client, prefix = cache
    shop = database_factory("sqlite")
    _catalog(shop)
    _seed(client, prefix)
    for key in ("product:1", "product:9", "product:100"):
        client.expire(f"{prefix}:{key}", 3600)  # these expire; product:3 never does
    path = _config(tmp_path, shop.url, prefix)
    data = yaml.safe_load(path.read_text())
    data["rules"] = data["rules"][:1]
    data["rules"][0]["from"]["require_ttl"] = True
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (rule,) = auditor.run(auditor.load_config(path)).rules
    assert _found_in(rule) == [
        ("no_ttl", "product:3", None),
        ("orphan", "product:9", None),
        ("soft_deleted", "product:3", None),
        ("stale_alias", "product:100", None),
    ]
    (no_ttl,) = [f for f in rule.findings if f.kind == "no_ttl"]
    assert no_ttl.severity == "warning" and no_ttl.to_dict() == {
        "rule": "product-cache", "kind": "no_ttl", "severity": "warning",
        "key": {"redis_key": f"{prefix}:product:3"},
    }  # fmt: skip
    # Only warnings left: the cache entry of a live product that never expires.
    client.delete(f"{prefix}:product:9", f"{prefix}:product:100", f"{prefix}:product:3")
    client.persist(f"{prefix}:product:1")
    result = auditor.run(auditor.load_config(path))
    assert _found_in(result.rules[0]) == [("no_ttl", "product:1", None)]
    assert result.rules[0].status == "warn" and result.exit_code == 0
    assert result.totals["by_severity"] == {"error": 0, "warning": 1}
    assert cli("run", str(path), "-q", "--fail-on", "warning").returncode == 1


def _found_in(rule) -> list[tuple]:
    return [(f.kind, f.key["redis_key"].split(":", 1)[1], f.field) for f in rule.findings]
