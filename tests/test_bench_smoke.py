"""The benchmark at a tiny scale, so it cannot rot. It prints figures; nothing is timed here."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_and_finds_the_seeded_numbers(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scale", "0.002", "--runs", "1",
         "--workloads", "W1,W3,W3r,M", "--out", str(tmp_path), "--prefix", f"auditor_bench_smoke_{uuid.uuid4().hex[:6]}", "--drop"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    (report,) = tmp_path.glob("bench-*.json")
    measures = json.loads(report.read_text())["measures"]
    assert {m["workload"] for m in measures} == {"W1", "W3", "W3r", "M"}
    assert all(m["ok"] and m["seconds"] for m in measures)


def test_fix_bench_runs_and_repairs_every_alias():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fix_aliases.py"), "--stale", "300"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "auditor fix --apply" in result.stdout and "FAIL" not in result.stdout


def test_incremental_bench_runs_and_agrees_with_a_full_run():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "incremental.py"), "--reviews", "20000",
         "--products", "2000"],
        capture_output=True, text=True, timeout=600, cwd=ROOT / "bench",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mode incremental" in result.stdout and "FAIL" not in result.stdout
