"""One self-contained HTML file: inline CSS and script, nothing fetched from the network.

Findings are grouped per rule (collapsible, at most HTML_ROWS each), keys read `id=18` rather
than JSON that wraps mid-token, a missing PII value reads `(missing)`, and a `duplicate_key`'s
row count has its own column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from auditor.result import AuditResult, Finding, RuleResult

MISSING = "(missing)"
# Rows per rule a browser still filters at once; the JSON and CSV reports list every finding.
HTML_ROWS = 5_000


@dataclass(frozen=True)
class _Row:
    kind: str
    key: str
    ref: str
    field: str
    source: str
    copy: str
    source_missing: bool
    copy_missing: bool
    suggested: str
    count: str
    note: str


@dataclass(frozen=True)
class _Group:
    rule: RuleResult
    pii: bool
    rows: list[_Row]


def render(result: AuditResult) -> str:
    import jinja2  # only runs that write HTML pay for importing it

    source = resources.files("auditor.report").joinpath("templates/report.html.j2").read_text()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    groups = [
        _Group(rule, rule.type == "pii", [_row(f) for f in rule.findings[:HTML_ROWS]])
        for rule in result.rules
        if rule.findings
    ]
    return env.from_string(source).render(
        result=result, totals=result.totals, groups=groups, diff=result.diff
    )


def pairs(value: dict[str, Any] | None) -> str:
    """`id=18` or `order_id=7, line=2`: a key as a reviewer reads it."""
    if not value:
        return ""
    return ", ".join(f"{name}={_scalar(v)}" for name, v in value.items())


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _row(finding: Finding) -> _Row:
    has_values = finding.field is not None
    return _Row(
        kind=finding.kind,
        key=pairs(finding.key),
        ref=pairs(finding.ref),
        field=finding.field or "",
        source=_value(finding.source_value, has_values),
        copy=_value(finding.copy_value, has_values),
        source_missing=has_values and finding.source_value is None,
        copy_missing=has_values and finding.copy_value is None,
        suggested=pairs(finding.suggested or finding.suggested_key),
        count="" if finding.count is None else f"{finding.count:,}",
        note=finding.note or "",
    )


def _value(value: str | None, has_values: bool) -> str:
    if value is None:
        return MISSING if has_values else ""
    return value
