"""Markdown summary that pastes well into a pull request or a ticket."""

from __future__ import annotations

import json

from auditor.report.safe import markdown
from auditor.result import AuditResult

SAMPLE = 10


def _md(value: object) -> str:
    """Shown as text: markup, HTML and control characters from the data are escaped."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return markdown(str(text))


def render(result: AuditResult) -> str:
    totals = result.totals
    lines = [
        f"## auditor: {result.status.upper()}",
        "",
        f"{totals['findings']:,} findings in {totals['rules']} rules"
        f" · config `{result.config_path}` · {result.started_at} · exit {result.exit_code}",
        "",
        "| Rule | Type | Status | Findings |",
        "|---|---|---|---|",
    ]
    for rule in result.rules:
        counts = ", ".join(f"{k} {n:,}" for k, n in rule.counts.items()) or rule.error or "none"
        lines.append(f"| {_md(rule.name)} | {rule.type} | {rule.status} | {_md(counts)} |")
    for rule in result.rules:
        if not rule.findings:
            continue
        lines += ["", f"### {rule.name}", "", "| Kind | Key | Ref | Details |", "|---|---|---|---|"]
        for f in rule.findings[:SAMPLE]:
            details = []
            if f.field:
                source, copy = f.source_value or "(missing)", f.copy_value or "(missing)"
                details.append(f"{f.field}: {source} ≠ {copy}")
            if f.suggested or f.suggested_key:
                suggested = json.dumps(f.suggested or f.suggested_key, ensure_ascii=False)
                details.append(f"suggested {suggested}")
            if f.note:
                details.append(f.note)
            row = [f.kind, _md(f.key), _md(f.ref), _md("; ".join(details) or "-")]
            lines.append("| " + " | ".join(row) + " |")
        if rule.total > SAMPLE:
            lines.append(f"\n…and {rule.total - SAMPLE:,} more.")
    return "\n".join(lines) + "\n"
