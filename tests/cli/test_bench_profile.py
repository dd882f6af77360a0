"""bench/profile.py wraps the engine's stages by name: a renamed stage must fail here, not
on the day someone profiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from auditor import demo

ROOT = Path(__file__).resolve().parents[2]


def test_the_profile_runs_the_audit_and_prints_each_stage(tmp_path):
    config = demo.build(tmp_path / "demo")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "profile.py"), str(config), "-q",
         "--rule", "order-customer-pii", "--rule", "reviews-have-live-products"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the demo's seeded findings
    assert "thread CPU s" in done.stderr
    for stage in ("auditor.checks.pii.check_copies", "auditor.db.engines.Database.stream"):
        assert stage in done.stderr
