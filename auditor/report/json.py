"""JSON report (SPEC §6): the result model as it is, `schema_version: 1`."""

from __future__ import annotations

import json

from auditor.result import AuditResult


def render(result: AuditResult) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"
