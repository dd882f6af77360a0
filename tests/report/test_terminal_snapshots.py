"""Snapshot tests of the terminal report at a fixed width.

Regenerate after an intended change with: UPDATE_SNAPSHOTS=1 pytest tests/report
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.report import terminal
from auditor.result import AuditResult, Finding, RuleResult

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _result(failing: bool) -> AuditResult:
    findings = (
        Finding("reviews-products", "orphan", "error", {"id": 3}, ref={"product_id": 50}),
        Finding("reviews-products", "stale_alias", "error", {"id": 4}, ref={"product_id": 100},
                suggested={"id": 1}),
        Finding("orders-pii", "mismatch", "error", {"id": 7}, ref={"customer_id": 1},
                field="email", source_value="a***@e***.com", copy_value="d***@e***.com",
                suggested_key={"id": 5}),
    )  # fmt: skip
    rules = (
        RuleResult(
            "reviews-products", "reference", "error", "fail" if failing else "pass",
            rows_scanned={"from": 11, "to": 7}, duration_s=0.25,
            counts={"orphan": 1, "stale_alias": 1} if failing else {},
            findings=findings[:2] if failing else (),
        ),
        RuleResult(
            "orders-pii", "pii", "error", "fail" if failing else "pass",
            rows_scanned={"copy": 11, "source": 6}, duration_s=0.5,
            counts={"mismatch": 1} if failing else {}, findings=findings[2:] if failing else (),
        ),
    )  # fmt: skip
    return AuditResult(
        run_id="00000000-0000-0000-0000-000000000000",
        auditor_version="0.1.0",
        started_at="2026-11-25T03:00:00.000+00:00",
        finished_at="2026-11-25T03:00:01.500+00:00",
        config_path="nightly.yaml",
        config_sha256="0" * 64,
        status="fail" if failing else "pass",
        exit_code=1 if failing else 0,
        rules=rules,
        databases={"catalog": "postgresql+psycopg://auditor:***@db/catalog"},
    )


@pytest.mark.parametrize("failing", [False, True], ids=["passing", "failing"])
def test_terminal_report_snapshot(failing):
    console = terminal.console(width=100, record=True)
    console.file = open(os.devnull, "w")  # noqa: SIM115 - recorded, not shown
    result = _result(failing)
    terminal.header(console, result.config_path, result.databases)
    terminal.render_result(console, result, ["reports/nightly.json"])
    text = console.export_text()
    path = SNAPSHOTS / f"terminal-{'failing' if failing else 'passing'}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()
