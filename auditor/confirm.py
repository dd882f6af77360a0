"""Confirm: candidates read again by key in fresh snapshots and checked again (SPEC §8), then
built into findings (only as many as will be listed; the rest are counted).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from auditor.batch import LABEL, SideRows, key_names, label_tuples, names_of, tuples
from auditor.checks.reference import group_keys
from auditor.compare import check
from auditor.config.model import PiiRule, ReferenceRule
from auditor.plan import RulePlan, display
from auditor.recheck import Lookups
from auditor.result import Finding

if TYPE_CHECKING:
    from auditor.engine import RunOptions


def _recheck(plan: RulePlan, lookups: Lookups, chunk: pa.Table, identity: list[str]) -> pa.Table:
    """Candidates that are still findings when their rows are read again by key."""
    width = len(plan.key_types)
    if plan.left.rereadable:
        fresh_left = lookups.fetch(plan.left, "labels", label_tuples(chunk))
    else:  # files do not change during a run: the rows as read, the other side read again
        rows = chunk.select(SideRows.of(plan.left, plan.key_types).names)
        row_names = names_of(rows, LABEL) + (key_names(width) if plan.left.extract else [])
        first: dict[tuple, int] = {}
        for index, row in enumerate(tuples([rows[n] for n in row_names])):
            first.setdefault(row, index)
        fresh_left = rows.take(list(first.values()))  # a row is a candidate once per field
    fresh_right = lookups.fetch(plan.right, "compare", _valid_keys(fresh_left, width))
    fresh = check(plan, fresh_left, fresh_right, group_keys(fresh_right, width))
    names = names_of(chunk, LABEL) + identity
    if plan.left.extract is not None:  # one row holds several references: each its own
        names += key_names(width)
    wanted = set(tuples([chunk[n] for n in names]))
    mask = [row in wanted for row in tuples([fresh[n] for n in names])]
    return fresh.filter(pa.array(mask, pa.bool_()))


def _valid_keys(table: pa.Table, width: int) -> list[tuple]:
    return [k for k in tuples([table[n] for n in key_names(width)]) if None not in k]


def _counted(rows: pa.Table):
    """(kind, None, how many) per kind: candidates counted, not built (beyond max_findings)."""
    if rows.num_rows:
        for entry in pc.value_counts(rows["kind"]).to_pylist():
            yield entry["values"], None, entry["counts"]


def references(plan: RulePlan, options: RunOptions, lookups: Lookups, chunk: pa.Table, room: int):
    """Confirmed candidates as (kind, build, 1) for the first `room`, then (kind, None, n)."""
    rule = plan.rule
    assert isinstance(rule, ReferenceRule)
    width = len(plan.key_types)
    if options.recheck:
        chunk = _recheck(plan, lookups, chunk, ["kind"])
    outcomes: dict[tuple, tuple[str, tuple | None, str | None]] = {}
    if plan.aliases is not None:
        orphans = chunk.filter(pc.equal(chunk["kind"], "orphan"))
        outcomes = lookups.follow_aliases(_valid_keys(orphans, width))
    listed = chunk
    if plan.aliases is None:  # kinds are final: the rows past the listed ones are only counted
        listed = chunk.slice(0, room)
        yield from _counted(chunk.slice(room))
    for row in listed.to_pylist():
        canonical = tuple(row[n] for n in key_names(width))
        kind, suggested, note = row["kind"], None, None
        if kind == "orphan" and canonical in outcomes:
            kind, target, note = outcomes[canonical]
            if target is not None:
                suggested = {
                    c.name: part for c, part in zip(plan.right.compare, target, strict=True)
                }
        elif kind == "orphan" and None in canonical:
            note = f"not a valid {'/'.join(sorted(set(plan.key_types)))} key"

        def build(row=row, kind=kind, suggested=suggested, note=note):
            key = display(plan.left.labels, row, "r")
            ref = display(plan.left.compare, row, "k")
            finding = Finding(rule.name, kind, rule.severity, key, ref=ref, suggested=suggested)
            return replace(finding, note=note), None

        yield kind, build, 1


def copies(plan: RulePlan, options: RunOptions, lookups: Lookups, chunk: pa.Table, room: int):
    """Confirmed candidates as (kind, build, 1) for the first `room`, then (kind, None, n)."""
    rule = plan.rule
    assert isinstance(rule, PiiRule)
    if options.recheck:
        chunk = _recheck(plan, lookups, chunk, ["kind", "field"])
    mask = options.masker
    label_names = names_of(chunk, LABEL)
    yield from _counted(chunk.slice(room))
    for row in chunk.slice(0, room).to_pylist():

        def build(row=row):
            index = row["field"]
            labels = tuple(row[n] for n in label_names)
            finding = Finding(
                rule.name,
                row["kind"],
                rule.severity,
                display(plan.left.labels, row, "r"),
                ref=display(plan.left.compare, row, "k"),
                field=None if index is None else rule.fields[index].source,
                source_value=mask(row["source_value"]),
                copy_value=mask(row["copy_value"]),
            )
            return finding, labels if row["kind"] == "mismatch" else None

        yield row["kind"], build, 1
