"""JSON report (SPEC §6): the result model as it is, `schema_version: 1`.

Written as it is encoded: the findings of a rule (and a diff's new and resolved findings) may
number millions, read from disk as they are written (auditor.findings, report.diff). So the
document around them is encoded first with a marker where each list stands, and each list is
streamed there, one finding a line (compact: what `grep` and `jq -c` read, and encoded in C,
4x faster than indented).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from auditor.report.diff import ReportDiff
from auditor.result import AuditResult, Finding


def render(result: AuditResult) -> str:
    out = io.StringIO()
    write(result, out)
    return out.getvalue()


def write(result: AuditResult, out: TextIO) -> None:
    lists: list[Iterable[Any]] = [rule.findings for rule in result.rules]
    markers = [_marker() for _ in lists]
    diff_markers = None
    if result.diff is not None:
        diff_markers = (_marker(), _marker())
        lists += [result.diff.new, result.diff.resolved]
        markers += diff_markers
    document = result.to_dict(findings=markers[: len(result.rules)], diff=diff_markers)
    _write(document, dict(zip(markers, lists, strict=True)), out)


def write_diff(diff: ReportDiff, out: TextIO) -> None:
    """`auditor diff --json`: `{"new": [...], "resolved": [...], ...}`."""
    markers = (_marker(), _marker())
    lists = dict(zip(markers, (diff.new, diff.resolved), strict=True))
    _write(diff.to_dict(*markers), lists, out)


def _marker() -> str:
    return f"findings-{uuid.uuid4().hex}"


def _write(document: dict[str, Any], lists: Mapping[str, Iterable[Any]], out: TextIO) -> None:
    """`document` as json.dumps(indent=2) lays it out, each marker replaced by its list."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    for marker, findings in lists.items():
        before, text = text.split(json.dumps(marker), 1)
        out.write(before)
        line = before.rpartition("\n")[2]  # `      "findings": `
        _write_list(findings, line[: len(line) - len(line.lstrip(" "))], out)
    out.write(text + "\n")


def _write_list(findings: Iterable[Finding | dict[str, Any]], indent: str, out: TextIO) -> None:
    """A list whose key stands `indent` in: items two spaces further in, one a line."""
    separator = "[\n"
    for finding in findings:
        data = finding.to_dict() if isinstance(finding, Finding) else finding
        out.write(separator + indent + "  " + json.dumps(data, ensure_ascii=False))
        separator = ",\n"
    out.write("[]" if separator == "[\n" else "\n" + indent + "]")
