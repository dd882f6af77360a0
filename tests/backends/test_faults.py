"""Faults survived: killed connections, timeouts, a database that stays down."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

import auditor
from auditor.engine import RunOptions


def _reference_config(db_url: str, reviews_url: str | None = None, rows: int = 0) -> dict:
    rule = {
        "name": "reviews-products",
        "type": "reference",
        "from": {"db": "reviews", "table": "reviews", "columns": ["product_id"]},
        "to": {"db": "catalog", "table": "products", "columns": ["id"]},
    }
    return {
        "version": 1,
        "databases": {"catalog": {"url": db_url}, "reviews": {"url": reviews_url or db_url}},
        "rules": [rule],
    }


def _load(db, rows: int) -> None:
    if db.backend == "postgresql":
        series = f"generate_series(1, {rows}) g"
        value = "g"
    else:
        series = f"seq_1_to_{rows} s"
        value = "s.seq"
    db.execute("CREATE TABLE products (id bigint PRIMARY KEY)")
    db.execute(f"INSERT INTO products SELECT {value} FROM {series} WHERE {value} <= 1000")
    db.execute("CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint)")
    db.execute(f"INSERT INTO reviews SELECT {value}, MOD({value}, 1003) FROM {series}")


def _killer(db, stop: threading.Event, killed: list) -> None:
    """Kill the connection that streams the reviews table, once."""
    if db.backend == "postgresql":
        find = "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%FROM reviews%' AND pid <> pg_backend_pid()"
        kill = "SELECT pg_terminate_backend(:pid)"
    else:
        find = "SELECT id FROM information_schema.processlist WHERE info LIKE '%FROM reviews%' AND info NOT LIKE '%processlist%' AND id <> CONNECTION_ID()"
        kill = "KILL :pid"
    engine = sa.create_engine(db.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        while not stop.is_set() and not killed:
            pid = conn.execute(sa.text(find)).scalar()
            if pid:
                if db.backend == "postgresql":
                    conn.execute(sa.text(kill), {"pid": pid})
                else:
                    conn.execute(sa.text(f"KILL {int(pid)}"))
                killed.append(pid)
            time.sleep(0.01)
    engine.dispose()


def test_a_connection_killed_mid_scan_is_retried(database_factory, write_config):
    for backend in ("postgresql", "mariadb"):
        db = database_factory(backend)
        _load(db, 300_000)
        config = auditor.load_config(write_config(_reference_config(db.url), f"{backend}.yaml"))
        undisturbed = auditor.run(config, options=RunOptions(batch_size=500))
        stop, killed = threading.Event(), []
        thread = threading.Thread(target=_killer, args=(db, stop, killed))
        thread.start()
        try:
            disturbed = auditor.run(config, options=RunOptions(batch_size=500))
        finally:
            stop.set()
            thread.join()
        assert killed, f"{backend}: the scan was never caught running"
        assert disturbed.rules[0].error is None, disturbed.rules[0].error
        assert disturbed.rules[0].counts == undisturbed.rules[0].counts
        assert undisturbed.rules[0].counts["orphan"] == 897  # MOD(id, 1003) in {0, 1001, 1002}
        assert disturbed.rules[0].rows_scanned == undisturbed.rules[0].rows_scanned


def test_a_connection_killed_while_planning_is_retried(database_factory, write_config, monkeypatch):
    """The row-width sample runs in the planning snapshot: a connection lost there is not
    taken for a failed sample (the next statement would fail as an internal error), it is a
    lost connection, and planning is retried like a scan."""
    from auditor.plan import SidePlan

    db = database_factory("postgresql")
    _load(db, 2_000)
    config = auditor.load_config(write_config(_reference_config(db.url)))
    undisturbed = auditor.run(config)
    sample, killed = SidePlan.sample_row_bytes, []

    def killed_first(side, conn):
        if not killed:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            admin = sa.create_engine(db.url, isolation_level="AUTOCOMMIT")
            with admin.connect() as other:
                other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.dispose()
            killed.append(pid)
        return sample(side, conn)

    monkeypatch.setattr(SidePlan, "sample_row_bytes", killed_first)
    disturbed = auditor.run(config)
    assert killed and disturbed.rules[0].error is None, disturbed.rules[0].error
    assert disturbed.rules[0].counts == undisturbed.rules[0].counts == {"orphan": 3}


def test_statement_timeout_is_enforced_and_named(database_factory, write_config):
    """A read held up longer than `statement_timeout_s` (here: by another session's lock on
    the table; a predicate cannot sleep) fails its rule, named; the other rule runs."""
    lock = {
        "postgresql": "LOCK TABLE locked_reviews IN ACCESS EXCLUSIVE MODE",
        "mariadb": "LOCK TABLES locked_reviews WRITE",
    }
    for backend, statement in lock.items():
        db = database_factory(backend)
        _load(db, 10)
        db.execute("CREATE TABLE locked_reviews (id bigint PRIMARY KEY, product_id bigint)")
        db.execute("INSERT INTO locked_reviews SELECT id, product_id FROM reviews")
        data = _reference_config(db.url)
        data["settings"] = {"statement_timeout_s": 1}
        data["rules"].append({**data["rules"][0], "name": "fast"})
        data["rules"][0]["from"] = {**data["rules"][0]["from"], "table": "locked_reviews"}
        holder = sa.create_engine(db.url)
        try:
            with holder.connect() as conn:
                conn.exec_driver_sql(statement)
                started = time.monotonic()
                result = auditor.run(auditor.load_config(write_config(data, f"{backend}.yaml")))
                elapsed = time.monotonic() - started
                conn.rollback()
        finally:
            holder.dispose()
        assert elapsed < 10
        slow, fast = result.rules
        assert slow.status == "error" and "statement timeout (1 s)" in slow.error, slow.error
        # What the server said, for the log: query_canceled, or MariaDB's error 1969.
        if backend == "postgresql":
            assert (slow.sqlstate, slow.errno) == ("57014", None)
        else:
            assert slow.errno == 1969
        assert fast.status == "pass" and fast.error is None
        assert result.exit_code == 3


def test_a_database_that_stays_down_fails_only_its_rules(database_factory, write_config):
    db = database_factory("postgresql")
    _load(db, 10)
    data = _reference_config(db.url)
    down = {
        **data["rules"][0],
        "name": "down",
        "from": {"db": "down", "table": "reviews", "columns": ["product_id"]},
    }
    data["databases"]["down"] = {"url": "postgresql+psycopg://auditor:pw@127.0.0.1:1/nope"}
    data["rules"].insert(0, down)
    result = auditor.run(auditor.load_config(write_config(data)))
    assert [r.status for r in result.rules] == ["error", "pass"]
    assert "'down'" in result.rules[0].error and result.exit_code == 3 and result.status == "error"


def test_a_connection_killed_during_the_recheck_is_retried(
    database_factory, write_config, monkeypatch
):
    """The recheck's look-ups are read again on a new snapshot, like a lost scan: one
    `pg_terminate_backend` (or MariaDB `KILL`) there once failed the whole rule (0 findings)."""
    from auditor.recheck import Lookups

    for backend in ("postgresql", "mariadb"):
        db = database_factory(backend)
        _load(db, 20_000)
        config = auditor.load_config(write_config(_reference_config(db.url), f"{backend}.yaml"))
        undisturbed = auditor.run(config)
        read, killed = Lookups._read, []

        def killed_first(lookups, side, by, wanted, read=read, killed=killed, db=db):
            if not killed:
                conn = lookups._conn(side)
                own = (
                    "SELECT pg_backend_pid()"
                    if db.backend == "postgresql"
                    else "SELECT CONNECTION_ID()"
                )
                pid = int(conn.exec_driver_sql(own).scalar())
                admin = sa.create_engine(db.url, isolation_level="AUTOCOMMIT")
                with admin.connect() as other:
                    if db.backend == "postgresql":
                        other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    else:
                        other.execute(sa.text(f"KILL {pid}"))
                admin.dispose()
                killed.append(pid)
            return read(lookups, side, by, wanted)

        monkeypatch.setattr(Lookups, "_read", killed_first)
        disturbed = auditor.run(config)
        monkeypatch.undo()
        assert killed, backend
        assert disturbed.rules[0].error is None, disturbed.rules[0].error
        assert disturbed.rules[0].counts == undisturbed.rules[0].counts
        assert disturbed.rules[0].findings == undisturbed.rules[0].findings
        assert undisturbed.rules[0].counts == {"orphan": 57}  # MOD(id, 1003) in {0, 1001, 1002}


def test_driver_panics_stay_off_the_terminal(database_factory, write_config):
    """connectorx reports a killed MariaDB connection as a Rust panic printed on fd 2 (with a
    backtrace where RUST_BACKTRACE is set); the CLI keeps those lines off the terminal."""
    import os
    import subprocess
    import sys

    db = database_factory("mariadb")
    _load(db, 300_000)
    config = write_config(_reference_config(db.url))
    stop, killed = threading.Event(), []
    thread = threading.Thread(target=_killer, args=(db, stop, killed))
    thread.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "auditor", "run", str(config), "-q", "--batch-size", "500"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "RUST_BACKTRACE": "1"},
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
    assert killed, "the scan was never caught running"
    assert result.returncode == 1, result.stderr  # retried, then findings as usual
    assert "panicked" not in result.stderr and result.stderr == ""


# A statement on a connection the server terminated: the PostgreSQL ADBC driver before 1.11
# formatted the error from a NULL result and aborted the process (apache/arrow-adbc#3878);
# mid-scan, the same path took auditor down with SIGABRT instead of retrying.
TERMINATED = """
import sys
import adbc_driver_manager as adbc, adbc_driver_postgresql, pyarrow as pa
db = adbc_driver_postgresql.connect(sys.argv[1])
victim, admin = adbc.AdbcConnection(db), adbc.AdbcConnection(db)
def query(conn, sql):
    with adbc.AdbcStatement(conn) as statement:
        statement.set_sql_query(sql)
        handle, _ = statement.execute_query()
        return pa.RecordBatchReader.from_stream(handle).read_all()
pid = query(victim, "SELECT pg_backend_pid() AS p")["p"][0].as_py()
query(admin, f"SELECT pg_terminate_backend({pid})")
try:
    query(victim, "SELECT 1")
except Exception as exc:
    print("raised", type(exc).__name__)
"""


def test_the_postgresql_reader_survives_a_terminated_connection(database_factory):
    import subprocess
    import sys

    db = database_factory("postgresql")
    uri = sa.make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", TERMINATED, uri], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-300:]
    assert done.stdout.startswith("raised OperationalError"), done.stdout
