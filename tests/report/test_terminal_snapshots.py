"""Snapshot tests of the terminal report at fixed widths (80 and 120 columns).

Regenerate after an intended change with: UPDATE_SNAPSHOTS=1 pytest tests/report
A missing snapshot fails: it is written only when asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.report import terminal
from auditor.result import AuditResult, Finding, RuleResult

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _result(failing: bool, big: bool = False) -> AuditResult:
    scale = 1_000_000 if big else 1
    findings = (
        Finding("reviews-products", "orphan", "error", {"id": 3}, ref={"product_id": 50}),
        Finding("reviews-products", "stale_alias", "error", {"id": 4}, ref={"product_id": 100},
                suggested={"id": 1}),
        Finding("orders-pii", "mismatch", "error", {"id": 7}, ref={"customer_id": 1},
                field="email", source_value="a***@e***.com", copy_value="d***@e***.com",
                suggested_key={"id": 5}),
        Finding("orders-pii", "missing_value", "error", {"id": 8}, ref={"customer_id": 2},
                field="phone", source_value="+1*******0100", copy_value=None),
        Finding("reviews-without-a-product-after-the-catalog-migration", "null_reference",
                "warning", {"id": 9}, ref={"product_id": None}),
    )  # fmt: skip
    rules = (
        RuleResult(
            "reviews-products", "reference", "error", "fail" if failing else "pass",
            rows_scanned={"from": 11 * scale, "to": 7 * scale}, duration_s=0.25 * scale ** 0.5,
            counts={"orphan": 1 * scale, "stale_alias": 10 * scale} if failing else {},
            findings=findings[:2] if failing else (),
        ),
        RuleResult(
            "orders-pii", "pii", "error", "fail" if failing else "pass",
            rows_scanned={"copy": 11 * scale, "source": 6 * scale}, duration_s=0.5,
            counts={"mismatch": 1, "missing_value": 1} if failing else {},
            findings=findings[2:4] if failing else (),
        ),
        RuleResult(
            "reviews-without-a-product-after-the-catalog-migration", "reference", "warning",
            "warn" if failing else "pass", rows_scanned={"from": 11 * scale, "to": 7 * scale},
            duration_s=0.1, counts={"null_reference": 10 * scale} if failing else {},
            findings=findings[4:] if failing else (),
        ),
        RuleResult("crm-down", "pii", "error", "error", error="cannot connect to database 'crm'"),
    )  # fmt: skip
    return AuditResult(
        run_id="00000000-0000-0000-0000-000000000000",
        auditor_version="0.1.0",
        started_at="2026-11-25T03:00:00.000+00:00",
        finished_at="2026-11-25T03:00:01.500+00:00",
        config_path="nightly.yaml",
        config_sha256="0" * 64,
        status="fail" if failing else "error",
        exit_code=1 if failing else 3,
        rules=rules,
        databases={"catalog": "postgresql+psycopg://auditor:***@db/catalog"},
    )


CASES = {
    "passing": (False, False),
    "failing": (True, False),
    "failing-10m": (True, True),
}


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("case", CASES)
def test_terminal_report_snapshot(case, width):
    console = terminal.console(width=width, record=True)
    console.file = open(os.devnull, "w")  # noqa: SIM115 - recorded, not shown
    result = _result(*CASES[case])
    terminal.header(console, result.config_path, result.databases)
    terminal.render_result(console, result, ["reports/nightly.json"])
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width  # the right edge holds
    path = SNAPSHOTS / f"terminal-{case}-{width}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot {path.name}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert text == path.read_text()
