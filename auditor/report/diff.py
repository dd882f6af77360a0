"""Run-to-run diff of two JSON reports: findings new, resolved and persisting.

A finding's identity is rule + kind + key + field, so a value that changed but is still wrong
persists, and a row fixed and broken again in another way shows as one resolved, one new.

A rule whose findings one of the two reports does not know in full (absent, `error`,
`skipped`, `interrupted`, or its list truncated by `max_findings`) has *unknown* findings:
none of them is new or resolved, so a night with a database down neither resolves every
finding of its rules nor makes them all new the night after (SPEC §5).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError
from auditor.result import fails

UNKNOWN_STATUSES = ("error", "skipped", "interrupted")
# How many earlier reports `--baseline last` reads to find each rule's last known findings.
LOOKBACK = 30


def identity(finding: dict[str, Any]) -> tuple[str, str, str, str]:
    key = json.dumps(finding.get("key"), sort_keys=True, ensure_ascii=False)
    return (finding.get("rule", ""), finding.get("kind", ""), key, finding.get("field") or "")


@dataclass(frozen=True)
class ReportDiff:
    new: list[dict[str, Any]]
    resolved: list[dict[str, Any]]
    persisting: int
    unknown_rules: list[str] = field(default_factory=list)
    rules: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "resolved": self.resolved,
            "persisting": self.persisting,
            "unknown_rules": self.unknown_rules,
        }

    def failing_new(self, fail_on: str) -> list[dict[str, Any]]:
        """New findings at or above `fail_on`: what should page someone."""
        return [f for f in self.new if fails(f.get("severity", ""), fail_on)]

    def exit_code(self, fail_on: str) -> int:
        return 1 if self.failing_new(fail_on) else 0


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: report not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a JSON report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON report: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise ConfigError(f"{path}: not an auditor report (schema_version 1)")
    return data


def known(rule: dict[str, Any] | None) -> bool:
    """Whether a report lists every finding of this rule."""
    return (
        rule is not None
        and rule.get("status") not in UNKNOWN_STATUSES
        and not rule.get("findings_truncated")
    )


def _rules(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule.get("name", ""): rule for rule in report.get("rules", [])}


def diff_reports(old: dict[str, Any] | None, new: dict[str, Any]) -> ReportDiff:
    """`old` None is the empty baseline (no earlier report yet): every rule of `new` is known
    there with no findings, so all of `new`'s findings are new."""
    after_rules = _rules(new)
    before_rules: dict[str, dict[str, Any]]
    if old is None:
        before_rules = {name: {"status": "pass", "findings": []} for name in after_rules}
    else:
        before_rules = _rules(old)
    names = list(dict.fromkeys([*after_rules, *before_rules]))
    unknown = [n for n in names if not (known(before_rules.get(n)) and known(after_rules.get(n)))]
    compared = [n for n in names if n not in unknown]
    before = {identity(f): f for n in compared for f in before_rules[n].get("findings", [])}
    after = {identity(f): f for n in compared for f in after_rules[n].get("findings", [])}
    added = [f for key, f in after.items() if key not in before]
    gone = [f for key, f in before.items() if key not in after]
    rules = {n: {"new": 0, "resolved": 0, "persisting": 0} for n in compared}
    for name, findings in (("new", added), ("resolved", gone)):
        for finding in findings:
            rules[finding["rule"]][name] += 1
    for key in before.keys() & after.keys():
        rules[key[0]]["persisting"] += 1
    persisting = len(before.keys() & after.keys())
    return ReportDiff(added, gone, persisting, unknown, rules)


def _dated_reports(directory: Path, stem: str) -> list[Path]:
    """JSON reports `reports.dir` holds for one config, newest first (their names sort by
    time: `<stem>-<UTC time>[-N].json`, see files.dated_path)."""
    shape = re.compile(rf"{re.escape(stem)}-\d{{8}}T\d{{6}}Z(-\d+)?\.json")
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if shape.fullmatch(p.name)]
    return sorted(found, key=lambda p: _sort_key(p.name), reverse=True)


def _sort_key(name: str) -> tuple[str, int]:
    stamp, _, suffix = name.removesuffix(".json").rpartition("Z")
    return stamp, int(suffix.lstrip("-") or 1)


def last_baseline(
    directory: Path, stem: str, rule_names: list[str]
) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest earlier report of a config, with each rule it does not know in full (an
    outage, a `--rule` run) taken from the newest earlier report that does: the night after
    an outage is compared with the night before it. (None, None) when there is none yet."""
    reports = _dated_reports(directory, stem)[:LOOKBACK]
    if not reports:
        return None, None
    newest = load_report(reports[0])
    merged = _rules(newest)
    missing = [name for name in rule_names if not known(merged.get(name))]
    for path in reports[1:]:
        if not missing:
            break
        older = _rules(load_report(path))
        for name in [n for n in missing if known(older.get(n))]:
            merged[name] = older[name]
            missing.remove(name)
    return reports[0], {**newest, "rules": list(merged.values())}
