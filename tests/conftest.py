"""Shared fixtures: real databases on every backend, each with a random name, dropped after.

Backends that need a server skip when it is unreachable, except with CI=true, where an
unreachable server fails the test loudly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from auditor import pairing

PG_ADMIN = os.environ.get(
    "AUDITOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN = os.environ.get("AUDITOR_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/")
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class TestDatabase:
    """A fresh database: `url` is what auditor gets, `engine` is a writable admin handle."""

    backend: str
    url: str
    engine: sa.Engine

    def load(self, metadata: sa.MetaData, rows: dict[str, list[dict[str, Any]]]) -> None:
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for table, values in rows.items():
                if values:
                    conn.execute(metadata.tables[table].insert(), values)

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


def _unavailable(backend: str, reason: str) -> None:
    message = f"{backend} server not reachable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: backend tests must run)")
    pytest.skip(message)


def _server_database(backend: str, admin_url: str) -> Iterator[TestDatabase]:
    name = f"auditor_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(backend, str(exc.orig).splitlines()[0])
    url = sa.make_url(admin_url).set(database=name)
    engine = sa.create_engine(url)
    try:
        yield TestDatabase(backend, url.render_as_string(hide_password=False), engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def make_database(backend: str, tmp_path: Path) -> Iterator[TestDatabase]:
    if backend == "sqlite":
        path = tmp_path / f"{uuid.uuid4().hex[:8]}.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        yield TestDatabase("sqlite", f"sqlite:///{path}", engine)
        engine.dispose()
    elif backend == "postgresql":
        yield from _server_database(backend, PG_ADMIN)
    elif backend == "mariadb":
        yield from _server_database(backend, MARIADB_ADMIN)
    else:  # pragma: no cover
        raise ValueError(backend)


PAIRS = [
    "sqlite-sqlite",
    "postgresql-postgresql",
    "postgresql-mariadb",
    "mariadb-postgresql",
    "postgresql-sqlite",
    "sqlite-postgresql",
    "mariadb-sqlite",
    "sqlite-mariadb",
    "mariadb-mariadb",
]


@pytest.fixture(params=PAIRS)
def pair(request, tmp_path) -> Iterator[tuple[TestDatabase, TestDatabase]]:
    """(referenced database, referencing database) on each backend pair of the matrix."""
    first, second = request.param.split("-")
    left = make_database(first, tmp_path / "a")
    right = make_database(second, tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        yield next(left), next(right)
    finally:
        left.close()
        right.close()


@pytest.fixture
def database_factory(tmp_path) -> Iterator[Callable[[str], TestDatabase]]:
    generators: list[Iterator[TestDatabase]] = []

    def create(backend: str) -> TestDatabase:
        folder = tmp_path / uuid.uuid4().hex[:6]
        folder.mkdir()
        generator = make_database(backend, folder)
        generators.append(generator)
        return next(generator)

    yield create
    for generator in generators:
        generator.close()


@pytest.fixture
def write_config(tmp_path) -> Callable[..., Path]:
    """Write a config dict as YAML and return its path."""

    def write(data: dict[str, Any], name: str = "audit.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(params=["held", "partitioned"])
def strategy(request, monkeypatch) -> str:
    """Both ways of pairing rows: the small referenced side held in memory while the other
    streams (what small test tables get by default), and both sides hash-partitioned."""
    if request.param == "partitioned":
        monkeypatch.setattr(pairing, "HOLD_MAX_ROWS", 0)
    return request.param


def plans(config, check: bool = False) -> list:
    """Every rule of `config` planned against its live databases, which are closed again."""
    from auditor.db.engines import open_databases
    from auditor.plan import build_plan

    databases = open_databases(config)
    try:
        return [build_plan(rule, databases, check) for rule in config.rules]
    finally:
        for database in databases.values():
            database.close()


REDIS_URL = os.environ.get("AUDITOR_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def cache():
    """(a Redis client on logical database 15, a key prefix of its own); its keys are deleted
    afterwards. Skips without a Redis, except with CI=true."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    yield client, prefix
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()
