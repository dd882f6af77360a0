"""Findings of a report -> the changes that repair them, as the databases hold them now.

The report is masked and may be days old, so nothing is taken from it but identities: each
finding's row is read again by key (the recheck's look-ups, in fresh read-only snapshots) and
the rule's own check runs on what comes back. A finding that no longer holds, or whose row
no longer holds what the report saw, is skipped; the rest become `Change`s carrying the
values the row holds now (the guard every statement repeats) and the values to write, read
fresh from the source (SPEC §10).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from auditor.batch import LABEL, key_names
from auditor.checks.base import canonical_key
from auditor.checks.reference import group_keys
from auditor.compare import check
from auditor.config.model import PiiRule, ReferenceRule
from auditor.db.reflect import category
from auditor.mask import Masker, partial
from auditor.plan import RulePlan, display
from auditor.recheck import Lookups, stored_forms

# Findings re-checked per round of look-ups: memory stays flat however many a report lists.
CHUNK = 5_000
# Why a finding of a kind is left alone although the rule's fix block names it (plan.md).
NO_FIX = "no fix exists for this kind"


@dataclass(frozen=True)
class Change:
    """One row's repair: where `columns` still hold `old`, write `new` (delete: None)."""

    rule: str
    kind: str
    action: str  # delete | nullify | rewrite | copy_source | rekey
    key: tuple[Any, ...]  # the row's label values, as stored
    columns: tuple[str, ...]  # the columns the guard reads (and an update writes)
    old: tuple[Any, ...]
    new: tuple[Any, ...] | None


@dataclass
class RuleChanges:
    """What one rule's findings become: changes, and what was skipped or left alone, why."""

    rule: str
    changes: list[Change] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> findings
    left_alone: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, why) -> n


def action_for(rule: ReferenceRule | PiiRule, finding: dict[str, Any]) -> tuple[str, str]:
    """(action, why) for a finding; action "none" when the fix block leaves it alone."""
    kind = finding["kind"]
    fix = rule.fix
    if isinstance(rule, PiiRule) and kind == "mismatch" and finding.get("suggested_key"):
        if rule.fix.wrong_entity == "rekey":
            return "rekey", ""
        return (
            "none",
            "wrong entity (suggested_key): copy_source never touches it; wrong_entity: none",
        )
    action = getattr(fix, kind, None)
    if action is None:
        return "none", NO_FIX
    if action == "none":
        return "none", f"fix.{kind}: none"
    return action, ""


def rule_changes(
    plan: RulePlan, lookups: Lookups, findings: Iterable[dict[str, Any]]
) -> Iterator[RuleChanges]:
    """Per CHUNK of `findings` (one rule's, from a report): the changes that repair them as
    the rows are now, and what was skipped or left alone. Memory stays flat: a chunk is used
    (written, applied) before the next is read."""
    rekeyed: set[tuple] = set()  # a wrong-entity row has a finding per field: one rekey
    result = RuleChanges(plan.rule.name)
    wanted: list[tuple[dict[str, Any], str]] = []
    for finding in findings:
        action, why = action_for(plan.rule, finding)
        if action == "none":
            result.left_alone[(finding["kind"], why)] += 1
            continue
        wanted.append((finding, action))
        if len(wanted) >= CHUNK:
            _chunk(plan, lookups, wanted, result, rekeyed)
            yield result
            result, wanted = RuleChanges(plan.rule.name), []
    if wanted:
        _chunk(plan, lookups, wanted, result, rekeyed)
    yield result


def _chunk(
    plan: RulePlan,
    lookups: Lookups,
    wanted: list[tuple[dict[str, Any], str]],
    into: RuleChanges,
    rekeyed: set[tuple],
) -> None:
    labels = [_label_tuple(plan, finding) for finding, _ in wanted]
    fresh_left = lookups.fetch(plan.left, "labels", labels)
    width = len(plan.key_types)
    keys = [k for k in _rows(fresh_left, key_names(width)) if None not in k]
    fresh_right = lookups.fetch(plan.right, "compare", keys)
    fresh = check(plan, fresh_left, fresh_right, group_keys(fresh_right, width))
    rows = fresh.to_pylist()
    if isinstance(plan.rule, ReferenceRule):
        now = _references_now(plan, lookups, rows)
        for finding, action in wanted:
            _reference_change(plan, finding, action, now, into)
        return
    copies = {_shown(plan, row): row for row in fresh_left.to_pylist()}
    schema = fresh_left.schema
    now = {(_shown(plan, row), row["kind"], row["field"]): row for row in rows}
    for finding, action in wanted:
        if action == "rekey":
            shown = _identity(finding["key"])
            if shown not in rekeyed:
                rekeyed.add(shown)
                _rekey(plan, lookups, finding, copies.get(shown), schema, into)
            continue
        _copy_change(plan, finding, action, now, into)


def _references_now(plan: RulePlan, lookups: Lookups, rows: list[dict[str, Any]]) -> dict:
    """(row, ref) -> (kind, suggested) for the re-read rows, retired ids followed."""
    width = len(plan.key_types)
    outcomes: dict[tuple, tuple[str, tuple | None, str | None]] = {}
    if plan.aliases is not None:
        orphans = [tuple(r[n] for n in key_names(width)) for r in rows if r["kind"] == "orphan"]
        outcomes = lookups.follow_aliases([k for k in orphans if None not in k])
    now: dict[tuple, tuple[str, dict | None, dict]] = {}
    for row in rows:
        kind, suggested = row["kind"], None
        canonical = tuple(row[n] for n in key_names(width))
        if kind == "orphan" and canonical in outcomes:
            kind, target, _ = outcomes[canonical]
            if target is not None:
                suggested = dict(zip((c.name for c in plan.right.compare), target, strict=True))
        ref = display(plan.left.compare, row, "k")
        now[(_shown(plan, row), _identity(ref))] = (kind, suggested, row)
    return now


def _reference_change(
    plan: RulePlan, finding: dict[str, Any], action: str, now: dict, into: RuleChanges
) -> None:
    rule = plan.rule
    assert isinstance(rule, ReferenceRule)
    found = now.get((_identity(finding["key"]), _identity(finding.get("ref") or {})))
    if found is None or found[0] != finding["kind"]:
        into.skipped["no longer holds"] += 1
        return
    kind, suggested, row = found
    if kind == "stale_alias" and suggested != finding.get("suggested"):
        into.skipped["the alias now names another id"] += 1
        return
    columns = plan.left.compare
    old = tuple(_stored(c, row[f"k{i}"]) for i, c in enumerate(columns))
    new: tuple[Any, ...] | None = None
    if action == "nullify":
        new = tuple(None for _ in columns)
    elif action == "rewrite":
        assert suggested is not None
        target = [suggested[c.name] for c in plan.right.compare]
        new = tuple(_stored(c, part) for c, part in zip(columns, target, strict=True))
    change = Change(
        rule.name, kind, action, _key(plan, row), tuple(c.name for c in columns), old, new
    )
    into.changes.append(change)


def _copy_change(
    plan: RulePlan, finding: dict[str, Any], action: str, now: dict, into: RuleChanges
) -> None:
    rule = plan.rule
    assert isinstance(rule, PiiRule)
    index = next((i for i, f in enumerate(rule.fields) if f.source == finding.get("field")), None)
    row = now.get((_identity(finding["key"]), finding["kind"], index))
    if index is None or row is None:
        into.skipped["no longer holds"] += 1
        return
    if display(plan.left.compare, row, "k") != (finding.get("ref") or {}):
        into.skipped["the copy's key changed since the audit"] += 1
        return
    if not _same_as_audited(row["copy_value"], finding.get("copy_value")):
        into.skipped["the copy's value changed since the audit"] += 1
        return
    if row["source_value"] is None:
        into.left_alone[
            (finding["kind"], "the source has no value: copying would erase the copy")
        ] += 1
        return
    column = plan.left.values[index]
    change = Change(
        rule.name,
        finding["kind"],
        action,
        _key(plan, row),
        (column.name,),
        (_stored(column, row["copy_value"]),),
        (_stored(column, row["source_value"]),),
    )
    into.changes.append(change)


def _rekey(
    plan: RulePlan,
    lookups: Lookups,
    finding: dict[str, Any],
    copy_row: dict[str, Any] | None,
    schema: pa.Schema,
    into: RuleChanges,
) -> None:
    """Re-point a copy at the source row whose PII it holds, if that row still matches all of
    the copy's fields and the copy still mismatches the row it points at."""
    rule = plan.rule
    suggested = finding["suggested_key"]
    if copy_row is None or display(plan.left.compare, copy_row, "k") != (finding.get("ref") or {}):
        into.skipped["no longer holds"] += 1
        return
    width = len(plan.key_types)
    target = tuple(
        canonical_key(pa.array([_text(suggested[c.name])]), plan.key_types[i])[0].as_py()
        for i, c in enumerate(plan.right.compare)
    )
    copy = pa.Table.from_pylist([copy_row], schema=schema)
    current = lookups.fetch(plan.right, "compare", [tuple(copy_row[n] for n in key_names(width))])
    still_wrong = check(plan, copy, current, group_keys(current, width)).num_rows > 0
    moved = copy
    for i, name in enumerate(key_names(width)):
        moved = moved.set_column(
            moved.schema.get_field_index(name), name, pa.array([target[i]], moved[name].type)
        )
    right = lookups.fetch(plan.right, "compare", [target])
    fits = right.num_rows > 0 and check(plan, moved, right, group_keys(right, width)).num_rows == 0
    if not (still_wrong and fits):
        into.skipped["no longer holds"] += 1
        return
    columns = plan.left.compare
    old = tuple(_stored(c, copy_row[f"k{i}"]) for i, c in enumerate(columns))
    new = tuple(
        _stored(c, suggested[s.name]) for c, s in zip(columns, plan.right.compare, strict=True)
    )
    change = Change(
        rule.name,
        "mismatch",
        "rekey",
        _key(plan, copy_row),
        tuple(c.name for c in columns),
        old,
        new,
    )
    into.changes.append(change)


def _same_as_audited(value: str | None, audited: str | None) -> bool:
    """Whether the copy's value now could be the one the (masked) report saw: equal when the
    report holds raw values (--show-pii), the same partial mask or keyed hash otherwise. A
    hash under a per-run random key cannot be compared: the recheck alone decides then."""
    if audited is None or value is None:
        return audited is None and value is None
    if audited.startswith("h:") and len(audited) == 14:
        key = os.environ.get("AUDITOR_HASH_KEY")
        return key is None or Masker("hash", key.encode())(value) == audited
    return audited in (value, partial(value))


def _label_tuple(plan: RulePlan, finding: dict[str, Any]) -> tuple:
    key = finding.get("key") or {}
    return tuple(key.get(c.name) for c in plan.left.labels)


def _shown(plan: RulePlan, row: dict[str, Any]) -> tuple:
    return _identity(display(plan.left.labels, row, LABEL))


def _identity(values: dict[str, Any]) -> tuple:
    """Column values as text, in the columns' order (a report keeps it): what a finding's key
    or ref and a re-read row are matched by."""
    return tuple(map(str, values.values()))


def _key(plan: RulePlan, row: dict[str, Any]) -> tuple:
    return tuple(_stored(c, row[f"{LABEL}{i}"]) for i, c in enumerate(plan.left.labels))


def _rows(table: pa.Table, names: list[str]) -> Iterator[tuple]:
    return zip(*(table[n].to_pylist() for n in names), strict=True)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _stored(column: sa.Column, value: Any) -> Any:
    """A value as the column stores it (text from a batch back to an int, a UUID, a date)."""
    if value is None:
        return None
    forms = stored_forms(column, category(column), "label", value)
    return forms[0] if forms else value
