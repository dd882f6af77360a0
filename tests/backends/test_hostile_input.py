"""Odd identifiers and odd values are audited correctly, on every backend pair."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

import auditor

TABLE = 'Weird "Table"; name'
PARENT = "Select"  # a reserved word
MIXED = "Mixed Case;Col"
BIG = "x" * 1_000_000
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _schemas():
    catalog, reviews = sa.MetaData(), sa.MetaData()
    sa.Table(
        TABLE,
        catalog,
        sa.Column(PARENT, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(MIXED, sa.String(20), primary_key=True),
        sa.Column("e-mail", LONG_TEXT),
    )
    sa.Table(
        "order",  # reserved word
        reviews,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("Parent Id", sa.Integer),
        sa.Column("parent;code", sa.String(20)),
        sa.Column("Copied E-mail", LONG_TEXT),
    )
    parents = [
        {PARENT: 1, MIXED: "a", "e-mail": "emoji 😀@example.com"},
        {PARENT: 2, MIXED: "b", "e-mail": BIG},
        {PARENT: 3, MIXED: "c", "e-mail": "tab\there\x01\x7f@example.com"},
    ]
    children = [
        (1, 1, "a", "EMOJI 😀@example.com"),  # equal under `email`
        (2, 2, "b", BIG),  # 1 MB value, equal
        (3, 3, "c", "tab\there\x01\x7f@example.com"),  # control characters, equal
        (4, 1, None, "x@example.com"),  # NULL in a composite key: not a reference
        (5, None, None, None),
        (6, 9, "z", "y@example.com"),  # orphan
        (7, 2, "b", BIG[:-1] + "y"),  # 1 MB value, one character differs
    ]
    rows = [
        dict(zip(("id", "Parent Id", "parent;code", "Copied E-mail"), c, strict=True))
        for c in children
    ]
    return (catalog, {TABLE: parents}), (reviews, {"order": rows})


def test_quoted_identifiers_and_odd_values(pair, write_config):
    catalog, reviews = pair
    (catalog_md, catalog_rows), (reviews_md, reviews_rows) = _schemas()
    catalog.load(catalog_md, catalog_rows)
    reviews.load(reviews_md, reviews_rows)
    config = {
        "version": 1,
        "databases": {"catalog": {"url": catalog.url}, "reviews": {"url": reviews.url}},
        "rules": [
            {
                "name": "composite",
                "type": "reference",
                "from": {
                    "db": "reviews",
                    "table": "order",
                    "columns": ["Parent Id", "parent;code"],
                },
                "to": {"db": "catalog", "table": TABLE, "columns": [PARENT, MIXED]},
            },
            {
                "name": "copies",
                "type": "pii",
                "source": {"db": "catalog", "table": TABLE, "key": [PARENT]},
                "copy": {"db": "reviews", "table": "order", "key": ["Parent Id"]},
                "fields": [{"source": "e-mail", "copy": "Copied E-mail", "normalize": ["email"]}],
            },
        ],
    }
    result = auditor.run(auditor.load_config(write_config(config)))
    by_rule = {r.name: r for r in result.rules}
    assert [r.error for r in result.rules] == [None, None]
    assert [(f.kind, f.key) for f in by_rule["composite"].findings] == [("orphan", {"id": 6})]
    copies = {(f.kind, f.key["id"], f.field) for f in by_rule["copies"].findings}
    assert copies == {
        ("missing_source", 6, None),
        ("mismatch", 7, "e-mail"),
        ("mismatch", 4, "e-mail"),
    }
    assert len(by_rule["copies"].findings[0].to_dict()["key"]) == 1


def test_latin1_column_with_undefined_bytes(database_factory, write_config):
    maria = database_factory("mariadb")
    maria.execute("CREATE TABLE src (id INT PRIMARY KEY, name VARCHAR(40) CHARACTER SET latin1)")
    maria.execute(
        "CREATE TABLE cpy (id INT PRIMARY KEY, src_id INT, name VARCHAR(40) CHARACTER SET latin1)"
    )
    maria.execute("INSERT INTO src VALUES (1, UNHEX('4A6F81C9')), (2, 'plain')")
    maria.execute("INSERT INTO cpy VALUES (1, 1, UNHEX('4A6F81C9')), (2, 2, UNHEX('8D8F909D'))")
    config = {
        "version": 1,
        "databases": {"m": {"url": maria.url}},
        "rules": [
            {
                "name": "latin1",
                "type": "pii",
                "source": {"db": "m", "table": "src", "key": ["id"]},
                "copy": {"db": "m", "table": "cpy", "key": ["src_id"]},
                "fields": [{"source": "name", "copy": "name", "normalize": ["trim"]}],
            }
        ],
    }
    result = auditor.run(auditor.load_config(write_config(config)))
    rule = result.rules[0]
    assert rule.error is None
    assert [(f.kind, f.key) for f in rule.findings] == [("mismatch", {"id": 2})]
