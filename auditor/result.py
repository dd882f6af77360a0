"""The one result model every renderer reads: frozen dataclasses with `to_dict()`.

Values in a Finding are already JSON-safe and, unless `--show-pii`, already masked: api.py masks
before it builds the result, so no renderer can leak a raw value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.report.diff import ReportDiff

KINDS = (
    "orphan",
    "soft_deleted",
    "stale_alias",
    "null_reference",
    "missing_source",
    "mismatch",
    "missing_value",
    "duplicate_key",
    "no_ttl",
)
# Kinds whose findings are warnings whatever the rule's severity (SPEC §9: a cache entry that
# never expires is worth knowing, not worth failing a run).
WARNING_KINDS = ("no_ttl",)
# Extra fields each kind always carries (null when unknown), per SPEC §3.
EXTRAS: dict[str, tuple[str, ...]] = {
    "orphan": ("ref",),
    "soft_deleted": ("ref",),
    "stale_alias": ("ref", "suggested"),
    "null_reference": ("ref",),
    "missing_source": ("ref",),
    "mismatch": ("ref", "field", "source_value", "copy_value", "suggested_key"),
    "missing_value": ("ref", "field", "source_value", "copy_value"),
    "duplicate_key": ("ref", "count"),
    "no_ttl": (),
}
OPTIONAL = ("note",)
# What tells two findings apart across runs (`auditor diff`) on a rule whose rows can hold
# several references (`extract`); the rule's report lists it as its `identity` (otherwise:
# rule, kind, key, field).
REF_IDENTITY = ("rule", "kind", "key", "ref", "field")


def fails(severity: str, fail_on: str) -> bool:
    """Whether a finding of this severity fails a run with this `fail_on` (SPEC §7)."""
    rank = {"warning": 1, "error": 2}
    return fail_on != "never" and rank.get(severity, 0) >= rank[fail_on]


def finished_status(severity: str, counts: dict[str, int]) -> str:
    """A rule that ran to its end: `pass` without findings, `warn` with findings of a
    warning-severity rule (they fail a run only under `fail_on: warning`), else `fail`."""
    if not any(counts.values()):
        return "pass"
    if severity == "warning" or all(k in WARNING_KINDS for k, n in counts.items() if n):
        return "warn"
    return "fail"


def json_safe(value: Any) -> Any:
    """Database values as JSON: ints and text stay, everything else becomes text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def row(names: tuple[str, ...] | list[str], values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    return {name: json_safe(value) for name, value in zip(names, values, strict=True)}


@dataclass(frozen=True)
class Finding:
    rule: str
    kind: str
    severity: str
    key: dict[str, Any]
    ref: dict[str, Any] | None = None
    field: str | None = None
    source_value: str | None = None
    copy_value: str | None = None
    suggested: dict[str, Any] | None = None
    suggested_key: dict[str, Any] | None = None
    count: int | None = None
    note: str | None = None

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """rule + kind + key + field: how `auditor diff` matches findings across runs."""
        return (self.rule, self.kind, repr(sorted(self.key.items())), self.field or "")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "key": self.key,
        }
        for name in EXTRAS[self.kind]:
            data[name] = getattr(self, name)
        for name in OPTIONAL:
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_values(self, source_value: str | None, copy_value: str | None) -> Finding:
        return replace(self, source_value=source_value, copy_value=copy_value)


@dataclass(frozen=True)
class RuleResult:
    name: str
    type: str
    severity: str
    status: str  # pass | warn | fail | error | interrupted | skipped (SPEC §7)
    error: str | None = None
    rows_scanned: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    findings: Sequence[Finding] = ()  # a tuple, or SpilledFindings read from disk
    findings_truncated: bool = False
    description: str | None = None
    error_code: int | None = None  # exit code of the error that stopped this rule
    sqlstate: str | None = None  # what the database said about that error: for the log only
    errno: int | None = None
    # One row can hold several references (`extract`): a finding is then known by its ref too.
    keyed_by_ref: bool = False
    rule_sha256: str | None = None  # the rule as configured (see config.model.fingerprint)
    incremental: dict[str, Any] | None = None  # `run --incremental`: mode, since, watermark

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self, findings: Any = None) -> dict[str, Any]:
        """`findings` stands in for the list when given (the JSON writer streams them)."""
        return (
            {
                "name": self.name,
                "type": self.type,
                "severity": self.severity,
                "description": self.description,
                "status": self.status,
                "error": self.error,
                "rows_scanned": dict(self.rows_scanned),
                "duration_s": round(self.duration_s, 3),
                "counts": dict(self.counts),
                "findings": [f.to_dict() for f in self.findings] if findings is None else findings,
                "findings_truncated": self.findings_truncated,
            }
            | ({"identity": list(REF_IDENTITY)} if self.keyed_by_ref else {})
            | ({"rule_sha256": self.rule_sha256} if self.rule_sha256 else {})
            | ({"incremental": self.incremental} if self.incremental else {})
        )


@dataclass(frozen=True)
class AuditResult:
    run_id: str
    auditor_version: str
    started_at: str
    finished_at: str
    config_path: str
    config_sha256: str
    status: str  # pass | fail | error | interrupted
    exit_code: int
    rules: tuple[RuleResult, ...]
    databases: dict[str, str] = field(default_factory=dict)  # name -> redacted URL
    fail_on: str = "error"
    baseline: str | None = None  # the report `--baseline` compared with (None: empty baseline)
    diff: ReportDiff | None = None  # set when the run was given a baseline

    @property
    def totals(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        by_severity = {"error": 0, "warning": 0}
        for rule in self.rules:
            for kind, n in rule.counts.items():
                by_kind[kind] = by_kind.get(kind, 0) + n
                severity = "warning" if kind in WARNING_KINDS else rule.severity
                by_severity[severity] = by_severity.get(severity, 0) + n
        return {
            "findings": sum(by_kind.values()),
            "by_kind": by_kind,
            "by_severity": by_severity,
            "rules": len(self.rules),
            "rules_failed": sum(r.status == "fail" for r in self.rules),
            "rules_warned": sum(r.status == "warn" for r in self.rules),
            "rules_errored": sum(r.status == "error" for r in self.rules),
        }

    @property
    def duration_s(self) -> float:
        start = dt.datetime.fromisoformat(self.started_at)
        end = dt.datetime.fromisoformat(self.finished_at)
        return (end - start).total_seconds()

    def to_dict(
        self, findings: list[Any] | None = None, diff: tuple[Any, Any] | None = None
    ) -> dict[str, Any]:
        """`findings` (one per rule) and `diff` (new, resolved) stand in for those lists
        when given: the JSON writer streams them."""
        data = {
            "schema_version": 1,
            "run_id": self.run_id,
            "auditor_version": self.auditor_version,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "config": {"path": self.config_path, "sha256": self.config_sha256},
            "databases": dict(self.databases),
            "status": self.status,
            "exit_code": self.exit_code,
            "fail_on": self.fail_on,
            "rules": [
                r.to_dict(None if findings is None else findings[i])
                for i, r in enumerate(self.rules)
            ],
            "totals": self.totals,
        }
        if self.diff is not None:
            data |= {"baseline": self.baseline, "diff": self.diff.to_dict(*(diff or ()))}
        return data
