"""Every dialect difference in one place, keyed by SQLAlchemy dialect name.

Each dialect says how to open a read-only snapshot over SQLAlchemy (control queries, reflection,
point look-ups) and how to stream a SELECT as Arrow record batches through the fastest driver
measured on this kind of machine (see PERF-NOTES): ADBC for PostgreSQL and SQLite, connectorx
for MariaDB/MySQL. Any other dialect falls back to SQLAlchemy's streaming cursor.
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection


class Dialect:
    """The generic behaviour; subclasses override what their backend does differently."""

    name = "generic"
    cast_values_to_text = False
    lookup_chunk = 500  # keys per point look-up statement
    # The fast driver reads ahead on threads of its own, without bound: its batches must be
    # taken as fast as they come (concurrency.read_ahead with overflow).
    pushes = False

    def in_values(self, column: sa.ColumnElement, values: list[Any]) -> sa.ColumnElement:
        """`column IN (values)` with every value a bound parameter."""
        return column.in_(values)

    def selected(self, column: sa.Column, expr: sa.ColumnElement) -> sa.ColumnElement:
        """What the scan and the recheck select for `column` (`expr` is the column itself, or
        trimmed)."""
        return sa.cast(expr, sa.Text) if self.cast_values_to_text else expr

    def engine_kwargs(self, url: URL, timeout_s: int | None) -> dict[str, Any]:
        return {}

    def session_setup(self, timeout_s: int | None, is_mariadb: bool) -> list[str]:
        """Statements run on every new connection before it is used."""
        return []

    def estimate_rows(self, conn: Connection, table: sa.Table) -> int | None:
        return None

    def heap_pages(self, conn: Connection, table: sa.Table) -> int | None:
        """How many pages a table's rows lie in, where a scan can be cut by physical row
        address (PostgreSQL's ctid); None elsewhere (views, other databases)."""
        return None

    def write_access(self, conn: Connection, tables: list[sa.Table]) -> str | None:
        """What this login could change, in words ("is a superuser", "may write to t"), or
        None. auditor never writes and checks its predicates; a read-only login is what makes
        that a guarantee (`check` warns)."""
        return None

    def read_only_login(self, url: URL) -> str:
        """How to make a login that can only read, for the warning."""
        return "connect as a login granted SELECT only"

    def open_reader(self, url: URL, timeout_s: int | None) -> Any:
        """A handle the fast driver's streams share (see Database.warm_up), or None."""
        return None

    def stream(
        self,
        url: URL,
        engine: sa.Engine,
        query: str,
        batch_size: int,
        timeout_s: int | None,
        reader: Any = None,
    ) -> Iterator[pa.RecordBatch]:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).exec_driver_sql(query)
            names = list(result.keys())
            while rows := result.fetchmany(batch_size):
                yield pa.RecordBatch.from_pylist(
                    [dict(zip(names, row, strict=True)) for row in rows]
                )


class PostgreSQL(Dialect):
    name = "postgresql"
    lookup_chunk = 10_000
    # Types ADBC and psycopg hand over in forms that compare: numbers, text (citext and enums
    # too), booleans, dates and times, UUIDs, bytes.
    NATIVE_TYPES = (sa.Integer, sa.Numeric, sa.Float, sa.String, sa.Boolean, sa.Date,
                    sa.DateTime, sa.Time, sa.Uuid, sa.LargeBinary)  # fmt: skip

    def selected(self, column: sa.Column, expr: sa.ColumnElement) -> sa.ColumnElement:
        """Any other type (json, arrays, inet, cidr, macaddr, interval, money, bit, xml,
        geometric, unknown types) is selected in the text form psql shows: ADBC hands most of
        them over as the raw bytes of the wire format and the recheck's psycopg as Python
        objects (a dict for json, a list for an array), so neither would equal a copy kept as
        text ('{x,y}'), or each other. concat() calls the type's output function; a CAST would
        not always (an inet host gains "/32")."""
        if isinstance(column.type, self.NATIVE_TYPES):
            return expr
        return sa.case((expr.is_(None), sa.null()), else_=sa.func.concat(expr))

    def in_values(self, column: sa.ColumnElement, values: list[Any]) -> sa.ColumnElement:
        """`column IN (SELECT unnest(:array))`: one parameter however many keys (IN lists
        cost per key), and a semi-join the planner can hash. `column = ANY(:array)` searched
        the array linearly for every row it filtered: 0.7 s for 10,000 keys against a
        1,000-row table, 83 s against a 200,000-row column without an index (30 ms now).

        Only for integer, text and UUID columns, whose arrays bind exactly; other types (dates,
        numerics) keep the IN list, whose parameters PostgreSQL casts one by one.
        """
        if not isinstance(column.type, sa.Integer | sa.String | sa.Uuid):
            return column.in_(values)
        if isinstance(column.type, sa.Integer) and set(map(type, values)) == {int}:
            # Integers travel as one array literal ('{1,2,3}', a bound text parameter cast to
            # BIGINT[]): psycopg dumps a list element by element in Python, 1.5 ms per
            # thousand keys, a third of a look-up's time.
            literal = sa.bindparam(None, "{" + ",".join(map(str, values)) + "}", sa.Text)
            array: sa.ColumnElement = sa.cast(literal, postgresql.ARRAY(sa.BigInteger))
        else:
            array = sa.bindparam(None, values, type_=postgresql.ARRAY(column.type))
        return column.in_(sa.select(sa.func.unnest(array)))

    @staticmethod
    def _options(timeout_s: int | None) -> str:
        options = (
            "-c default_transaction_read_only=on -c default_transaction_isolation=repeatable\\ read"
        )
        if timeout_s:
            options += f" -c statement_timeout={int(timeout_s) * 1000}"
        return options

    def engine_kwargs(self, url: URL, timeout_s: int | None) -> dict[str, Any]:
        return {"connect_args": {"options": self._options(timeout_s), "connect_timeout": 10}}

    def estimate_rows(self, conn: Connection, table: sa.Table) -> int | None:
        """The planner's own estimate: reltuples scaled to the table's current size.

        A table never analysed (reltuples = -1, e.g. right after a restore) is estimated from
        its size on disk, so a big table is never mistaken for an empty one.
        """
        sql = sa.text(
            "SELECT reltuples, relpages, pg_relation_size(oid) / current_setting('block_size')::int"
            " FROM pg_class WHERE oid = to_regclass(:name) AND relkind IN ('r', 'm', 'p')"
        )
        row = conn.execute(sql, {"name": _quoted_regclass(conn, table)}).first()
        if row is None:
            return None  # a view: no estimate
        tuples, pages, current_pages = row
        if tuples >= 0 and pages > 0:
            return int(tuples / pages * current_pages)
        return (
            int(current_pages * ROWS_PER_PAGE_GUESS)
            if current_pages
            else (0 if tuples == 0 else None)
        )

    def heap_pages(self, conn: Connection, table: sa.Table) -> int | None:
        """Pages of a plain table or materialised view (a partitioned parent has none)."""
        sql = sa.text(
            "SELECT pg_relation_size(oid) / current_setting('block_size')::int"
            " FROM pg_class WHERE oid = to_regclass(:name) AND relkind IN ('r', 'm')"
        )
        pages = conn.execute(sql, {"name": _quoted_regclass(conn, table)}).scalar()
        return None if pages is None else int(pages)

    def write_access(self, conn: Connection, tables: list[sa.Table]) -> str | None:
        superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        if conn.exec_driver_sql(superuser).scalar():
            return "is a superuser"
        query = sa.text(
            "SELECT has_table_privilege(to_regclass(:name), 'INSERT, UPDATE, DELETE, TRUNCATE')"
        )
        writable = [
            table.name
            for table in tables
            if conn.execute(query, {"name": _quoted_regclass(conn, table)}).scalar()
        ]
        return f"may write to {', '.join(writable)}" if writable else None

    def read_only_login(self, url: URL) -> str:
        return (
            "CREATE ROLE auditor_ro LOGIN PASSWORD '...'; "
            f"GRANT CONNECT ON DATABASE {url.database} TO auditor_ro; "
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO auditor_ro"
        )

    def open_reader(self, url: URL, timeout_s: int | None) -> Any:
        """An ADBC database handle with one idle connection: opening the first connection
        loads the server's type catalogue (about 80 ms here) into the handle, and every later
        connection shares it (4 ms each)."""
        import adbc_driver_postgresql

        return _AdbcHandle(adbc_driver_postgresql.connect(self._uri(url, timeout_s)))

    def _uri(self, url: URL, timeout_s: int | None) -> str:
        params = {**url.query, "options": self._options(timeout_s)}
        base = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
        return f"{base}?{urlencode(params, doseq=True, quote_via=quote)}"  # libpq wants %20, not +

    def stream(self, url, engine, query, batch_size, timeout_s, reader=None):
        import adbc_driver_postgresql

        hint = {"adbc.postgresql.batch_size_hint_bytes": str(max(batch_size, 1024) * 64)}
        if reader is not None:
            yield from reader.stream(query, hint)
            return
        with _AdbcHandle(adbc_driver_postgresql.connect(self._uri(url, timeout_s))) as own:
            yield from own.stream(query, hint)


class MySQL(Dialect):
    name = "mysql"
    lookup_chunk = 2_000
    pushes = True  # connectorx

    def session_setup(self, timeout_s: int | None, is_mariadb: bool) -> list[str]:
        statements = [
            "SET SESSION TRANSACTION READ ONLY",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        ]
        if timeout_s:
            if is_mariadb:
                statements.append(f"SET SESSION max_statement_time = {int(timeout_s)}")
            else:
                statements.append(f"SET SESSION max_execution_time = {int(timeout_s) * 1000}")
        return statements

    def engine_kwargs(self, url: URL, timeout_s: int | None) -> dict[str, Any]:
        return {"connect_args": {"connect_timeout": 10, "charset": "utf8mb4"}}

    def estimate_rows(self, conn: Connection, table: sa.Table) -> int | None:
        sql = sa.text(
            "SELECT table_rows FROM information_schema.tables "
            "WHERE table_schema = COALESCE(:schema, DATABASE()) AND table_name = :name"
        )
        value = conn.execute(sql, {"schema": table.schema, "name": table.name}).scalar()
        return None if value is None else int(value)

    def write_access(self, conn: Connection, tables: list[sa.Table]) -> str | None:
        """From the grants information_schema shows this login (global, database, table);
        grants through a role are not followed."""
        user, _, host = str(conn.exec_driver_sql("SELECT CURRENT_USER()").scalar()).rpartition("@")
        grantee = f"'{user}'@'{host}'"
        grants = sa.text(
            "SELECT privilege_type FROM information_schema.user_privileges WHERE grantee = :g"
        )
        granted = {row[0] for row in conn.execute(grants, {"g": grantee})}
        if "SUPER" in granted:
            return "has the SUPER privilege"
        writes = {"INSERT", "UPDATE", "DELETE", "DROP", "ALTER"}
        if granted & writes:
            return f"may write to every table ({', '.join(sorted(granted & writes))})"
        scoped = sa.text(
            "SELECT table_name, privilege_type FROM information_schema.table_privileges "
            "WHERE grantee = :g AND table_schema = COALESCE(:schema, DATABASE()) "
            "UNION SELECT NULL, privilege_type FROM information_schema.schema_privileges "
            "WHERE grantee = :g AND table_schema = COALESCE(:schema, DATABASE())"
        )
        writable: set[str] = set()
        for table in tables:
            rows = conn.execute(scoped, {"g": grantee, "schema": table.schema})
            if any(kind in writes and name in (None, table.name) for name, kind in rows):
                writable.add(table.name)
        return f"may write to {', '.join(sorted(writable))}" if writable else None

    def read_only_login(self, url: URL) -> str:
        return (
            "CREATE USER 'auditor_ro'@'%' IDENTIFIED BY '...'; "
            f"GRANT SELECT ON {url.database or '<database>'}.* TO 'auditor_ro'@'%'"
        )

    def stream(self, url, engine, query, batch_size, timeout_s, reader=None):
        import connectorx as cx

        host = url.host or "127.0.0.1"
        if host == "localhost":
            host = "127.0.0.1"  # connectorx needs TCP
        auth = quote(url.username or "", safe="")
        if url.password:
            auth += ":" + quote(str(url.password), safe="")
        conn = f"mysql://{auth}@{host}:{url.port or 3306}/{url.database or ''}"
        if timeout_s:  # connectorx opens its own connection: the limit goes with the statement
            if getattr(engine.dialect, "is_mariadb", False):
                query = f"SET STATEMENT max_statement_time={int(timeout_s)} FOR {query}"
            else:
                query = query.replace(
                    "SELECT", f"SELECT /*+ MAX_EXECUTION_TIME({int(timeout_s) * 1000}) */", 1
                )
        reader = cx.read_sql(conn, query, return_type="arrow_stream", batch_size=batch_size)
        yield from reader


class SQLite(Dialect):
    name = "sqlite"
    # SQLite columns are dynamically typed; text is the one form every stored value has.
    cast_values_to_text = True

    def engine_kwargs(self, url: URL, timeout_s: int | None) -> dict[str, Any]:
        path = url.database or ""

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(sqlite_ro_uri(path), uri=True, check_same_thread=False)

        return {"creator": creator}

    def estimate_rows(self, conn: Connection, table: sa.Table) -> int | None:
        # SQLite keeps no row estimate; a count over the smallest index is cheap enough.
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)

    def stream(self, url, engine, query, batch_size, timeout_s, reader=None):
        import adbc_driver_sqlite

        with _AdbcHandle(adbc_driver_sqlite.connect(sqlite_ro_uri(url.database or ""))) as own:
            yield from own.stream(query, {"adbc.sqlite.query.batch_rows": str(batch_size)})


class _AdbcHandle:
    """An ADBC database handle used through the driver manager's own API, not its DB-API
    layer (whose import pulls in pyarrow.dataset and probes for pandas and polars: 90 ms of
    start-up here).

    It keeps one idle connection, so driver state loaded on the first connect (PostgreSQL's
    type catalogue) is loaded once. Each stream has a connection of its own in autocommit
    mode: its one statement is its own transaction, hence one snapshot.
    """

    def __init__(self, database: Any) -> None:
        from adbc_driver_manager import AdbcConnection

        self._database = database
        try:
            self._idle = AdbcConnection(database)
        except BaseException:
            database.close()
            raise

    def stream(self, query: str, options: dict[str, str]) -> Iterator[pa.RecordBatch]:
        from adbc_driver_manager import AdbcConnection, AdbcStatement

        with AdbcConnection(self._database) as conn, AdbcStatement(conn) as statement:
            statement.set_options(**options)
            statement.set_sql_query(query)
            handle, _ = statement.execute_query()
            reader = pa.RecordBatchReader.from_stream(handle)
            try:
                yield from reader
            finally:
                reader.close()  # before its statement and connection close

    def close(self) -> None:
        self._idle.close()
        self._database.close()

    def __enter__(self) -> _AdbcHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def literal_sql(statement: sa.ClauseElement, dialect: sa.Dialect) -> str:
    """`statement` with its values as the dialect writes literals: for the fast drivers, which
    run text as it is, and for files a person runs. Compiled under the `named` paramstyle: a
    pyformat driver's `%%` for each `%` must not reach the text (a `where` of `code = '50%'`
    would match '50%%'; a table named `t%` would not be found)."""
    named = copy.copy(dialect)
    named.paramstyle, named.positional = "named", False
    named.identifier_preparer = named.preparer(named)
    return str(statement.compile(dialect=named, compile_kwargs={"literal_binds": True}))


def sqlite_ro_uri(path: str) -> str:
    return f"file:{quote(path)}?mode=ro"


ROWS_PER_PAGE_GUESS = 80  # 8 kB pages of ~100-byte rows


def _quoted_regclass(conn: Connection, table: sa.Table) -> str:
    preparer = conn.dialect.identifier_preparer
    quoted = preparer.quote(table.name)
    return f"{preparer.quote(table.schema)}.{quoted}" if table.schema else quoted


_DIALECTS: dict[str, Dialect] = {d.name: d for d in (PostgreSQL(), MySQL(), SQLite())}
_DIALECTS["mariadb"] = _DIALECTS["mysql"]


def for_url(url: URL) -> Dialect:
    return _DIALECTS.get(url.get_backend_name(), Dialect())
