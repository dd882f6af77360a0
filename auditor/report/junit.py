"""JUnit XML: a testsuite per run, a testcase per rule; findings fail it, errors error it.

A warning rule's findings (status `warn`) fail its testcase only when they fail the run
(`fail_on: warning`); otherwise the testcase passes and lists them in `system-out`, so the
dashboard agrees with the run's exit code.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from auditor.report.safe import printable
from auditor.result import AuditResult, RuleResult, fails

SAMPLE = 20


def render(result: AuditResult) -> str:
    totals = result.totals
    suite = ET.Element(
        "testsuite",
        name="auditor",
        tests=str(len(result.rules)),
        failures="0",  # counted below: warn rules fail only under fail_on: warning
        errors=str(totals["rules_errored"]),
        time=f"{result.duration_s:.3f}",
        timestamp=result.started_at,
    )
    for rule in result.rules:
        case = ET.SubElement(
            suite, "testcase", classname=f"auditor.{rule.type}", name=rule.name,
            time=f"{rule.duration_s:.3f}",
        )  # fmt: skip
        if rule.status == "error":
            ET.SubElement(case, "error", message=printable(rule.error or "error"))
        elif rule.status == "fail" or (rule.status == "warn" and fails("warning", result.fail_on)):
            failure = ET.SubElement(case, "failure", message=_summary(rule))
            failure.text = _sample(rule)
        elif rule.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {_summary(rule)}\n{_sample(rule)}"
        elif rule.status in ("interrupted", "skipped"):
            ET.SubElement(case, "skipped", message=rule.status)
    suite.set("failures", str(len(suite.findall("testcase/failure"))))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


def _summary(rule: RuleResult) -> str:
    counts = ", ".join(f"{kind}: {n}" for kind, n in rule.counts.items())
    return f"{rule.total} findings ({counts})"


def _sample(rule: RuleResult) -> str:
    # JSON escapes C0 controls; printable() the rest (C1, bidi), which XML 1.0 forbids or hides.
    lines = [printable(json.dumps(f.to_dict(), ensure_ascii=False)) for f in rule.findings[:SAMPLE]]
    if rule.total > len(lines):
        lines.append(f"... {rule.total - len(lines)} more")
    return "\n".join(lines)
