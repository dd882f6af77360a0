"""`auditor demo`: exits 0 and shows every finding kind; its reports are written."""

from __future__ import annotations

from auditor.result import KINDS
from tests.cli.test_cli import auditor


def test_demo_shows_every_finding_kind(tmp_path):
    result = auditor("demo", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    # no_ttl needs a Redis, which the demo does without (tests/backends/test_redis.py has it)
    missing = [kind for kind in KINDS if kind not in result.stdout and kind != "no_ttl"]
    assert missing == []
    reports = sorted(p.suffix for p in (tmp_path / "demo" / "reports").iterdir())
    assert reports == [".html", ".json"]
    assert "auditor run" in result.stdout and ".html" in result.stdout
