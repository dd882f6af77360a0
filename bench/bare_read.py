"""The reader's floor: fetch the audited columns with the fast readers auditor uses, and nothing
else (no planning, preparing, partitioning, comparing or report).

    python bench/bare_read.py URL SQL [URL SQL]... [-- URL SQL [URL SQL]...]

The statements of one group (groups are separated by `--`) are read at once, one thread each,
as auditor reads the two sides of a rule; the groups one after another, as auditor runs its
rules. PostgreSQL is read through ADBC's driver manager, MariaDB/MySQL through connectorx,
as auditor.db.dialects does. It imports nothing of auditor, whose reader (_AdbcHandle) it
repeats in a few lines: auditor's imports (SQLAlchemy, pydantic, ...) belong to what auditor
costs. What auditor costs beyond this line is its own work.
"""

from __future__ import annotations

import sys
import threading
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

BATCH_ROWS = 65_536


def _postgresql(url: str, sql: str) -> int:
    import adbc_driver_postgresql
    from adbc_driver_manager import AdbcConnection, AdbcDatabase, AdbcStatement

    database = AdbcDatabase(driver=adbc_driver_postgresql._driver_path(), uri=url)
    try:
        with AdbcConnection(database) as conn, AdbcStatement(conn) as statement:
            statement.set_sql_query(sql)
            handle, _ = statement.execute_query()
            reader = pa.RecordBatchReader.from_stream(handle)
            rows = sum(batch.num_rows for batch in reader)
            reader.close()
            return rows
    finally:
        database.close()


def _mysql(url: str, sql: str) -> int:
    import connectorx as cx

    reader = cx.read_sql(url, sql, return_type="arrow_stream", batch_size=BATCH_ROWS)
    return sum(batch.num_rows for batch in reader)


def read(url: str, sql: str) -> int:
    """Rows of `sql` at `url` (an SQLAlchemy-style URL: the driver suffix is dropped)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    plain = urlunsplit(parts._replace(scheme=scheme))
    if scheme == "postgresql":
        return _postgresql(plain, sql)
    if scheme in ("mysql", "mariadb"):
        return _mysql(urlunsplit(parts._replace(scheme="mysql")), sql)
    raise SystemExit(f"bare_read: unsupported database {scheme!r}")


def read_group(pairs: list[tuple[str, str]]) -> int:
    counts: list[int] = []
    errors: list[BaseException] = []

    def one(url: str, sql: str) -> None:
        try:
            counts.append(read(url, sql))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts)


def main(argv: list[str]) -> int:
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--":
            groups.append([])
        else:
            groups[-1].append(arg)
    if any(len(group) % 2 or not group for group in groups):
        raise SystemExit(__doc__)
    total = sum(read_group(list(zip(g[::2], g[1::2], strict=True))) for g in groups)
    print(total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
