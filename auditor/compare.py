"""Compare: the rule's pure check on each pair of partitions, on worker threads.

What comes out are candidates (and duplicated referenced keys); auditor.confirm reads them
again before any is reported.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pyarrow as pa

from auditor.batch import SideRows
from auditor.checks.pii import check_copies
from auditor.checks.reference import KeyIndex, check_references, duplicates, group_keys
from auditor.config.model import ReferenceRule
from auditor.plan import RulePlan
from auditor.result import Finding

COMPARE_WORKERS = 2  # the machine's cores; Arrow kernels release the GIL


def outcomes(plan: RulePlan, pairs, stop: threading.Event):
    """Compare partitions on worker threads, at most a few in memory at once, in order.

    `pairs` yields (left, right) partitions, or (left, right, groups, key index) for a held
    right side (see _compare_partition).
    """
    with ThreadPoolExecutor(max_workers=COMPARE_WORKERS, thread_name_prefix="compare") as pool:
        window: deque = deque()
        for pair in pairs:
            if stop.is_set():
                break
            window.append(pool.submit(_compare_partition, plan, *pair))
            if len(window) >= COMPARE_WORKERS:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _compare_partition(plan: RulePlan, left, right, groups=None, index=None):
    """One partition's duplicated keys and candidate findings.

    `left` and `right` are tables, or functions that read them (see pairing.partition_pairs). A held
    side comes with its `groups` and, for integer keys, their `index` (KeyIndex): its
    duplicated keys are reported once, by the item whose `left` is None.
    """
    left = left() if callable(left) else left
    right = right() if callable(right) else right
    if groups is None:
        groups = group_keys(right, len(plan.key_types), plan.right.keys_unique)
        index = key_index(plan, right, groups, dense_only=True)
    elif left is not None:
        return groups.slice(0, 0), check(plan, left, right, groups, index)
    if left is None:
        left = SideRows.of(plan.left, plan.key_types).empty_table()
    return duplicates(groups), check(plan, left, right, groups, index)


def key_index(plan: RulePlan, right: pa.Table, groups: pa.Table, dense_only: bool = False):
    """The KeyIndex of what the referencing rows are looked up in, for one integer key.

    `dense_only`: None unless the keys fit a direct table (a partition's keys are probed once:
    hashing sparse keys is cheaper than sorting them).
    """
    if plan.key_types != ("int",):
        return None
    looked_up = groups if isinstance(plan.rule, ReferenceRule) else right
    index = KeyIndex(looked_up["c0"], dense_only)
    return index if index.dense or not dense_only else None


def duplicate_findings(plan: RulePlan, groups: pa.Table) -> list[Finding]:
    rule = plan.rule
    findings = []
    for dup in groups.to_pylist():
        key = {c.name: dup[f"c{i}"] for i, c in enumerate(plan.right.compare)}
        ref = {c.name: dup[f"c{i}"] for i, c in enumerate(plan.left.compare)}
        finding = Finding(rule.name, "duplicate_key", rule.severity, key, ref=ref)
        findings.append(replace(finding, count=dup["count_all"]))
    return findings


def check(plan: RulePlan, left: pa.Table, right: pa.Table, groups: pa.Table, index=None):
    """The rule's pure check: the same on a scanned partition and on re-read rows."""
    rule = plan.rule
    width = len(plan.key_types)
    if isinstance(rule, ReferenceRule):
        return check_references(left, groups, width, rule.allow_null, index)
    report_missing = rule.missing_source == "report"
    return check_copies(
        left,
        right,
        groups,
        width,
        plan.normalizers,
        report_missing,
        index,
        keep_values=not plan.left.rereadable,
    )
