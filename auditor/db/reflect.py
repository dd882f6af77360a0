"""Reflection: tables, columns, key-like indexes and row estimates. Reads no data rows."""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from auditor.db.engines import Database
from auditor.errors import ConfigError

Category = Literal["int", "string", "uuid", "other"]


@dataclass(frozen=True)
class TableInfo:
    """What a rule needs to know about one table (or view)."""

    db: str
    table: sa.Table
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] | None  # None: not reflected (an audit needs none)
    estimated_rows: int | None

    @property
    def label(self) -> str:
        return f"{self.db}.{self.table.name}"

    def column(self, name: str) -> sa.Column:
        """Exact name first; a unique case-insensitive match second (MariaDB/SQLite fold case)."""
        if name in self.table.c:
            return self.table.c[name]
        folded = [c for c in self.table.c if c.name.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
        close = difflib.get_close_matches(name, [c.name for c in self.table.c], n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ConfigError(f"column {self.label}.{name} does not exist{hint}")

    def has_index_on(self, columns: list[str]) -> bool:
        """True when some index (or the primary key) starts with exactly these columns."""
        assert self.indexes is not None, "reflect_table(..., indexes=True) first"
        wanted = tuple(c.lower() for c in columns)
        candidates = [self.primary_key, *self.indexes]
        return any(tuple(c.lower() for c in idx[: len(wanted)]) == wanted for idx in candidates)


def category(column: sa.Column) -> Category:
    """Classify a column's type for key comparison."""
    kind = column.type
    if isinstance(kind, sa.Integer):
        return "int"
    if isinstance(kind, sa.Uuid) or type(kind).__name__.upper() == "UUID":
        return "uuid"
    if isinstance(kind, sa.String | sa.Enum):
        return "string"
    if isinstance(kind, sa.Numeric) and getattr(kind, "scale", None) == 0:
        return "int"
    return "other"


def unsigned_64(column: sa.Column) -> bool:
    """BIGINT UNSIGNED (MariaDB/MySQL): values up to 2**64 - 1, beyond a signed 64-bit key."""
    return isinstance(column.type, sa.BigInteger) and bool(getattr(column.type, "unsigned", False))


def reflect_table(
    database: Database, conn: Connection, name: str, indexes: bool = False
) -> TableInfo:
    """Reflect one table or view; a missing one is a config error with close names.

    Only columns, primary key and the row estimate, unless `indexes` (for `auditor check`,
    which reports whether look-ups have an index).
    """
    schema = database.schema
    inspector = sa.inspect(conn)
    try:
        table = _find_table(conn, name, schema)
    except sa.exc.NoSuchTableError:
        known = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ConfigError(f"table {database.name}.{name} does not exist{hint}") from None
    primary_key = tuple(c.name for c in table.primary_key.columns)
    found: list[tuple[str, ...]] | None = None
    if indexes:
        found = [tuple(c for c in idx["column_names"] if c) for idx in _indexes(inspector, table)]
        if _is_table(inspector, table):
            uniques = inspector.get_unique_constraints(table.name, schema=table.schema)
            found += [tuple(u["column_names"]) for u in uniques]
    return TableInfo(
        db=database.name,
        table=table,
        primary_key=primary_key,
        indexes=None if found is None else tuple(found),
        estimated_rows=database.dialect.estimate_rows(conn, table),
    )


def _find_table(conn: Connection, name: str, schema: str | None) -> sa.Table:
    """The table as named; failing that, `schema.table` written in one name."""
    try:
        return _table(conn, name, schema)
    except sa.exc.NoSuchTableError:
        if schema is None and "." in name:
            qualifier, _, bare = name.partition(".")
            return _table(conn, bare, qualifier)
        inspector = sa.inspect(conn)
        known = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
        folded = [t for t in known if t.lower() == name.lower()]
        if len(folded) == 1:  # `Orders` for a table created unquoted as orders
            return _table(conn, folded[0], schema)
        raise


def _base_type(kind: sa.types.TypeEngine) -> sa.types.TypeEngine:
    """A PostgreSQL domain as the type it is defined on (a domain over integer keys is an
    integer key, and reads as one)."""
    while isinstance(kind, postgresql.DOMAIN):
        kind = kind.data_type
    return kind


def _table(conn: Connection, name: str, schema: str | None) -> sa.Table:
    """Columns and primary key only, through the Inspector: two catalog queries where a full
    autoload runs eight (foreign keys, indexes, constraints, comments), 58 -> ~20 ms a table
    on PostgreSQL. Foreign keys are not followed: they would lead to tables the audit does not
    read, and that the audit user may not be allowed to read."""
    inspector = sa.inspect(conn)
    with warnings.catch_warnings():
        # A type SQLAlchemy does not know (MariaDB's inet6, PostgreSQL's xml) is read as text
        # anyway; its "Did not recognize type" warning would only clutter the report.
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        columns = inspector.get_columns(name, schema=schema)  # NoSuchTableError when missing
    key = inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
    table = sa.Table(
        name,
        sa.MetaData(),
        *(
            sa.Column(c["name"], _base_type(c["type"]), nullable=c.get("nullable", True))
            for c in columns
        ),
        schema=schema,
    )
    if key:
        table.append_constraint(sa.PrimaryKeyConstraint(*key))  # the constraint's column order
    return table


def _is_table(inspector: sa.Inspector, table: sa.Table) -> bool:
    return table.name in inspector.get_table_names(schema=table.schema)


def _indexes(inspector: sa.Inspector, table: sa.Table) -> list[Any]:
    if not _is_table(inspector, table):
        return []
    return list(inspector.get_indexes(table.name, schema=table.schema))
