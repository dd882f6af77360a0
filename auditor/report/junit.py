"""JUnit XML: a testsuite per run, a testcase per rule; findings fail it, errors error it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from auditor.result import AuditResult

SAMPLE = 20


def render(result: AuditResult) -> str:
    totals = result.totals
    suite = ET.Element(
        "testsuite",
        name="auditor",
        tests=str(len(result.rules)),
        failures=str(totals["rules_failed"]),
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
            ET.SubElement(case, "error", message=rule.error or "error")
        elif rule.status == "fail":
            counts = ", ".join(f"{kind}: {n}" for kind, n in rule.counts.items())
            failure = ET.SubElement(case, "failure", message=f"{rule.total} findings ({counts})")
            lines = [json.dumps(f.to_dict(), ensure_ascii=False) for f in rule.findings[:SAMPLE]]
            if rule.total > len(lines):
                lines.append(f"... {rule.total - len(lines)} more")
            failure.text = "\n".join(lines)
        elif rule.status in ("interrupted", "skipped"):
            ET.SubElement(case, "skipped", message=rule.status)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"
