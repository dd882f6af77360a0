"""CSV report: one finding a row, stable columns; object fields are JSON."""

from __future__ import annotations

import csv
import io
import json

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


def _cell(value: object) -> object:
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else value


def render(result: AuditResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for rule in result.rules:
        for finding in rule.findings:
            suggested = finding.suggested or finding.suggested_key
            row = {**finding.__dict__, "suggested": suggested}
            writer.writerow([_cell(row.get(column)) for column in COLUMNS])
    return out.getvalue()
