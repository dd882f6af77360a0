"""Hostile strings from the data through every renderer: no control character reaches a
terminal, no CSV cell starts a formula, Markdown and JUnit show markup as text."""

from __future__ import annotations

import csv
import io
import os
import re
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.mask import Masker
from auditor.report import RENDERERS, terminal
from auditor.report.safe import FORMULA_STARTS
from auditor.result import AuditResult, Finding, RuleResult

HOSTILE = [
    "\x1b[2J\x1b[Hcleared",
    "\x1b]0;PWNED-title\x07",
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
    "\tTAB",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "evil\u202etxt.exe",
    "\x9bc1-csi",
    "line\nbreak\rreturn",
    "a|b`c*d_e[f](g)",
]
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _result(value: str) -> AuditResult:
    findings = (
        Finding("r", "mismatch", "error", {"id": value}, ref={"customer_id": value},
                field="email", source_value=value, copy_value=value, suggested_key={"id": value}),
        Finding("r", "orphan", "error", {value: 1}, ref={"product_id": value}, note=value),
    )  # fmt: skip
    rules = (
        RuleResult("r", "pii", "error", "fail", rows_scanned={"copy": 2}, counts={"mismatch": 1,
                   "orphan": 1}, findings=findings),
        RuleResult("s", "pii", "error", "error", error=f"cannot read: {value}"),
    )  # fmt: skip
    return AuditResult("id", "0", "2026-12-03T00:00:00+00:00", "2026-12-03T00:00:01+00:00",
                       "c.yaml", "0", "fail", 1, rules, {"db": f"sqlite:///{value}"})  # fmt: skip


def _check_every_renderer(value: str) -> None:
    result = _result(value)
    console = terminal.console(width=100, record=True)
    console.file = open(os.devnull, "w")  # noqa: SIM115 - recorded, not shown
    terminal.header(console, result.config_path, result.databases)
    terminal.render_result(console, result, [])
    shown = console.export_text(styles=False)
    assert not UNSAFE.search(shown), repr(shown)

    cells = [cell for row in csv.reader(io.StringIO(RENDERERS["csv"](result))) for cell in row]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]

    markdown = RENDERERS["markdown"](result)
    assert "<" not in markdown and not UNSAFE.search(markdown.replace("\n", ""))

    junit = RENDERERS["junit"](result)
    ET.fromstring(junit.encode())  # well-formed: no control character XML forbids
    assert not UNSAFE.search(junit.replace("\n", ""))

    page = RENDERERS["html"](result)
    assert "<img" not in page and "<script>alert" not in page


def test_known_hostile_values():
    for value in HOSTILE:
        _check_every_renderer(value)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_any_text(value):
    _check_every_renderer(value)


def test_partial_masking_never_keeps_a_control_character():
    masked = Masker.create("partial")("\x1b[2J cleared")
    assert "\x1b" not in masked and masked.startswith("*")


def test_csv_raw_keeps_cells_as_they_are():
    from auditor.report import csv as csv_report

    raw = csv_report.render(_result("=1+1"), guard=False)
    assert "=1+1" in raw and "'=1+1" not in raw
    assert "'=1+1" in csv_report.render(_result("=1+1"))
