"""SIGTERM and SIGINT mid-scan: clean stop, reports say `interrupted`, exit 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa


def _big_reference(
    database_factory, write_config, rows: int = 1_000_000, product_id: str = "g % 1001"
):
    """1,000 products and `rows` reviews pointing at `product_id` (an expression of g), under
    two rules."""
    db = database_factory("postgresql")
    db.execute("CREATE TABLE products (id bigint PRIMARY KEY)")
    db.execute("INSERT INTO products SELECT g FROM generate_series(1, 1000) g")
    db.execute("CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint)")
    db.execute(f"INSERT INTO reviews SELECT g, {product_id} FROM generate_series(1, {rows}) g")
    db.execute("ANALYZE reviews")
    rule = {
        "name": "reviews-products",
        "type": "reference",
        "from": {"db": "db", "table": "reviews", "columns": ["product_id"]},
        "to": {"db": "db", "table": "products", "columns": ["id"]},
    }
    config = {
        "version": 1,
        "databases": {"db": {"url": db.url}},
        "rules": [rule, {**rule, "name": "second"}],
    }
    return db, write_config(config)


def _wait_for_scan(db, deadline: float) -> None:
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            active = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%FROM reviews%' "
                    "AND pid <> pg_backend_pid() AND datname = current_database()"
                )
            ).scalar()
        if active:
            return
        time.sleep(0.05)
    raise AssertionError("the scan never started")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_scan_writes_an_interrupted_report(
    database_factory, write_config, tmp_path, sig
):
    db, config = _big_reference(database_factory, write_config)
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", "run", str(config), "--json", str(report),
         "--batch-size", "200", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_scan(db, time.monotonic() + 30)
    signalled = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - signalled < 2
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted" and data["exit_code"] == 130
    assert [r["status"] for r in data["rules"]] == ["interrupted", "interrupted"]
    assert "Traceback" not in err


def test_sigterm_during_the_recheck_stops_within_2_s(database_factory, write_config, tmp_path):
    """400,000 candidates to confirm: SIGTERM in the middle of their look-ups ends the run
    within 2 s (it took 8 s: every queued chunk was confirmed first)."""
    db, config = _big_reference(database_factory, write_config, 400_000, "g + 1000000")
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", "run", str(config), "--json", str(report), "-q",
         "--rule", "reviews-products"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    seen = False
    while not seen and time.monotonic() < deadline and proc.poll() is None:
        with db.engine.connect() as conn:
            seen = bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%unnest%' "
                        "AND query LIKE '%FROM reviews%' AND pid <> pg_backend_pid() "
                        "AND datname = current_database()"
                    )
                ).scalar()
            )
        time.sleep(0.01)
    assert seen, "the recheck was never caught running"
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - signalled
    assert proc.returncode == 130, err
    assert took < 2, f"{took:.1f} s from SIGTERM to exit"
    assert json.loads(report.read_text())["status"] == "interrupted"
