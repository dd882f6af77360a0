"""One read-only SQLAlchemy engine per configured database, and URL redaction.

Passwords never reach a message: every error names the database by its config name and its
redacted URL, and the driver's reason is scrubbed of the password before it is shown.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from auditor import log
from auditor.config.model import Config, DatabaseConfig
from auditor.db.dialects import Dialect, for_url
from auditor.errors import ConfigError, DatabaseError, E, ResourceError


@dataclass
class Database:
    """A configured database: its engine, dialect quirks and a redacted name for messages."""

    name: str
    url: URL
    schema: str | None
    engine: sa.Engine
    dialect: Dialect
    timeout_s: int | None
    # Why this database cannot be opened at all (a missing SQLite file): raised by the first
    # rule that needs it, so that the other rules still run (each error is named per rule).
    unavailable: DatabaseError | None = None
    _closed: bool = field(default=False, init=False)
    _is_mariadb: bool = field(default=False, init=False)
    _reader: Any = field(default=None, init=False, repr=False)
    _reader_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def redacted(self) -> str:
        return redact(self.url)

    def describe_failure(self, exc: BaseException, statement: str = "") -> str:
        return f"database {self.name!r} ({self.redacted}): {self.reason(exc, statement)}"

    def reason(self, exc: BaseException, statement: str = "") -> str:
        """The driver's first line, safe to show: the URL's secrets scrubbed, and every quoted
        value that is not in the statement or the URL (a data value) replaced."""
        known = " ".join(
            [statement, str(getattr(exc, "statement", "") or "")]
            + [str(p) for p in (self.url.username, self.url.host, self.url.database) if p]
        )
        return without_values(scrub(reason(exc), self.url), known)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A connection inside one read-only, repeatable-read transaction."""
        if self.unavailable is not None:
            raise self.unavailable
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise DatabaseError(f"cannot connect to {self.describe_failure(exc)}") from None
        except OSError as exc:  # e.g. a TLS certificate file named in the URL is missing
            raise DatabaseError(
                f"cannot connect to database {self.name!r} ({self.redacted}): "
                f"{ResourceError.from_os_error(exc, self._file_named(), 'cannot read').message}"
            ) from None
        try:
            with conn.begin():
                yield conn
        except sa.exc.DBAPIError as exc:
            raise self.read_error(exc) from None
        finally:
            conn.close()

    def _file_named(self) -> str | None:
        """The file option of the URL that does not exist (drivers' OSErrors name none)."""
        for option, value in self.url.query.items():
            values = value if isinstance(value, tuple) else (value,)
            for path in values:
                if option.lower() in FILE_OPTIONS and not Path(path).exists():
                    return f"{option} file {path}"
        return None

    def warm_up(self) -> None:
        """Open the fast driver's shared handle on a background thread while the rule's tables
        are reflected (the driver releases the GIL): its set-up then costs no wall time."""
        if self.unavailable is not None:
            return
        threading.Thread(target=self._shared_reader, name=f"warm-{self.name}", daemon=True).start()

    def _shared_reader(self) -> Any:
        with self._reader_lock:
            if self._reader is None and not self._closed:
                try:
                    self._reader = self.dialect.open_reader(self.url, self.timeout_s)
                except Exception:  # noqa: BLE001 - the stream connects itself and reports it
                    return None
            return self._reader

    def close(self) -> None:
        """Dispose of the engine and the fast driver's shared handle."""
        self.engine.dispose()
        with self._reader_lock:
            reader, self._reader = self._reader, None
            self._closed = True  # a warm-up thread still starting must not open a handle now
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()

    def stream(self, query: str, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Stream a SELECT as Arrow batches through the dialect's fast driver.

        When the fast driver fails before its first batch for any reason but a timeout (an
        unsupported column type, a driver quirk), the same SELECT runs again through
        SQLAlchemy's streaming cursor: slower, but it reads whatever SQLAlchemy can.
        """
        produced = False
        if self.unavailable is not None:
            raise self.unavailable
        try:
            reader = self._shared_reader()
            for batch in self.dialect.stream(
                self.url, self.engine, query, batch_size, self.timeout_s, reader
            ):
                produced = True
                yield batch
            return
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # connectorx reports errors as pyo3 PanicException
            if produced or is_timeout(exc) or not _driver_error(exc):
                raise self.read_error(exc, query) from None
            log.event("fast_reader_fallback", logging.WARNING, message=self.reason(exc, query))
        try:
            yield from Dialect.stream(self.dialect, self.url, self.engine, query, batch_size, None)
        except sa.exc.DBAPIError as exc:
            raise self.read_error(exc, query) from None

    def read_error(self, exc: BaseException, statement: str = "") -> BaseException:
        if not _driver_error(exc):
            return exc
        if is_timeout(exc):
            error = DatabaseError(
                f"statement timeout ({self.timeout_s} s) exceeded reading database "
                f"{self.name!r} ({self.redacted}); raise settings.statement_timeout_s"
            )
        else:
            error = DatabaseError(f"cannot read {self.describe_failure(exc, statement)}")
            error.retryable = is_connection_lost(exc)
            error.reason = self.reason(exc, statement)
        return said_by(error, exc)


def _driver_error(exc: BaseException) -> bool:
    """Errors that come from a database or its driver, as opposed to bugs in auditor."""
    if isinstance(exc, sa.exc.DBAPIError | OSError | pa.ArrowException | RuntimeError):
        return True
    module = type(exc).__module__.split(".")[0]
    drivers = ("adbc_driver_manager", "connectorx", "pyo3_runtime", "psycopg", "pymysql", "sqlite3")
    return module in drivers


_LOST = (
    "terminating connection",
    "server closed the connection",
    "connection to server",
    "lost connection",
    "server has gone away",
    "connection was killed",
    "query execution was interrupted",
    "connection reset",
    "broken pipe",
    "connection refused",
    "could not receive data",
    "no connection to the server",
    "io error",  # connectorx, when MariaDB kills the connection mid-stream
    "bytes remaining on stream",
    "disconnected",
    "ioerror",
)


def is_connection_lost(exc: BaseException) -> bool:
    """The connection died (killed, restarted, network): worth a retry, unlike a SQL error."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return not is_timeout(exc) and any(marker in text for marker in _LOST)


# MariaDB/MySQL error numbers (PyMySQL reports no SQLSTATE) of mistakes in SQL text or data.
_MYSQL_STATES = {1054: "42S22", 1064: "42000", 1305: "42000", 1292: "22007", 1366: "22007",
                 1365: "22012", 1690: "22003", 1367: "22007"}  # fmt: skip


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error where the driver tells it: psycopg's attribute,
    connectorx's `ERROR 1292 (22007)` text, PyMySQL's error number, SQLite's wording."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str) and state:
        return state
    text = str(orig)
    found = re.search(r"ERROR \d+ \((\w{5})\)", text)
    if found:
        return found.group(1)
    code = orig.args[0] if getattr(orig, "args", None) else None
    if isinstance(code, int) and code in _MYSQL_STATES:
        return _MYSQL_STATES[code]
    if type(orig).__module__.split(".")[0] == "sqlite3" and (
        "no such column" in text or "syntax error" in text or "no such function" in text
    ):
        return "42000"
    return None


def said_by(error: E, exc: BaseException) -> E:
    """`error`, caused by the driver error `exc`, with what the database said: its SQLSTATE
    and MySQL/MariaDB error number (for the log; never a value)."""
    error.sqlstate, error.errno = sqlstate(exc), error_number(exc)
    return error


def error_number(exc: BaseException) -> int | None:
    """MySQL/MariaDB's error number (PyMySQL's first argument, connectorx's `ERROR 1146`)."""
    orig = getattr(exc, "orig", None) or exc
    code = orig.args[0] if getattr(orig, "args", None) else None
    if isinstance(code, int):
        return code
    found = re.search(r"ERROR (\d+) \(\w{5}\)", str(orig))
    return int(found.group(1)) if found else None


def is_timeout(exc: BaseException) -> bool:
    text = reason(exc).lower()
    return (
        "statement timeout" in text or "max_statement_time" in text or "max_execution_time" in text
    )


# URL options that name files (TLS certificates and keys; PyMySQL's and libpq's spellings).
FILE_OPTIONS = {"ssl_ca", "ssl_cert", "ssl_key", "sslrootcert", "sslcert", "sslkey", "sslcrl"}

# A URL without a driver gets the one auditor ships with (SQLAlchemy would pick psycopg2/MySQLdb).
DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def open_database(
    name: str, config: DatabaseConfig, timeout_s: int | None, pool_size: int = 0
) -> Database:
    """Build the engine (no connection yet); a malformed URL is a config error.

    `pool_size`: keep up to this many connections open between uses, each statement its own
    (read-only) transaction: auditor.verify, whose one-row look-ups would otherwise cost a new
    connection, BEGIN, COMMIT and the pool's reset each (6 round trips instead of 1); 0 for
    none, as a run wants (Database.snapshot)."""
    assert config.url is not None
    try:
        url = make_url(config.url)
    except ArgumentError:
        raise ConfigError(f"databases.{name}.url: not a valid database URL") from None
    url = url.set(drivername=DEFAULT_DRIVERS.get(url.drivername, url.drivername))
    unavailable = None
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if not path or path == ":memory:":
            raise ConfigError(f"databases.{name}.url: SQLite needs a file path (sqlite:///file.db)")
        if not Path(path).is_file():
            unavailable = DatabaseError(
                f"database {name!r} ({redact(url)}): file {path} does not exist"
            )
    dialect = for_url(url)
    try:
        # No pool for a run: a connection lives as long as its snapshot, so at most one
        # SQLAlchemy connection plus the scan's own exist per database, none outliving its rule.
        pooling: dict[str, Any] = {"poolclass": sa.pool.NullPool}
        if pool_size:
            pooling = {
                "pool_size": pool_size,
                "max_overflow": pool_size,
                "isolation_level": "AUTOCOMMIT",
                "pool_reset_on_return": None,
            }
        kwargs = {**pooling, **dialect.engine_kwargs(url, timeout_s)}
        engine = sa.create_engine(url, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"databases.{name}.url: no driver for {url.drivername}: {exc}") from None
    database = Database(name, url, config.schema_, engine, dialect, timeout_s, unavailable)
    _install_session_setup(database)
    return database


def _install_session_setup(database: Database) -> None:
    @event.listens_for(database.engine, "connect")
    def _setup(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        is_mariadb = bool(getattr(database.engine.dialect, "is_mariadb", False))
        statements = database.dialect.session_setup(database.timeout_s, is_mariadb)
        if not statements:
            return
        cursor = dbapi_conn.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()


def open_databases(config: Config) -> dict[str, Database]:
    """Every configured database: SQL ones as engines (no connection yet), `path:` ones as
    directories of files (relative to the config file)."""
    from auditor.files import FileStore
    from auditor.redis_store import RedisStore, is_redis_url

    timeout = config.settings.statement_timeout_s
    folder = Path(config.path).parent if config.path else Path()
    opened: dict[str, Any] = {}
    for name, db in config.databases.items():
        if db.path is not None:
            opened[name] = FileStore(name, folder / db.path, db.format)
        elif db.url is not None and is_redis_url(db.url):
            opened[name] = RedisStore(name, db.url)
        else:
            opened[name] = open_database(name, db, timeout)
    return opened


def ping(database: Database) -> None:
    """Connect once and run a trivial query; exit 3 with the driver's reason if it fails."""
    if not isinstance(database, Database):  # a directory of files
        database.ping()
        return
    with database.snapshot() as conn:
        conn.execute(sa.select(sa.literal(1))).scalar()


# Query options that carry a secret (psycopg and libpq accept `?password=`, PyMySQL `passwd`).
SECRET_OPTIONS = {"password", "passwd", "pwd", "sslpassword", "token", "auth_token", "secret"}


def redact(url: URL | str) -> str:
    """The URL as messages and reports show it: the password hidden, in the user part and in
    every query option that carries one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<invalid url>"
    hidden = {k: ("***" if k.lower() in SECRET_OPTIONS else v) for k, v in parsed.query.items()}
    shown = parsed.set(query=hidden).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")


def secrets_of(url: URL) -> list[str]:
    """Every secret the URL holds: its password and the values of secret query options."""
    found = [str(url.password)] if url.password else []
    for option, value in url.query.items():
        if option.lower() in SECRET_OPTIONS:
            found += list(value) if isinstance(value, tuple) else [value]
    return [secret for secret in found if secret]


def reason(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's or connectorx's boilerplate."""
    orig = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return f"{args[1].strip()} (error {args[0]})"  # PyMySQL: (number, message)
    text = str(orig).strip()
    found = re.search(r"ERROR \d+ \(\w+\): ([^}]*)", text)  # connectorx wraps MySQL errors
    if found:
        return found.group(1).strip()
    lines = text.splitlines()
    return lines[0] if lines else type(orig).__name__


_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")


def without_values(text: str, known: str) -> str:
    """`text` with each quoted string that `known` (the statement, the URL's names) does not
    hold replaced by `(a value)`: drivers quote the value that failed a cast or a constraint,
    and that value is data. Identifiers they quote (`column "x" does not exist`) stay."""

    def replace(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        named = inner and re.search(rf"(?<!\w){re.escape(inner)}(?!\w)", known)
        return match.group(0) if named else "(a value)"

    return _QUOTED.sub(replace, text)


def scrub(text: str, url: URL) -> str:
    """A driver's message without the URL's secrets, as written or URL-quoted."""
    for secret in secrets_of(url):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return text
