"""Column types that differ across backends compare by value, not by their text form."""

from __future__ import annotations

import datetime as dt
import decimal
import warnings

import pytest
import sqlalchemy as sa

import auditor
from auditor.engine import RunOptions

pytestmark = pytest.mark.usefixtures("strategy")


def _tables():
    source, copy = sa.MetaData(), sa.MetaData()
    sa.Table(
        "accounts",
        source,
        sa.Column("code", sa.CHAR(10), primary_key=True),  # blank-padded on PostgreSQL
        sa.Column("opened", sa.DateTime),
        sa.Column("balance", sa.Numeric(10, 2)),
        sa.Column("born", sa.Date),
        sa.Column("vip", sa.Boolean),  # boolean on PostgreSQL, TINYINT(1) on MariaDB, 0/1 in SQLite
        sa.Column("at", sa.Time),  # text in SQLite
    )
    sa.Table(
        "statements",
        copy,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(10)),
        sa.Column("opened", sa.DateTime),
        sa.Column("balance", sa.Numeric(10, 2)),
        sa.Column("born", sa.Date),
        sa.Column("vip", sa.Boolean),
        sa.Column("at", sa.Time),
    )
    when = dt.datetime(2024, 5, 6, 7, 8, 9)
    accounts = [
        {
            "code": "AB1",
            "opened": when,
            "balance": decimal.Decimal("10.50"),
            "born": dt.date(1990, 1, 2),
            "vip": True,
            "at": dt.time(12, 34, 56),
        },
        {
            "code": "CD22",
            "opened": when,
            "balance": decimal.Decimal("0.00"),
            "born": dt.date(1991, 3, 4),
            "vip": False,
            "at": dt.time(8, 0, 1),
        },
    ]
    statements = [
        {
            "id": 1,
            "account": "AB1",
            "opened": when,
            "balance": decimal.Decimal("10.50"),
            "born": dt.date(1990, 1, 2),
            "vip": True,
            "at": dt.time(12, 34, 56),
        },
        {
            "id": 2,
            "account": "CD22",
            "opened": when + dt.timedelta(seconds=1),
            "balance": decimal.Decimal("0.01"),
            "born": dt.date(1991, 3, 4),
            "vip": True,
            "at": dt.time(8, 0, 1),
        },
        {
            "id": 3,
            "account": "ZZ9",
            "opened": when,
            "balance": None,
            "born": None,
            "vip": None,
            "at": None,
        },  # fmt: skip
    ]
    return (source, {"accounts": accounts}), (copy, {"statements": statements})


def test_char_keys_timestamps_decimals_dates(pair, write_config):
    catalog, reviews = pair
    (source_md, source_rows), (copy_md, copy_rows) = _tables()
    catalog.load(source_md, source_rows)
    reviews.load(copy_md, copy_rows)
    fields = [{"source": name, "copy": name} for name in ("opened", "balance", "born", "vip", "at")]
    config = {
        "version": 1,
        "databases": {"a": {"url": catalog.url}, "b": {"url": reviews.url}},
        "rules": [
            {
                "name": "statements",
                "type": "pii",
                "source": {"db": "a", "table": "accounts", "key": ["code"]},
                "copy": {"db": "b", "table": "statements", "key": ["account"]},
                "fields": fields,
            },
            {
                "name": "statement-accounts",
                "type": "reference",
                "from": {"db": "b", "table": "statements", "columns": ["account"]},
                "to": {"db": "a", "table": "accounts", "columns": ["code"]},
            },
        ],
    }
    result = auditor.run(auditor.load_config(write_config(config)), show_pii=True)
    assert [r.error for r in result.rules] == [None, None]
    pii, reference = result.rules
    assert {(f.kind, f.key["id"], f.field) for f in pii.findings} == {
        ("mismatch", 2, "opened"),
        ("mismatch", 2, "balance"),
        ("mismatch", 2, "vip"),
        ("missing_source", 3, None),
    }
    assert [(f.kind, f.key) for f in reference.findings] == [("orphan", {"id": 3})]


def test_schema_qualified_table_name(database_factory, write_config):
    db = database_factory("postgresql")
    db.execute("CREATE SCHEMA shop")
    db.execute("CREATE TABLE shop.products (id int PRIMARY KEY)")
    db.execute("CREATE TABLE shop.reviews (id int PRIMARY KEY, product_id int)")
    db.execute("INSERT INTO shop.products VALUES (1)")
    db.execute("INSERT INTO shop.reviews VALUES (1, 1), (2, 2)")
    rule = {
        "name": "r",
        "type": "reference",
        "from": {"db": "d", "table": "shop.reviews", "columns": ["product_id"]},
        "to": {"db": "d", "table": "shop.products", "columns": ["id"]},
    }
    config = {"version": 1, "databases": {"d": {"url": db.url}}, "rules": [rule]}
    result = auditor.run(auditor.load_config(write_config(config)))
    assert [(f.kind, f.key) for f in result.rules[0].findings] == [("orphan", {"id": 2})]


def test_look_ups_by_date_and_numeric_keys(database_factory, write_config):
    """The recheck reads rows back by keys of any type, not only integers and text."""
    for backend in ("postgresql", "mariadb"):
        db = database_factory(backend)
        db.execute("CREATE TABLE days (day date PRIMARY KEY, amount numeric(12, 2))")
        db.execute(
            "CREATE TABLE bookings (booked date PRIMARY KEY, day date, amount numeric(12, 2))"
        )
        db.execute("INSERT INTO days VALUES ('2024-01-01', 1.50), ('2024-01-02', 2.00)")
        db.execute(
            "INSERT INTO bookings VALUES ('2024-02-01', '2024-01-01', 1.50), "
            "('2024-02-02', '2024-01-02', 2.50), ('2024-02-03', '2024-01-09', 1.00)"
        )
        config = {
            "version": 1,
            "databases": {"d": {"url": db.url}},
            "rules": [
                {
                    "name": "bookings",
                    "type": "pii",
                    "source": {"db": "d", "table": "days", "key": ["day"]},
                    "copy": {"db": "d", "table": "bookings", "key": ["day"]},
                    "fields": [{"source": "amount", "copy": "amount"}],
                }
            ],
        }
        result = auditor.run(auditor.load_config(write_config(config, f"{backend}.yaml")))
        rule = result.rules[0]
        assert rule.error is None, (backend, rule.error)
        assert {(f.kind, f.key["booked"]) for f in rule.findings} == {
            ("mismatch", "2024-02-02"),
            ("missing_source", "2024-02-03"),
        }, backend


def test_plain_driver_urls_and_table_name_case(database_factory, write_config):
    """`postgresql://` and `mysql://` URLs work; `Products` finds a table created as products."""
    for backend, scheme in (("postgresql", "postgresql"), ("mariadb", "mysql")):
        db = database_factory(backend)
        db.execute("CREATE TABLE products (id int PRIMARY KEY)")
        db.execute("CREATE TABLE reviews (id int PRIMARY KEY, product_id int)")
        db.execute("INSERT INTO reviews VALUES (1, 7)")
        url = sa.make_url(db.url).set(drivername=scheme).render_as_string(hide_password=False)
        rule = {
            "name": "r",
            "type": "reference",
            "from": {"db": "d", "table": "Reviews", "columns": ["product_id"]},
            "to": {"db": "d", "table": "PRODUCTS", "columns": ["id"]},
        }
        config = {"version": 1, "databases": {"d": {"url": url}}, "rules": [rule]}
        result = auditor.run(auditor.load_config(write_config(config, f"{backend}.yaml")))
        assert result.rules[0].error is None, result.rules[0].error
        assert [(f.kind, f.key) for f in result.rules[0].findings] == [("orphan", {"id": 1})]


def test_self_reference_within_one_table(pair, write_config):
    """employees.manager_id -> employees.id: both sides are the same table."""
    db = pair[0]
    md = sa.MetaData()
    sa.Table(
        "employees",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("manager_id", sa.Integer),
    )
    db.load(
        md,
        {
            "employees": [
                {"id": 1, "manager_id": None},
                {"id": 2, "manager_id": 1},
                {"id": 3, "manager_id": 9},
            ]
        },
    )
    rule = {
        "name": "managers",
        "type": "reference",
        "from": {"db": "d", "table": "employees", "columns": ["manager_id"]},
        "to": {"db": "d", "table": "employees", "columns": ["id"]},
    }
    config = {"version": 1, "databases": {"d": {"url": db.url}}, "rules": [rule]}
    result = auditor.run(auditor.load_config(write_config(config)))
    assert [(f.kind, f.key, f.ref) for f in result.rules[0].findings] == [
        ("orphan", {"id": 3}, {"manager_id": 9})
    ]


@pytest.mark.parametrize("other", ["mariadb", "postgresql", "sqlite"])
def test_bigint_unsigned_keys_beyond_signed_range(database_factory, write_config, other):
    """MariaDB BIGINT UNSIGNED ids up to 2**64 - 1 are referenced and shown exactly; a signed
    database referencing them (its BIGINT stops at 2**63 - 1) still finds its orphans."""
    from sqlalchemy.dialects import mysql

    top, half = 2**64 - 1, 2**63
    catalog, reviews = database_factory("mariadb"), database_factory(other)
    metadata = sa.MetaData()
    sa.Table("products", metadata, sa.Column("id", mysql.BIGINT(unsigned=True), primary_key=True,
                                              autoincrement=False))  # fmt: skip
    catalog.load(metadata, {"products": [{"id": v} for v in (1, half, top)]})
    unsigned = other == "mariadb"
    ref_type = mysql.BIGINT(unsigned=True) if unsigned else sa.BigInteger()
    metadata = sa.MetaData()
    sa.Table("reviews", metadata, sa.Column("id", ref_type, primary_key=True, autoincrement=False),
             sa.Column("product_id", ref_type))  # fmt: skip
    rows = [(1, 1), (2, 5), (3, None)]
    if unsigned:
        rows += [(top, top), (top - 1, top - 1), (half, half)]  # labels beyond 2**63 too
    reviews.load(metadata, {"reviews": [{"id": i, "product_id": p} for i, p in rows]})
    rule = {
        "name": "reviews-products",
        "type": "reference",
        "from": {"db": "reviews", "table": "reviews", "columns": ["product_id"]},
        "to": {"db": "catalog", "table": "products", "columns": ["id"]},
    }
    data = {"version": 1, "rules": [rule],
            "databases": {"catalog": {"url": catalog.url}, "reviews": {"url": reviews.url}}}  # fmt: skip
    (result,) = auditor.run(auditor.load_config(write_config(data))).rules
    assert result.error is None, result.error
    expected = [("orphan", {"id": 2}, {"product_id": 5})]
    if unsigned:
        expected.append(("orphan", {"id": top - 1}, {"product_id": top - 1}))
    assert [(f.kind, f.key, f.ref) for f in result.findings] == expected


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_times_and_timestamps_written_as_text_in_sqlite(database_factory, write_config, server):
    """SQLite keeps TIME/TIMESTAMP as whatever text the writer chose ('T' separator, no
    fraction, a zero fraction); they equal the server's typed values, and a real difference
    still shows."""
    source, copy = database_factory(server), database_factory("sqlite")
    source.execute("CREATE TABLE events (id INT PRIMARY KEY, at TIME, ts TIMESTAMP NULL)")
    source.execute(
        "INSERT INTO events VALUES (1, '12:34:56', '2024-05-06 07:08:09'),"
        " (2, '08:00:00', '2024-05-06 07:08:09'), (3, '09:30:00', '2024-05-06 07:08:10')"
    )
    copy.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TIME, ts TIMESTAMP)")
    copy.execute(
        "INSERT INTO events VALUES (1, '12:34:56', '2024-05-06T07:08:09'),"
        " (2, '08:00:00.000000', '2024-05-06 07:08:09.000'), (3, '09:30:00', '2024-05-06 07:08:09')"
    )
    rule = {
        "name": "events",
        "type": "pii",
        "source": {"db": "s", "table": "events", "key": ["id"]},
        "copy": {"db": "c", "table": "events", "key": ["id"]},
        "fields": [{"source": "at", "copy": "at"}, {"source": "ts", "copy": "ts"}],
    }
    data = {"version": 1, "rules": [rule],
            "databases": {"s": {"url": source.url}, "c": {"url": copy.url}}}  # fmt: skip
    (result,) = auditor.run(auditor.load_config(write_config(data)), show_pii=True).rules
    assert [(f.kind, f.key, f.field, f.source_value, f.copy_value) for f in result.findings] == [
        ("mismatch", {"id": 3}, "ts", "2024-05-06 07:08:10", "2024-05-06 07:08:09")
    ]


def test_postgresql_integer_look_ups_bind_one_array_literal(database_factory):
    """Integer keys are looked up through one text parameter cast to BIGINT[]: any integer
    column matches, keys beyond a SMALLINT's range find nothing instead of failing."""
    from auditor.db.dialects import PostgreSQL

    db = database_factory("postgresql")
    db.execute("CREATE TABLE nums (small smallint, big bigint)")
    db.execute(
        "INSERT INTO nums VALUES (-3, -9223372036854775808), (7, 9223372036854775807), (8, 0)"
    )
    engine = sa.create_engine(db.url)
    try:
        table = sa.Table("nums", sa.MetaData(), autoload_with=engine)
        dialect = PostgreSQL()
        small = dialect.in_values(table.c.small, [-3, 7, 99_999])
        big = dialect.in_values(table.c.big, [-(2**63), 2**63 - 1])
        assert "AS BIGINT[]" in str(small.compile(engine))
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.small).where(small)).scalars()
            assert sorted(rows) == [-3, 7]
            assert sorted(conn.execute(sa.select(table.c.small).where(big)).scalars()) == [-3, 7]
        assert "CAST" not in str(dialect.in_values(table.c.small, [True]).compile(engine))
    finally:
        engine.dispose()


@pytest.mark.parametrize("other", ["sqlite", "postgresql", "mariadb"])
def test_postgresql_uuid_keys_match_their_text_copies_without_the_recheck(
    database_factory, write_config, other
):
    """PostgreSQL's uuid reaches auditor as 16 raw bytes: read as text, no key matched, and
    only the recheck (off here) kept every reference from being reported."""
    products = database_factory("postgresql")
    products.execute("CREATE TABLE products (uid uuid PRIMARY KEY, email text)")
    known = ["0b9f5b4e-6a39-4c1a-9d55-3f1f2d7c8a01", "7d4f1c2a-98e3-4b6f-a1d2-5c3b4a596e02"]
    missing = "ffffffff-0000-4000-8000-000000000003"
    products.execute(
        f"INSERT INTO products VALUES ('{known[0]}', 'a@example.com'), ('{known[1]}', NULL)"
    )
    shares = database_factory(other)
    shares.execute("CREATE TABLE shares (id int PRIMARY KEY, product_uid varchar(36), email text)")
    shares.execute(
        f"INSERT INTO shares VALUES (1, '{known[0].upper()}', 'a@example.com'), "
        f"(2, '{known[1]}', NULL), (3, '{missing}', NULL)"
    )
    rule = {"from": {"db": "s", "table": "shares", "columns": ["product_uid"]},
            "to": {"db": "p", "table": "products", "columns": ["uid"]}}  # fmt: skip
    copy = {"source": {"db": "p", "table": "products", "key": ["uid"]},
            "copy": {"db": "s", "table": "shares", "key": ["product_uid"]},
            "fields": [{"source": "email", "copy": "email"}]}  # fmt: skip
    config = {
        "version": 1,
        "databases": {"p": {"url": products.url}, "s": {"url": shares.url}},
        "rules": [
            {"name": "refs", "type": "reference", "key_type": "uuid", **rule},
            {"name": "copies", "type": "pii", "key_type": "uuid", **copy},
        ],
    }
    result = auditor.run(
        auditor.load_config(write_config(config)), options=RunOptions(recheck=False)
    )
    refs, copies = result.rules
    assert (refs.error, copies.error) == (None, None)
    assert [(f.kind, f.key) for f in refs.findings] == [("orphan", {"id": 3})]
    assert [(f.kind, f.key) for f in copies.findings] == [("missing_source", {"id": 3})]


@pytest.mark.parametrize("recheck", [True, False])
@pytest.mark.parametrize("other", ["sqlite", "postgresql", "mariadb"])
def test_postgresql_network_and_interval_values_compare_as_psql_shows_them(
    database_factory, write_config, other, recheck
):
    """inet, cidr, macaddr and interval reach auditor as wire-format bytes (ADBC) or Python
    objects (the recheck's psycopg); they are read as their text form, which a copy kept as
    text holds. An inet host reads without the "/32" that CAST(... AS TEXT) would add."""
    devices = database_factory("postgresql")
    devices.execute(
        "CREATE TABLE devices (id int PRIMARY KEY, ip inet, net cidr, mac macaddr, up interval)"
    )
    rows = [(1, "10.0.0.1", "10.0.0.0/8", "08:00:2b:01:02:03", "1 day 02:00:00"),
            (2, "192.168.1.5", "192.168.0.0/16", "08:00:2b:01:02:04", "00:30:00")]  # fmt: skip
    values = ", ".join(f"({i}, '{a}', '{b}', '{c}', '{d}')" for i, a, b, c, d in rows)
    devices.execute(f"INSERT INTO devices VALUES {values}")
    copies = database_factory(other)
    copies.execute(
        "CREATE TABLE copies (id int PRIMARY KEY, ip varchar(40), net varchar(40),"
        " mac varchar(40), up varchar(40))"
    )
    rows[1] = (2, "192.168.1.6", *rows[1][2:])  # the one drifted copy
    copies.execute(
        "INSERT INTO copies VALUES "
        + ", ".join(f"({i}, '{a}', '{b}', '{c}', '{d}')" for i, a, b, c, d in rows)
    )
    fields = [{"source": name, "copy": name} for name in ("ip", "net", "mac", "up")]
    rule = {"name": "devices", "type": "pii", "fields": fields,
            "source": {"db": "d", "table": "devices", "key": ["id"]},
            "copy": {"db": "c", "table": "copies", "key": ["id"]}}  # fmt: skip
    config = {"version": 1, "databases": {"d": {"url": devices.url}, "c": {"url": copies.url}},
              "rules": [rule]}  # fmt: skip
    path = write_config(config)
    result = auditor.run(auditor.load_config(path), options=RunOptions(recheck=recheck))
    (found,) = result.rules
    assert found.error is None, found.error
    assert [(f.kind, f.key, f.field) for f in found.findings] == [("mismatch", {"id": 2}, "ip")]


def test_floats_equal_their_decimal_copies(pair, write_config):
    """A FLOAT/DOUBLE/REAL value and its copy in a DECIMAL column are one number ('3.0', '3',
    '3.00'); SQLAlchemy 2.1's Float is no Numeric, so it is named on its own."""
    source, copy = pair
    floats, decimals = sa.MetaData(), sa.MetaData()
    sa.Table("prices", floats, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("amount", sa.Float))  # fmt: skip
    sa.Table("copies", decimals, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("amount", sa.Numeric(10, 2)))  # fmt: skip
    amounts = [3.0, 10.5, 2.25]
    source.load(floats, {"prices": [{"id": i, "amount": a} for i, a in enumerate(amounts)]})
    copied = [decimal.Decimal("3.00"), decimal.Decimal("10.50"), decimal.Decimal("2.50")]
    copy.load(decimals, {"copies": [{"id": i, "amount": a} for i, a in enumerate(copied)]})
    rule = {"name": "prices", "type": "pii", "fields": [{"source": "amount", "copy": "amount"}],
            "source": {"db": "a", "table": "prices", "key": ["id"]},
            "copy": {"db": "b", "table": "copies", "key": ["id"]}}  # fmt: skip
    config = {"version": 1, "databases": {"a": {"url": source.url}, "b": {"url": copy.url}},
              "rules": [rule]}  # fmt: skip
    result = auditor.run(auditor.load_config(write_config(config)), show_pii=True)
    (found,) = result.rules
    assert found.error is None, found.error
    assert [(f.kind, f.key, f.source_value, f.copy_value) for f in found.findings] == [
        ("mismatch", {"id": 2}, "2.25", "2.5")
    ]


def test_types_sqlalchemy_does_not_know_are_read_as_text_without_warnings(
    database_factory, write_config
):
    """PostgreSQL's xml and point, MariaDB's inet6: compared in their text form, and the
    reflection's "Did not recognize type" warnings stay out of the output."""
    pg = database_factory("postgresql")
    pg.execute("CREATE TABLE docs (id int PRIMARY KEY, body xml, at point)")
    pg.execute("INSERT INTO docs VALUES (1, '<a/>', '(1,2)'), (2, '<b/>', '(3,4)')")
    maria = database_factory("mariadb")
    maria.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, at inet6)")
    maria.execute("INSERT INTO docs VALUES (1, '<a/>', '::1'), (2, '<c/>', '::2')")
    copies = database_factory("sqlite")
    copies.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, at text)")
    copies.execute("INSERT INTO docs VALUES (1, '<a/>', '(1,2)'), (2, '<b/>', '::2')")
    fields = [{"source": "body", "copy": "body"}, {"source": "at", "copy": "at"}]
    rules = [{"name": name, "type": "pii", "fields": fields,
              "source": {"db": name, "table": "docs", "key": ["id"]},
              "copy": {"db": "s", "table": "docs", "key": ["id"]}} for name in ("pg", "maria")]  # fmt: skip
    urls = {"pg": pg.url, "maria": maria.url, "s": copies.url}
    config = {"version": 1, "databases": {k: {"url": v} for k, v in urls.items()}, "rules": rules}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = auditor.run(auditor.load_config(write_config(config)))
    assert [str(w.message) for w in caught] == []
    found = {r.name: [(f.key["id"], f.field) for f in r.findings] for r in result.rules}
    assert found == {"pg": [(2, "at")], "maria": [(1, "at"), (2, "body")]}


def test_postgresql_domains_are_their_base_types(database_factory, write_config):
    """An integer key declared with a domain is an integer key (auto key_type), and a text
    domain a text value."""
    db = database_factory("postgresql")
    db.execute("CREATE DOMAIN positive AS integer CHECK (VALUE > 0)")
    db.execute("CREATE DOMAIN address AS text")
    db.execute("CREATE TABLE people (id positive PRIMARY KEY, mail address)")
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, person_id int, mail text)")
    db.execute("INSERT INTO people VALUES (1, 'a@x.org'), (2, 'b@x.org')")
    db.execute("INSERT INTO orders VALUES (1, 1, 'a@x.org'), (2, 3, 'b@x.org'), (3, 2, 'c@x.org')")
    rules = [
        {"name": "refs", "type": "reference",
         "from": {"db": "d", "table": "orders", "columns": ["person_id"]},
         "to": {"db": "d", "table": "people", "columns": ["id"]}},
        {"name": "copies", "type": "pii", "fields": [{"source": "mail", "copy": "mail"}],
         "source": {"db": "d", "table": "people", "key": ["id"]},
         "copy": {"db": "d", "table": "orders", "key": ["person_id"]}},
    ]  # fmt: skip
    config = {"version": 1, "databases": {"d": {"url": db.url}}, "rules": rules}
    result = auditor.run(auditor.load_config(write_config(config)))
    refs, copies = result.rules
    assert (refs.error, copies.error) == (None, None)
    assert [(f.kind, f.key) for f in refs.findings] == [("orphan", {"id": 2})]
    assert sorted((f.kind, f.key["id"]) for f in copies.findings) == [
        ("mismatch", 3),
        ("missing_source", 2),
    ]


@pytest.mark.parametrize("recheck", [True, False])
@pytest.mark.parametrize("other", ["sqlite", "mariadb"])
def test_postgresql_json_and_array_values_compare_in_their_text_form(
    database_factory, write_config, other, recheck
):
    """jsonb and arrays are read in PostgreSQL's text form in the scan and in the recheck alike
    (psycopg would hand the recheck a dict), so a drifted document is confirmed, not lost, and
    an array equals its copy written as PostgreSQL writes it."""
    source = database_factory("postgresql")
    source.execute("CREATE TABLE prefs (id int PRIMARY KEY, doc jsonb, tags text[])")
    source.execute("""INSERT INTO prefs VALUES (1, '{"a": 1}', '{x,y}'), (2, '{"a": 2}', '{z}')""")
    copies = database_factory(other)
    copies.execute("CREATE TABLE prefs (id int PRIMARY KEY, doc text, tags text)")
    copies.execute("""INSERT INTO prefs VALUES (1, '{"a": 1}', '{x,y}'), (2, '{"a": 3}', '{z}')""")
    fields = [{"source": name, "copy": name} for name in ("doc", "tags")]
    rule = {"name": "prefs", "type": "pii", "fields": fields,
            "source": {"db": "p", "table": "prefs", "key": ["id"]},
            "copy": {"db": "c", "table": "prefs", "key": ["id"]}}  # fmt: skip
    config = {"version": 1, "databases": {"p": {"url": source.url}, "c": {"url": copies.url}},
              "rules": [rule]}  # fmt: skip
    options = RunOptions(recheck=recheck)
    result = auditor.run(auditor.load_config(write_config(config)), options=options, show_pii=True)
    (found,) = result.rules
    assert found.error is None, found.error
    assert [(f.key, f.source_value, f.copy_value) for f in found.findings] == [
        ({"id": 2}, '{"a": 2}', '{"a": 3}')
    ]
