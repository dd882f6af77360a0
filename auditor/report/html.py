"""One self-contained HTML file: inline CSS and script, nothing fetched from the network."""

from __future__ import annotations

import json
from importlib import resources

from auditor.result import AuditResult


def render(result: AuditResult) -> str:
    import jinja2  # only runs that write HTML pay for importing it

    source = resources.files("auditor.report").joinpath("templates/report.html.j2").read_text()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["js"] = lambda v: json.dumps(v, ensure_ascii=False)
    empty = dict.fromkeys(("ref", "field", "source_value", "copy_value", "suggested", "count"))
    empty |= {"suggested_key": None, "note": None}
    findings = [empty | f.to_dict() for rule in result.rules for f in rule.findings]
    return env.from_string(source).render(
        result=result, totals=result.totals, findings=findings, data=result.to_dict()
    )
