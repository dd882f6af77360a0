"""`auditor diff` on two real reports: one finding fixed, one new."""

from __future__ import annotations

import json

from tests.cli.test_cli import auditor
from tests.conftest import make_database
from tests.scenarios import build_pii


def test_diff_of_two_runs(tmp_path, write_config):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    crm = next(make_database("sqlite", tmp_path / "a"))
    orders = next(make_database("sqlite", tmp_path / "b"))
    config = write_config(build_pii(crm, orders))
    old, new, out = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "diff.json"
    assert auditor("run", str(config), "-q", "--json", str(old)).returncode == 1
    crm.execute(
        "INSERT INTO customers (id, email, full_name, phone) VALUES (99, 'zed@example.com', 'Zed', '4155550999')"
    )
    orders.execute("UPDATE orders SET customer_email = 'someone.else@example.com' WHERE id = 6")
    assert auditor("run", str(config), "-q", "--json", str(new)).returncode == 1

    result = auditor("diff", str(old), str(new), "--json", str(out))
    data = json.loads(out.read_text())
    assert [(f["kind"], f["key"]) for f in data["resolved"]] == [("missing_source", {"id": 5})]
    assert [(f["kind"], f["key"], f["field"]) for f in data["new"]] == [
        ("mismatch", {"id": 6}, "email")
    ]
    assert data["persisting"] > 0
    assert result.returncode == 1 and "1 new, 1 resolved" in result.stdout
    assert auditor("diff", str(old), str(old)).returncode == 0
    assert auditor("diff", str(old), str(new), "--fail-on", "never").returncode == 0


def test_diff_of_a_missing_report_is_exit_2(tmp_path):
    result = auditor("diff", str(tmp_path / "nope.json"), str(tmp_path / "nope.json"))
    assert result.returncode == 2 and "report not found" in result.stderr
