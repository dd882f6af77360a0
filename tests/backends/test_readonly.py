"""Never writes: audits succeed as SELECT-only, read-only users, and writes are refused."""

from __future__ import annotations

import os
import stat
import uuid

import sqlalchemy as sa

import auditor
from tests.scenarios import build_pii, build_reference


def _grant_read_only(database, role: str) -> str:
    """A user that can only SELECT (and on PostgreSQL defaults to read-only transactions)."""
    url = sa.make_url(database.url)
    if database.backend == "postgresql":
        with database.engine.begin() as conn:
            conn.execute(sa.text(f"GRANT CONNECT ON DATABASE {url.database} TO {role}"))
            conn.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {role}"))
            conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        return url.set(username=role).render_as_string(hide_password=False)
    if database.backend == "mariadb":
        database.execute(f"GRANT SELECT ON {url.database}.* TO '{role}'@'127.0.0.1'")
        return url.set(username=role, host="127.0.0.1").render_as_string(hide_password=False)
    path = url.database
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return database.url


def _create_role(backend: str, admin, role: str) -> None:
    if backend == "postgresql":
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
    elif backend == "mariadb":
        admin.execute(f"CREATE USER '{role}'@'127.0.0.1'")


def _drop_role(backend: str, databases, role: str) -> None:
    for database in databases:
        if database.backend == "postgresql":
            database.execute(f"DROP OWNED BY {role}")
        if database.backend == "mariadb":
            database.execute(f"DROP USER IF EXISTS '{role}'@'127.0.0.1'")
    pg = [d for d in databases if d.backend == "postgresql"]
    if pg:
        pg[0].execute(f"DROP ROLE IF EXISTS {role}")


def _counts(database) -> dict[str, int]:
    with database.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        return {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in tables}


def test_audit_as_a_select_only_read_only_user(pair, write_config):
    catalog, reviews = pair
    reference = build_reference(catalog, reviews)
    pii = build_pii(catalog, reviews)
    data = {**reference, "rules": reference["rules"] + pii["rules"]}
    data["databases"] = {
        **reference["databases"],
        "crm": reference["databases"]["catalog"],
        "orders": reference["databases"]["reviews"],
    }
    baseline = auditor.run(auditor.load_config(write_config(data, "admin.yaml")))
    role = f"auditor_ro_{uuid.uuid4().hex[:8]}"
    before = {d.backend + str(i): _counts(d) for i, d in enumerate(pair)}
    for backend in {catalog.backend, reviews.backend}:
        _create_role(backend, catalog if catalog.backend == backend else reviews, role)
    try:
        urls = {
            "catalog": _grant_read_only(catalog, role),
            "reviews": _grant_read_only(reviews, role),
        }
        data["databases"] = {
            "catalog": {"url": urls["catalog"]},
            "reviews": {"url": urls["reviews"]},
            "crm": {"url": urls["catalog"]},
            "orders": {"url": urls["reviews"]},
        }
        config = auditor.load_config(write_config(data, "ro.yaml"))
        checked = auditor.check(config)
        result = auditor.run(config)
    finally:
        _drop_role(catalog.backend, pair, role)
    assert len(checked.rules) == len(config.rules) == 9
    assert checked.warnings == ()  # nothing to warn about a login that can only read
    assert {r.type for r in result.rules} == {"reference", "pii"}
    assert [r.error for r in result.rules] == [None] * len(result.rules)
    assert [r.counts for r in result.rules] == [r.counts for r in baseline.rules]
    assert {d.backend + str(i): _counts(d) for i, d in enumerate(pair)} == before


def test_a_writing_where_fragment_fails_and_writes_nothing(pair, write_config):
    catalog, reviews = pair
    data = build_reference(catalog, reviews)
    before = _counts(reviews)
    rule = data["rules"][0]
    if reviews.backend == "postgresql":
        rule["from"]["where"] = (
            "id IN (WITH d AS (DELETE FROM reviews RETURNING id) SELECT id FROM d)"
        )
    else:  # MariaDB and SQLite have no data-modifying CTE; a write inside a subquery is a syntax error
        rule["from"]["where"] = "id IN (DELETE FROM reviews RETURNING id)"
    data["rules"] = [rule]
    result = auditor.run(auditor.load_config(write_config(data)))
    assert result.exit_code in (2, 3) and result.rules[0].status == "error"
    assert result.rules[0].error
    assert _counts(reviews) == before


def test_check_warns_when_the_login_could_write(database_factory, write_config):
    """As a superuser, or as a login granted a write on one audited table, `check` says so
    and how to make a SELECT-only login; SQLite is opened read-only and gets no warning."""
    for backend in ("postgresql", "mariadb"):
        shop = database_factory(backend)
        data = build_reference(shop, shop)
        admin = auditor.check(auditor.load_config(write_config(data, f"{backend}.yaml")))
        assert len(admin.warnings) == 2  # one per configured database
        for warning in admin.warnings:
            assert ("is a superuser" if backend == "postgresql" else "SUPER") in warning
            assert "GRANT SELECT ON" in warning
        role = f"auditor_w_{uuid.uuid4().hex[:8]}"
        _create_role(backend, shop, role)
        try:
            url = _grant_read_only(shop, role)
            table = sa.make_url(shop.url).database + ".products"
            on = "products" if backend == "postgresql" else table
            host = "" if backend == "postgresql" else "@'127.0.0.1'"
            grantee = role if backend == "postgresql" else f"'{role}'"
            shop.execute(f"GRANT UPDATE ON {on} TO {grantee}{host}")
            data["databases"] = {name: {"url": url} for name in data["databases"]}
            writer = auditor.check(auditor.load_config(write_config(data, f"{backend}-w.yaml")))
        finally:
            _drop_role(backend, [shop], role)
        assert len(writer.warnings) == 1
        assert f"{role} may write to products" in writer.warnings[0], writer.warnings
    sqlite = database_factory("sqlite")
    config = auditor.load_config(write_config(build_reference(sqlite, sqlite), "lite.yaml"))
    assert auditor.check(config).warnings == ()
