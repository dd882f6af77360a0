"""Changes -> guarded SQL statements in the database's own dialect, rendered or applied.

Every statement repeats the values the audit-time re-read saw (`WHERE id = 7 AND product_id =
9004`): a re-run changes nothing, and a row a concurrent writer changed is left alone. Rows go
`BATCH` to a statement: joined to one JSON value of typed rows on PostgreSQL (see
_joined_rows), a `CASE` on the row key under a row-value `IN` elsewhere. Values are bound, or
rendered as literals by SQLAlchemy's dialect (quotes, backslashes under MariaDB's escapes),
never pasted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.sql.dml import UpdateBase

from auditor.db.dialects import literal_sql
from auditor.db.engines import (
    DEFAULT_DRIVERS,
    Database,
    reason,
    redact,
    scrub,
    without_values,
)
from auditor.errors import ConfigError, DatabaseError
from auditor.fix.changes import Change

BATCH = 1_000


@dataclass(frozen=True)
class Target:
    """The table a rule's changes go to, and the columns that name its rows."""

    database: Database
    table: sa.Table
    labels: tuple[str, ...]

    @property
    def backend(self) -> str:
        return self.database.url.get_backend_name()


def batches(changes: Sequence[Change]) -> Iterator[list[Change]]:
    """Changes of one action on the same columns, BATCH at a time, in the order given."""
    groups: dict[tuple[str, tuple[str, ...]], list[Change]] = {}
    for change in changes:
        groups.setdefault((change.action, change.columns), []).append(change)
    for group in groups.values():
        for start in range(0, len(group), BATCH):
            yield group[start : start + BATCH]


def statement(target: Target, changes: list[Change]) -> UpdateBase:
    """One guarded statement for changes of one action on the same columns."""
    table = target.table
    first = changes[0]
    if target.backend == "postgresql":
        rows, matched = _joined_rows(target, changes)
        if first.action == "delete":
            return sa.delete(table).where(*matched)
        assignments = {name: rows.c[f"n{i}"] for i, name in enumerate(first.columns)}
        return sa.update(table).values(assignments).where(*matched)
    if first.action == "delete":
        return sa.delete(table).where(_guard(target, changes))
    labels = [table.c[n] for n in target.labels]
    assignments = {}
    for index, name in enumerate(first.columns):
        column = table.c[name]
        whens = [
            (_row(labels, change.key), _literal(column, (change.new or ())[index]))
            for change in changes
        ]
        assignments[name] = sa.case(*whens, else_=column)
    return sa.update(table).where(_guard(target, changes)).values(assignments)


def undo_statements(target: Target, changes: list[Change], rows: list[dict[str, Any]]):
    """What puts back `changes` applied to `rows` (the rows as they were, whole for a
    delete): an insert that skips rows present again, or the reverse update, guarded by the
    value written."""
    if changes[0].action == "delete":
        if rows:
            yield _insert_missing(target, rows)
        return
    reverse = [
        Change(c.rule, c.kind, "undo", c.key, c.columns, c.new or (), c.old) for c in changes
    ]
    yield statement(target, reverse)


def _joined_rows(target: Target, changes: list[Change]) -> tuple[Any, list[Any]]:
    """PostgreSQL: the batch as one JSON value turned into typed rows (`jsonb_to_recordset(...)
    AS fix(k0 BIGINT, o0 BIGINT, n0 BIGINT)`), and the conditions joining them to the table's
    rows that still hold the old values. One literal a batch, however many rows: rendering
    1,000 rows as a VALUES list took SQLAlchemy 70 ms, a join on them is a hash join."""
    table = target.table
    first = changes[0]
    columns = [(f"k{i}", table.c[n]) for i, n in enumerate(target.labels)]
    columns += [(f"o{i}", table.c[n]) for i, n in enumerate(first.columns)]
    if first.new is not None:
        columns += [(f"n{i}", table.c[n]) for i, n in enumerate(first.columns)]
    names = [name for name, _ in columns]
    data = [dict(zip(names, (*c.key, *c.old, *(c.new or ())), strict=True)) for c in changes]
    text = json.dumps(data, ensure_ascii=False, default=_json_value, separators=(",", ":"))
    rows = (
        sa.func.jsonb_to_recordset(sa.cast(sa.literal(text, sa.Text), JSONB))
        .table_valued(*(sa.column(name, _record_type(c)) for name, c in columns))
        .render_derived(name="fix", with_types=True)
    )
    matched = [table.c[n] == rows.c[f"k{i}"] for i, n in enumerate(target.labels)]
    matched += [
        table.c[n].is_not_distinct_from(rows.c[f"o{i}"]) for i, n in enumerate(first.columns)
    ]
    return rows, matched


def _record_type(column: sa.Column) -> Any:
    """The column's own type for the record (a type SQLAlchemy did not recognise: text)."""
    return sa.Text() if isinstance(column.type, sa.types.NullType) else column.type


def _json_value(value: Any) -> Any:
    """A value JSON has no form for, as the text PostgreSQL reads back into its type."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)  # UUID, Decimal


def _guard(target: Target, changes: list[Change]) -> sa.ColumnElement[bool]:
    """Rows named by their keys that still hold the old values: a row-value IN, and a
    condition of its own for each row whose old value is NULL."""
    table = target.table
    columns = [table.c[n] for n in (*target.labels, *changes[0].columns)]
    rows = [(*c.key, *c.old) for c in changes]
    plain = [row for row in rows if None not in row]
    conditions: list[sa.ColumnElement[bool]] = []
    if plain and len(columns) == 1:
        conditions.append(columns[0].in_([row[0] for row in plain]))
    elif plain:
        conditions.append(sa.tuple_(*columns).in_(plain))
    conditions += [_row(columns, row) for row in rows if None in row]
    return sa.or_(*conditions)


def _row(columns: Sequence[sa.Column], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    return sa.and_(
        *(
            column.is_(None) if value is None else column == _literal(column, value)
            for column, value in zip(columns, values, strict=True)
        )
    )


def _literal(column: sa.Column, value: Any) -> sa.ColumnElement:
    return sa.null() if value is None else sa.literal(value, column.type)


def _insert_missing(target: Target, rows: list[dict[str, Any]]) -> UpdateBase:
    """INSERT the rows unless their key is present (a second undo changes nothing)."""
    table = target.table
    if target.backend == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(rows).on_conflict_do_nothing()
    if target.backend == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).values(rows).on_conflict_do_nothing()
    return sa.insert(table).values(rows).prefix_with("IGNORE")


def render(statement_: UpdateBase, dialect: sa.Dialect) -> str:
    """A statement with its values as the dialect writes literals, for a file a person runs."""
    return literal_sql(statement_, dialect) + ";"


def begin(target: Target) -> str:
    """How a file opens its transaction; a MariaDB client is also told the file is UTF-8 (its
    own default may be latin1 or 3-byte utf8, which would mangle or refuse an emoji)."""
    if target.backend in ("mysql", "mariadb"):
        return "SET NAMES utf8mb4;\nSTART TRANSACTION;"
    return "BEGIN;"


def locked_rows(conn: Connection, target: Target, changes: list[Change]) -> list[dict[str, Any]]:
    """The rows the changes will touch, read and (where the backend can) locked inside the
    write transaction: whole rows for a delete (its undo inserts them again)."""
    table = target.table
    if changes[0].action == "delete":
        columns = list(table.c)
    else:
        columns = [table.c[n] for n in (*target.labels, *changes[0].columns)]
    if target.backend == "postgresql":
        _rows, matched = _joined_rows(target, changes)
        query = sa.select(*columns).where(*matched).with_for_update(of=table)
    else:
        query = sa.select(*columns).where(_guard(target, changes))
    if target.backend not in ("sqlite", "postgresql"):  # SQLite: the transaction holds the file
        query = query.with_for_update()
    return [dict(row) for row in conn.execute(query).mappings()]


def key_of(target: Target, row: dict[str, Any]) -> tuple[str, ...]:
    """A row's key as text: how a read row is matched to the change that named it."""
    return tuple(str(row[n]) for n in target.labels)


@dataclass(frozen=True)
class Writer:
    """A database's writable engine (from `fix_url`) and how messages name it."""

    database: Database
    engine: sa.Engine
    url: URL

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection; failing to connect names the database, never the password (exit 3)."""
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise DatabaseError(self.failure("cannot connect with", exc)) from None
        try:
            yield conn
        finally:
            conn.close()

    def failure(self, what: str, exc: BaseException) -> str:
        """The driver's reason without the URL's secrets, nor a data value it quotes (a
        duplicate key's value)."""
        name = self.database.name
        known = " ".join(str(p) for p in (self.url.username, self.url.host, self.url.database) if p)
        said = without_values(scrub(reason(exc), self.url), known)
        return f"{what} the fix_url of database {name!r} ({redact(self.url)}): {said}"


def writer(database: Database, fix_url: str | None, name: str) -> Writer:
    """An engine on the database's writable `fix_url`; the audit's own URL stays read-only."""
    if not fix_url:
        raise ConfigError(
            f"databases.{name}.fix_url is needed to apply changes to {name!r} (a login that may "
            "write; the audit's url stays read-only)"
        )
    try:
        url = make_url(fix_url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"databases.{name}.fix_url: not a valid database URL") from None
    url = url.set(drivername=DEFAULT_DRIVERS.get(url.drivername, url.drivername))
    if url.get_backend_name() != database.url.get_backend_name():
        raise ConfigError(
            f"databases.{name}.fix_url is {url.get_backend_name()}, its url "
            f"{database.url.get_backend_name()}: both must name the same database"
        )
    connect_args = {} if url.get_backend_name() == "sqlite" else {"connect_timeout": 10}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
    if url.get_backend_name() == "sqlite":
        _immediate_transactions(engine)
    return Writer(database, engine, url)


def _immediate_transactions(engine: sa.Engine) -> None:
    """SQLite: each transaction takes the write lock as it begins (BEGIN IMMEDIATE), so the
    rows read to guard and undo a batch cannot change before the batch writes."""

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")
