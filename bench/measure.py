"""One child process measured: its exit code, wall time, peak RSS and output."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson
import yaml


def measured(command: list[str]) -> tuple[int, float, float, str, str]:
    """Exit code, wall seconds, peak RSS in MB of this one child, stdout and stderr. The child
    is reaped with wait4, whose rusage is its own (RUSAGE_CHILDREN is the largest so far)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return child.returncode, wall, usage.ru_maxrss / 1024, out.read(), err.read()


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"


@contextlib.contextmanager
def bench_stores(prefix: str) -> Iterator[tuple[Any, str, Path]]:
    """A Redis client (logical database 14), a new PostgreSQL database's URL and a temp
    directory; the keys under `prefix`, the database and the directory go afterwards."""
    import redis
    import sqlalchemy as sa

    client = redis.Redis.from_url(REDIS_URL)
    name = f"auditor_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-auditor-") as tmp:
            yield client, PG_ADMIN.rsplit("/", 1)[0] + "/" + name, Path(tmp)
    finally:
        for key in client.scan_iter(match=prefix + "*", count=10_000):
            client.delete(key)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def audit(tmp: Path, databases: dict, rule: dict) -> tuple[tuple, dict]:
    """`auditor run -q --max-findings 0 --json` of one rule, measured; and its counts."""
    config, report = tmp / "bench.yaml", tmp / "out.json"
    config.write_text(yaml.safe_dump({"version": 1, "databases": databases, "rules": [rule]}))
    run = measured([sys.executable, "-m", "auditor", "run", str(config), "-q",
                    "--max-findings", "0", "--json", str(report)])  # fmt: skip
    with report.open("rb") as handle:  # streamed: a report held here would be counted in the
        counts = next(ijson.items(handle, "rules.item.counts"))  # next child's peak RSS (fork)
    return run, counts


def psql_copy(url: str, query: str, tmp: Path) -> tuple:
    """`psql \\copy (query)` to a file, measured: the baseline's database read."""
    database = url.rsplit("/", 1)[1]
    copy = f"\\copy ({query}) TO '{tmp}/copy.txt'"
    return measured(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-c", copy])


def print_audit(run: tuple, baseline_s: float, found: dict, expected: dict) -> None:
    """The auditor line of a bench: time, peak RSS, ratio to the baseline, findings checked."""
    check = "" if found == expected else "  FAIL"
    print(f"  auditor run                {run[1]:6.2f} s  {run[2]:5.0f} MB  "
          f"ratio {run[1] / baseline_s:.2f}  found {found} (seeded {expected}){check}")  # fmt: skip
