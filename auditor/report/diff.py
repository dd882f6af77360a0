"""Run-to-run diff of two JSON reports: findings new, resolved and persisting.

A finding's identity is rule + kind + key + field, so a value that changed but is still wrong
persists, and a row fixed and broken again in another way shows as one resolved, one new.

A rule whose findings one of the two reports does not know in full (absent, `error`,
`skipped`, `interrupted`, or its list truncated by `max_findings`) has *unknown* findings:
none of them is new or resolved, so a night with a database down neither resolves every
finding of its rules nor makes them all new the night after (SPEC §5).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ijson
import numpy as np

from auditor.errors import ConfigError
from auditor.result import AuditResult, fails

UNKNOWN_STATUSES = ("error", "skipped", "interrupted")
# How many earlier reports `--baseline last` reads to find each rule's last known findings.
LOOKBACK = 30
HASH_BATCH = 4096  # findings hashed and looked up together
FINDINGS_PREFIX = "rules.item.findings.item"


def identity(finding: dict[str, Any], with_ref: bool = False) -> tuple[str, ...]:
    """rule + kind + key + field, and the ref on a rule whose rows hold several references."""
    key = json.dumps(finding.get("key"), sort_keys=True, ensure_ascii=False)
    found: tuple[str, ...] = (
        finding.get("rule", ""),
        finding.get("kind", ""),
        key,
        finding.get("field") or "",
    )
    if with_ref:
        found += (json.dumps(finding.get("ref"), sort_keys=True, ensure_ascii=False),)
    return found


def _hash(finding: dict[str, Any], keyed_by_ref: frozenset[str]) -> int:
    """A finding's identity as 64 bits: millions of them fit in a numpy array (a set of the
    identities themselves took gigabytes); a collision among 10M findings is 3 in a million."""
    with_ref = finding.get("rule") in keyed_by_ref
    text = "\x1f".join(identity(finding, with_ref)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


class FindingSource(Protocol):
    """Where a report's findings are read from, as many times as needed."""

    def findings(self, rules: set[str]) -> Iterator[dict[str, Any]]: ...


@dataclass(frozen=True)
class ReportFile:
    """A JSON report on disk: its findings are parsed as they are read (ijson)."""

    path: Path

    def findings(self, rules: set[str]) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as handle:
            for finding in ijson.items(handle, FINDINGS_PREFIX, use_float=True):
                if finding.get("rule") in rules:
                    yield finding


@dataclass(frozen=True)
class ResultFindings:
    """The findings of a run that has just ended (some of them may be on disk)."""

    result: AuditResult

    def findings(self, rules: set[str]) -> Iterator[dict[str, Any]]:
        for rule in self.result.rules:
            if rule.name in rules:
                for finding in rule.findings:
                    yield finding.to_dict()


# A report's rules, by name: the rule as the report has it (findings left out) and where its
# findings are read from.
Rules = dict[str, tuple[dict[str, Any], FindingSource]]


@dataclass(frozen=True)
class Report:
    """A report without its findings, which stay in `source` until they are read."""

    data: dict[str, Any]
    source: FindingSource

    @property
    def rules(self) -> Rules:
        return {r.get("name", ""): (r, self.source) for r in self.data.get("rules", [])}


def of_result(result: AuditResult) -> Report:
    return Report(result.to_dict(findings=[[] for _ in result.rules]), ResultFindings(result))


class Findings(Sequence[dict[str, Any]]):
    """Findings picked by identity out of sources, read again on each iteration."""

    def __init__(
        self,
        sources: list[tuple[FindingSource, set[str]]],
        wanted: np.ndarray,
        keyed_by_ref: frozenset[str],
    ) -> None:
        self._sources = sources
        self._wanted = wanted  # sorted identity hashes
        self._count = len(wanted)
        self._keyed_by_ref = keyed_by_ref

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self._count:
            return
        for batch, hashes in _hashed(self._sources, self._keyed_by_ref):
            for finding, keep in zip(batch, _isin(hashes, self._wanted), strict=True):
                if keep:
                    yield finding

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return list(itertools.islice(self, *index.indices(self._count)))
        return next(itertools.islice(self, index, None))


@dataclass(frozen=True)
class ReportDiff:
    new: Sequence[dict[str, Any]]
    resolved: Sequence[dict[str, Any]]
    persisting: int
    unknown_rules: list[str] = field(default_factory=list)
    rules: dict[str, dict[str, int]] = field(default_factory=dict)
    severities: dict[str, str] = field(default_factory=dict)  # of the compared rules

    def to_dict(self, new: Any = None, resolved: Any = None) -> dict[str, Any]:
        """`new` and `resolved` stand in for the lists when given (they are streamed)."""
        return {
            "new": list(self.new) if new is None else new,
            "resolved": list(self.resolved) if resolved is None else resolved,
            "persisting": self.persisting,
            "unknown_rules": self.unknown_rules,
        }

    def failing_new(self, fail_on: str) -> dict[str, int]:
        """New findings at or above `fail_on`, per rule: what should page someone."""
        return {
            name: counts["new"]
            for name, counts in self.rules.items()
            if counts["new"] and fails(self.severities.get(name, ""), fail_on)
        }

    def exit_code(self, fail_on: str) -> int:
        return 1 if self.failing_new(fail_on) else 0


def load_report(path: str | Path) -> Report:
    """A report's document without its findings, which are parsed (not loaded) when read."""
    target = Path(path)
    try:
        with target.open("rb") as handle:
            data = _without_findings(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: report not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a JSON report") from None
    except (OSError, UnicodeDecodeError, ijson.JSONError) as exc:
        raise ConfigError(f"{path}: not a JSON report: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise ConfigError(f"{path}: not an auditor report (schema_version 1)")
    return Report(data, ReportFile(target))


def _without_findings(handle: Any) -> Any:
    """The document with every rule's findings left out (parsed past, never held)."""
    builder = ijson.ObjectBuilder()
    for prefix, event, value in ijson.parse(handle, use_float=True):
        if not prefix.startswith(FINDINGS_PREFIX):
            builder.event(event, value)
    return getattr(builder, "value", None)


def known(rule: dict[str, Any] | None) -> bool:
    """Whether a report lists every finding of this rule."""
    return (
        rule is not None
        and rule.get("status") not in UNKNOWN_STATUSES
        and not rule.get("findings_truncated")
    )


def diff_reports(old: Rules | None, new: Rules) -> ReportDiff:
    """`old` None is the empty baseline (no earlier report yet): every rule of `new` is known
    there with no findings, so all of `new`'s findings are new. Identities are hashed and
    compared as sorted arrays; the new and resolved findings are read again when listed."""
    if old is None:
        old = {name: ({"status": "pass"}, _NO_FINDINGS) for name in new}
    names = list(dict.fromkeys([*new, *old]))
    unknown = [n for n in names if not (known(_rule(old, n)) and known(_rule(new, n)))]
    compared = [n for n in names if n not in unknown]
    keyed_by_ref = frozenset(
        n
        for n in compared
        if any("ref" in (_rule(r, n) or {}).get("identity", ()) for r in (old, new))
    )
    before, before_rules = _hashes(old, compared, keyed_by_ref)
    after, after_rules = _hashes(new, compared, keyed_by_ref)
    added, gone = ~_isin(after, before), ~_isin(before, after)
    rules = {}
    for index, name in enumerate(compared):
        now, then = after_rules == index, before_rules == index
        persisting = int(np.count_nonzero(now & ~added))
        rules[name] = {
            "new": int(np.count_nonzero(now & added)),
            "resolved": int(np.count_nonzero(then & gone)),
            "persisting": persisting,
        }
    severities = {  # a `warn` rule's findings are warnings (a warning rule, or no_ttl only)
        n: "warning" if new[n][0].get("status") == "warn" else str(new[n][0].get("severity", ""))
        for n in compared
    }
    return ReportDiff(
        Findings(_sources(new, compared), np.sort(after[added]), keyed_by_ref),
        Findings(_sources(old, compared), np.sort(before[gone]), keyed_by_ref),
        sum(counts["persisting"] for counts in rules.values()),
        unknown,
        rules,
        severities,
    )


class _NoFindings:
    def findings(self, rules: set[str]) -> Iterator[dict[str, Any]]:
        return iter(())


_NO_FINDINGS = _NoFindings()


def _rule(rules: Rules, name: str) -> dict[str, Any] | None:
    return rules[name][0] if name in rules else None


def _sources(rules: Rules, names: list[str]) -> list[tuple[FindingSource, set[str]]]:
    """Each source once, with the rules read from it (`--baseline last` mixes reports)."""
    grouped: dict[int, tuple[FindingSource, set[str]]] = {}
    for name in names:
        source = rules[name][1]
        grouped.setdefault(id(source), (source, set()))[1].add(name)
    return list(grouped.values())


def _hashes(
    rules: Rules, names: list[str], keyed_by_ref: frozenset[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct identity hashes of the named rules' findings, and each one's rule index."""
    index = {name: i for i, name in enumerate(names)}
    hashes: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for batch, found in _hashed(_sources(rules, names), keyed_by_ref):
        hashes.append(found)
        owners.append(np.fromiter((index[f["rule"]] for f in batch), np.int32, len(batch)))
    if not hashes:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32)
    unique, first = np.unique(np.concatenate(hashes), return_index=True)
    return unique, np.concatenate(owners)[first]


def _hashed(
    sources: list[tuple[FindingSource, set[str]]], keyed_by_ref: frozenset[str]
) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
    """The sources' findings HASH_BATCH at a time, with their identity hashes."""
    for source, rules in sources:
        stream = source.findings(rules)
        while batch := list(itertools.islice(stream, HASH_BATCH)):
            found = (_hash(finding, keyed_by_ref) for finding in batch)
            yield batch, np.fromiter(found, np.uint64, len(batch))


def _isin(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    at = np.searchsorted(sorted_set, values).clip(max=len(sorted_set) - 1)
    return sorted_set[at] == values


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
) -> tuple[Path | None, Rules | None]:
    """The newest earlier report of a config, with each rule it does not know in full (an
    outage, a `--rule` run) taken from the newest earlier report that does: the night after
    an outage is compared with the night before it. (None, None) when there is none yet."""
    reports = _dated_reports(directory, stem)[:LOOKBACK]
    if not reports:
        return None, None
    merged = load_report(reports[0]).rules
    missing = [name for name in rule_names if not known(_rule(merged, name))]
    for path in reports[1:]:
        if not missing:
            break
        older = load_report(path).rules
        for name in [n for n in missing if known(_rule(older, n))]:
            merged[name] = older[name]
            missing.remove(name)
    return reports[0], merged
