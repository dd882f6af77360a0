"""Mistakes the databases find (a misspelt column in `where`/`soft_delete`, a wrong table,
column or key type) are config errors: exit 2 with the config's file:line and field, in
`check` (which reads no data row) and in `run` alike, on every backend."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import auditor

BACKENDS = ["sqlite", "postgresql", "mariadb"]


def _config(database, tmp_path, to_extra="", from_extra="", table="products", column="id") -> str:
    path = tmp_path / "typo.yaml"
    path.write_text(
        f"""version: 1
databases:
  shop: {{url: "{database.url}"}}
rules:
  - name: fine
    type: reference
    from: {{db: shop, table: reviews, columns: [product_id]}}
    to: {{db: shop, table: products, columns: [id]}}
  - name: reviews-have-live-products
    type: reference
    from:
      db: shop
      table: reviews
      columns: [product_id]{from_extra}
    to:
      db: shop
      table: {table}
      columns: [{column}]{to_extra}
"""
    )
    return str(path)


@pytest.fixture(params=BACKENDS)
def shop(request, database_factory):
    database = database_factory(request.param)
    database.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, is_deleted INTEGER)")
    database.execute(
        "CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, status VARCHAR(10))"
    )
    database.execute("INSERT INTO products VALUES (1, 0)")
    database.execute("INSERT INTO reviews VALUES (10, 1, 'ok'), (11, 2, 'spam')")
    return database


CASES = {  # config overrides, line, field, a word the message must name
    "soft_delete": (
        {"to_extra": '\n      soft_delete: "is_deletd = 1"'},
        19,
        "to.soft_delete",
        "is_deletd",
    ),
    "where": ({"from_extra": "\n      where: \"stauts <> 'spam'\""}, 15, "from.where", "stauts"),
    "table": ({"table": "prodcts"}, 17, "to.table", "products"),
    "column": ({"column": "idd"}, 18, "to.columns[0]", "idd"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_the_database_finds_is_exit_2_with_file_line(shop, tmp_path, case):
    overrides, line, field, word = CASES[case]
    config = _config(shop, tmp_path, **overrides)
    expected = f"typo.yaml:{line}: rules[1].{field}: "
    checked = auditor("check", config)
    assert checked.returncode == 2, checked.stderr
    assert expected in checked.stderr and word in checked.stderr, checked.stderr
    assert checked.stderr.count("\n") == 1 and "Traceback" not in checked.stderr

    log = tmp_path / "audit.log"
    ran = auditor("run", config, "-q", "--json", str(tmp_path / "out.json"), "--log-file", str(log))
    assert ran.returncode == 2, ran.stderr
    assert expected in ran.stderr and "reviews-have-live-products" in ran.stderr
    assert "reached" not in ran.stderr and "INVALID_ARGUMENT" not in ran.stderr
    assert ran.stderr.count("\n") == 1, ran.stderr

    rules = {r["name"]: r for r in json.loads((tmp_path / "out.json").read_text())["rules"]}
    assert rules["fine"]["status"] == "fail"  # the other rule still ran: review 11 is an orphan
    assert rules["reviews-have-live-products"]["status"] == "error"


def test_a_correct_predicate_passes_check(shop, tmp_path):
    config = _config(
        shop,
        tmp_path,
        '\n      soft_delete: "is_deleted = 1"',
        "\n      where: \"status <> 'spam'\"",
    )
    checked = auditor("check", config)
    assert checked.returncode == 0, checked.stderr
    ran = auditor("run", config, "-q", "--rule", "reviews-have-live-products")
    assert ran.returncode == 0, ran.stderr


def test_a_predicate_that_fails_on_the_data_is_a_config_error(database_factory, tmp_path):
    """Compiling with LIMIT 0 cannot see a cast that fails on a value: the scan does, and
    that too is exit 2 naming the field, without the value the database quoted."""
    shop = database_factory("postgresql")
    shop.execute("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    shop.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, status TEXT)")
    shop.execute("INSERT INTO reviews VALUES (10, 1, 'secret-status-value')")
    config = _config(shop, tmp_path, from_extra='\n      where: "status::int > 0"')
    assert auditor("check", config).returncode == 0  # nothing wrong with it as SQL
    log = tmp_path / "audit.log"
    ran = auditor("run", config, "-q", "--json", str(tmp_path / "out.json"), "--log-file", str(log))
    assert ran.returncode == 2, ran.stderr
    assert "typo.yaml:15: rules[1].from.where: " in ran.stderr and "integer" in ran.stderr
    report = (tmp_path / "out.json").read_text()
    assert "secret-status-value" not in ran.stderr + report + log.read_text()
    # The log keeps what the database said (SQLSTATE 22P02: invalid text representation) and
    # the rule, for whoever reads it later.
    (error,) = [json.loads(line) for line in log.read_text().splitlines() if "rule_error" in line]
    assert error["rule"] == "reviews-have-live-products" and error["sqlstate"] == "22P02"


# Issue 18: as a privileged login, these ran (or were stopped only by the driver) before
# predicates were parsed and checked against an allowlist. Each is now refused by `check` and
# `run` alike, with file:line, and the database is as it was.
ATTACKS = {
    "postgresql": [
        ("lo_import('/etc/hostname') > 0", "lo_import()"),
        (
            "(SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'victim') >= 0",
            "a subquery",
        ),
        ("1=1 /* ' */) ; DELETE FROM reviews WHERE (id=10 /* ' */", "not a SQL predicate"),
        ("nextval('canary') > 0", "nextval()"),
    ],
    "mariadb": [
        (r"status <> '\'' OR 1=1) ; DELETE FROM reviews WHERE (1=1 OR status <> '\''", "not a SQL"),
        ("NEXTVAL(canary) > 0", "nextval()"),
        ("status = 'ok' /*!99999 OR NEXTVAL(canary) > 0 */", None),  # allowed: comment dropped
    ],
}


def _state(database) -> dict:
    """What the attacks would change: rows, the sequence, large objects, the victim."""
    import sqlalchemy as sa

    engine = sa.create_engine(database.url)
    with engine.connect() as conn:
        state = {"reviews": conn.exec_driver_sql("SELECT count(*) FROM reviews").scalar()}
        if database.backend == "postgresql":
            state["canary"] = conn.exec_driver_sql("SELECT last_value FROM canary").scalar()
            state["large objects"] = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_largeobject_metadata"
            ).scalar()
        else:
            state["canary"] = conn.exec_driver_sql("SELECT LASTVAL(canary)").scalar()
    engine.dispose()
    return state


@pytest.mark.parametrize("backend", sorted(ATTACKS))
def test_a_predicate_that_writes_or_reaches_out_is_refused_and_changes_nothing(
    backend, database_factory, tmp_path
):
    import sqlalchemy as sa

    shop = database_factory(backend)
    shop.execute("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    shop.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, status TEXT)")
    shop.execute("INSERT INTO reviews VALUES (10, 1, 'ok')")
    shop.execute("CREATE SEQUENCE canary")
    victim = sa.create_engine(
        shop.url,
        connect_args={"application_name": "victim"} if backend == "postgresql" else {},
    )
    with victim.connect() as held:
        before = _state(shop)
        for predicate, named in ATTACKS[backend]:
            config = _config(shop, tmp_path, from_extra=f"\n      where: {json.dumps(predicate)}")
            for command in (["check", config], ["run", config, "-q"]):
                done = auditor(*command)
                if named is None:
                    assert done.returncode in (0, 1), done.stderr
                    continue
                assert done.returncode == 2, (predicate, done.stderr)
                assert "typo.yaml:15: rules[1].from.where: " in done.stderr, done.stderr
                assert named in done.stderr, done.stderr
        assert held.exec_driver_sql("SELECT 1").scalar() == 1  # the victim lives
    victim.dispose()
    assert _state(shop) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_allowed_predicates_run_as_written_on_every_backend(backend, database_factory, tmp_path):
    """Literals reach the fast drivers as written: a `%` in one was doubled for the pyformat
    drivers and then compared as `%%` by ADBC and connectorx."""
    shop = database_factory(backend)
    shop.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, is_deleted INTEGER)")
    shop.execute(
        "CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, status VARCHAR(10))"
    )
    shop.execute("INSERT INTO products VALUES (1, 0), (2, 1)")
    shop.execute(
        "INSERT INTO reviews VALUES (10, 1, 'ok'), (11, 7, '50%'), (12, 8, ' \\:x'), "
        "(13, 2, 'OK'), (14, 9, 'it''s')"
    )
    where = "status NOT IN ('50%', ' :x', 'it''s') AND lower(coalesce(status, '')) LIKE 'o%'"
    config = _config(
        shop,
        tmp_path,
        from_extra=f"\n      where: {json.dumps(where)}",
        to_extra='\n      soft_delete: "is_deleted = 1 AND id BETWEEN 1 AND 100"',
    )
    assert auditor("check", config).returncode == 0
    out = tmp_path / "out.json"
    ran = auditor("run", config, "-q", "--rule", "reviews-have-live-products", "--json", str(out))
    assert ran.returncode == 1, ran.stderr
    (rule,) = json.loads(out.read_text())["rules"]
    assert rule["counts"] == {"soft_deleted": 1}  # review 13; 11, 12 and 14 filtered out


# What people write, per database: each must pass the allowlist AND be compiled by the real
# server as auditor renders it (`check` prepares every predicate with LIMIT 0).
RENDERED = {
    "postgresql": [
        "status IN ('a', 'b') AND product_id BETWEEN 1 AND 9",
        "coalesce(status, '') <> 'spam' AND NOT (status ILIKE 'x%')",
        "created_at > now() - interval '30 days'",
        "created_at >= DATE '2020-01-01' AND date_trunc('month', created_at) < now()",
        "EXTRACT(YEAR FROM created_at) > 2019 AND created_at AT TIME ZONE 'UTC' > '2020-01-01'",
        "status ~ '^[a-z]+$' AND status !~ 'x' AND status ~* 'O'",
        "status::int > 0 OR length(status) > 2 OR status IS DISTINCT FROM 'x'",
        "data->>'deleted' = 'true' AND data ? 'deleted' AND data @> '{\"a\": 1}'",
        "product_id % 2 = 0 AND CASE WHEN status = 'a' THEN 1 ELSE 0 END = 0",
        "split_part(status, ',', 1) = 'a' OR md5(status) = 'x' OR status = ANY('{a,b}')",
    ],
    "mariadb": [
        "status IN ('a', 'b') AND product_id BETWEEN 1 AND 9",
        "created_at > NOW() - INTERVAL 30 DAY AND DATE(created_at) > '2020-01-01'",
        "YEAR(created_at) = 2020 OR DATEDIFF(NOW(), created_at) > 30",
        "status REGEXP '^a' OR status NOT REGEXP 'b' OR status RLIKE 'c'",
        "IFNULL(status, '') <> '' AND LENGTH(status) > 1 AND status <=> 'x'",
        'status = "deleted" OR IF(product_id > 1, 1, 0) = 1',
        "JSON_UNQUOTE(JSON_EXTRACT(data, '$.deleted')) = 'true' OR FIND_IN_SET('a', status) > 0",
        "TIMESTAMPDIFF(DAY, created_at, NOW()) > 30 OR DATE_ADD(created_at, INTERVAL 1 DAY) > NOW()",
        "CAST(status AS UNSIGNED) > 0 OR product_id DIV 2 = 1 OR SUBSTRING_INDEX(status, '@', -1) = 'a'",
    ],
    "sqlite": [
        "status IN ('a', 'b') AND product_id BETWEEN 1 AND 9",
        "created_at > datetime('now', '-30 days') OR julianday('now') - julianday(created_at) > 30",
        "ifnull(status, '') <> '' AND length(status) > 1 AND substr(status, 1, 1) = 'a'",
        "status GLOB 'a*' OR status LIKE 'b%' OR typeof(status) = 'text'",
        "strftime('%Y', created_at) = '2020' OR status IS NOT 'x'",
        "json_extract(data, '$.deleted') = 1 OR instr(status, 'a') > 0",
        "CAST(status AS INTEGER) > 0 OR abs(product_id) > 1 OR status || 'x' <> ''",
    ],
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_predicates_people_write_are_accepted_and_compiled_by_the_server(
    backend, database_factory, tmp_path
):
    shop = database_factory(backend)
    shop.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, is_deleted INTEGER)")
    data = "JSONB" if backend == "postgresql" else "TEXT"
    created = "TIMESTAMP" if backend != "mariadb" else "DATETIME"
    shop.execute(
        f"CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, status VARCHAR(20), "
        f"created_at {created}, data {data})"
    )
    rules = "".join(
        f"""
  - name: p{i}
    type: reference
    from: {{db: shop, table: reviews, columns: [product_id], where: {json.dumps(predicate)}}}
    to: {{db: shop, table: products, columns: [id]}}"""
        for i, predicate in enumerate(RENDERED[backend])
    )
    path = tmp_path / "many.yaml"
    path.write_text(f'version: 1\ndatabases:\n  shop: {{url: "{shop.url}"}}\nrules:{rules}\n')
    checked = auditor("check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "OK: " in checked.stdout and checked.stderr == ""
