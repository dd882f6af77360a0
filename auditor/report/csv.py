"""CSV report: one finding a row, stable columns; object fields are JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import TextIO

from auditor.report.safe import csv_cell
from auditor.result import AuditResult

COLUMNS = (
    "rule",
    "kind",
    "severity",
    "key",
    "ref",
    "field",
    "source_value",
    "copy_value",
    "suggested",
    "count",
    "note",
)


def _cell(value: object, guard: bool) -> object:
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if value is None:
        return ""
    return csv_cell(value) if guard and isinstance(value, str) else value


def render(result: AuditResult, guard: bool = True) -> str:
    out = io.StringIO()
    write(result, out, guard)
    return out.getvalue()


def write(result: AuditResult, out: TextIO, guard: bool = True) -> None:
    """`guard`: a text cell that would start a formula gets a leading `'` (OWASP CSV
    injection); `--csv-raw` turns it off for a consumer that is no spreadsheet."""
    # CRLF, as RFC 4180 has it: a value holding a bare \r or \n is then quoted too.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for rule in result.rules:
        for finding in rule.findings:
            suggested = finding.suggested or finding.suggested_key
            row = {**finding.__dict__, "suggested": suggested}
            writer.writerow([_cell(row.get(column), guard) for column in COLUMNS])
