"""Resources: few connections per database, none left open, no temp files left behind."""

from __future__ import annotations

import tempfile
import threading
import time

import sqlalchemy as sa

import auditor
from auditor.engine import RunOptions
from tests.scenarios import build_pii, build_reference


def _connections(admin: sa.Engine, names: list[str]) -> dict[str, int]:
    with admin.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT datname, count(*) FROM pg_stat_activity WHERE datname = ANY(:n) GROUP BY datname"
            ),
            {"n": names},
        ).all()
    return dict(rows)


def test_connections_are_bounded_and_closed(database_factory, write_config, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    catalog, reviews = database_factory("postgresql"), database_factory("postgresql")
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))
    catalog.engine.dispose()  # the fixture's own pooled connections are not auditor's
    reviews.engine.dispose()
    names = [sa.make_url(d.url).database for d in (catalog, reviews)]
    admin = sa.create_engine(catalog.url.rsplit("/", 1)[0] + "/postgres")
    peak: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name, count in _connections(admin, names).items():
                peak[name] = max(peak.get(name, 0), count)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = auditor.run(config, options=RunOptions(batch_size=2))
    finally:
        done.set()
        watcher.join()
    assert result.status == "fail"
    assert peak and max(peak.values()) <= 2, peak
    time.sleep(0.2)
    assert _connections(admin, names) == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("auditor-")] == []
    admin.dispose()


def test_pii_rule_connections_closed(database_factory, write_config):
    crm, orders = database_factory("postgresql"), database_factory("mariadb")
    config = auditor.load_config(write_config(build_pii(crm, orders)))
    crm.engine.dispose()
    orders.engine.dispose()
    auditor.run(config)
    with crm.engine.connect() as conn:
        others = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    with orders.engine.connect() as conn:
        maria = conn.execute(
            sa.text(
                "SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        ).scalar()
    assert others == 0 and maria == 0
