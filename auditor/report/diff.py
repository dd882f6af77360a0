"""Run-to-run diff of two JSON reports: findings new, resolved and persisting.

A finding's identity is rule + kind + key + field, so a value that changed but is still wrong
persists, and a row fixed and broken again in another way shows as one resolved, one new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError
from auditor.result import fails


def identity(finding: dict[str, Any]) -> tuple[str, str, str, str]:
    key = json.dumps(finding.get("key"), sort_keys=True, ensure_ascii=False)
    return (finding.get("rule", ""), finding.get("kind", ""), key, finding.get("field") or "")


@dataclass(frozen=True)
class ReportDiff:
    new: list[dict[str, Any]]
    resolved: list[dict[str, Any]]
    persisting: int
    truncated: bool = False  # either report listed fewer findings than it counted
    rules: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"new": self.new, "resolved": self.resolved, "persisting": self.persisting}

    def exit_code(self, fail_on: str) -> int:
        return 1 if any(fails(f.get("severity", ""), fail_on) for f in self.new) else 0


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: report not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON report: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise ConfigError(f"{path}: not an auditor report (schema_version 1)")
    return data


def _findings(report: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {identity(f): f for rule in report.get("rules", []) for f in rule.get("findings", [])}


def diff_reports(old: dict[str, Any], new: dict[str, Any]) -> ReportDiff:
    before, after = _findings(old), _findings(new)
    added = [f for key, f in after.items() if key not in before]
    gone = [f for key, f in before.items() if key not in after]
    rules: dict[str, dict[str, int]] = {}
    for name, findings in (("new", added), ("resolved", gone)):
        for finding in findings:
            rules.setdefault(finding["rule"], {"new": 0, "resolved": 0, "persisting": 0})
            rules[finding["rule"]][name] += 1
    for key in before.keys() & after.keys():
        rules.setdefault(key[0], {"new": 0, "resolved": 0, "persisting": 0})["persisting"] += 1
    truncated = any(
        rule.get("findings_truncated") for report in (old, new) for rule in report.get("rules", [])
    )
    persisting = len(before.keys() & after.keys())
    return ReportDiff(added, gone, persisting, truncated, dict(sorted(rules.items())))
