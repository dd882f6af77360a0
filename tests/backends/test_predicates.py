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

    ran = auditor("run", config, "-q", "--json", str(tmp_path / "out.json"))
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
    ran = auditor("run", config, "-q", "--json", str(tmp_path / "out.json"))
    assert ran.returncode == 2, ran.stderr
    assert "typo.yaml:15: rules[1].from.where: " in ran.stderr and "integer" in ran.stderr
    report = (tmp_path / "out.json").read_text()
    assert "secret-status-value" not in ran.stderr + report
