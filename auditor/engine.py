"""Runs one planned rule: scan both sides concurrently, compare partition by partition,
confirm candidates with look-ups, and collect exact counts plus a capped list of findings."""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from auditor import log
from auditor.checks.pii import check_copies
from auditor.checks.reference import KeyIndex, check_references, duplicates, group_keys
from auditor.concurrency import CancelToken, retrying
from auditor.config.model import PiiRule, ReferenceRule, Settings
from auditor.extract import UNMATCHED
from auditor.findings import FindingLog
from auditor.mask import Masker
from auditor.plan import RedisSidePlan, RulePlan, SidePlan, display
from auditor.recheck import Lookups, label_tuples, tuples
from auditor.redis_store import REDIS_KEY
from auditor.result import Finding, RuleResult, finished_status
from auditor.scan import (
    MAX_PARTITIONS,
    Spill,
    partition_count,
    prepared_batches,
    scan_side,
    side_schema,
)
from auditor.scratch import Scratch, scratch
from auditor.suggest import suggest_keys

CONFIRM_CHUNK = 10_000  # candidates confirmed together: fewer, larger look-up statements
# A referenced side estimated at most this many rows is held in memory (see _held_right_side):
# ~25 MB for rows of 100 bytes. Its keys are indexed once, so the other side streams past in
# chunks of one partition (an earlier version, re-hashing the held keys per 200k-row chunk,
# peaked 90 MB above partitioning on W1 at scale 2).
HOLD_MAX_ROWS = 250_000
# A single integer key is indexed once (KeyIndex), so there the held side's size does not weigh
# on every chunk: it is held up to 4x as many rows when the other side is estimated at least 8x
# its size, whose spilling would cost more than reading the held side first. (W1 at scale 2,
# 400k products against 10M reviews: 2.25 s against 2.85 s partitioned, peak 174 against
# 160 MB; 1.6M held against 5M: no faster, 263 against 154 MB, hence the ratio.)
INDEXED_HOLD_FACTOR = 4
INDEXED_HOLD_RATIO = 8
# Byte budgets, turned into rows with each table's estimated row width (wide rows, e.g. long
# texts, get fewer rows; the defaults above fit rows of up to ~100-300 bytes unchanged).
HOLD_MAX_BYTES = 32 << 20  # the held side, as estimated before reading it
BATCH_BYTES = 8 << 20  # one batch from the driver
PARTITION_BYTES = 16 << 20  # one side's share of a partition
Progress = Callable[[str, str, int, int | None], None]  # rule, side, rows read, estimate


@dataclass
class RunOptions:
    batch_size: int = 50_000
    max_findings: int = 1000
    recheck: bool = True
    masker: Masker = field(default_factory=lambda: Masker.create("partial"))
    rows_per_partition: int | None = None
    hold_rows: int | None = None  # None: HOLD_MAX_ROWS; 0 always partitions
    # Called between scan and recheck; tests use it to change the data in that window.
    before_recheck: Callable[[], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RunOptions:
        """The config's `settings:` (batch size, cap, mask), then whatever the caller overrides."""
        defaults = {
            "batch_size": settings.batch_size,
            "max_findings": settings.max_findings,
            "masker": Masker.create(settings.mask),
        }
        return cls(**{**defaults, **overrides})


@dataclass
class Collector:
    """Exact counts of every finding, and the first `cap` findings themselves (a FindingLog:
    in flat memory however many)."""

    cap: int
    counts: Counter[str] = field(default_factory=Counter)
    log: FindingLog = field(default_factory=FindingLog)

    def add(self, finding: Finding, labels: tuple | None = None) -> None:
        self.counts[finding.kind] += 1
        if self.cap == 0 or self.log.count < self.cap:
            self.log.add(finding, labels)

    def room(self, wanted: int) -> int:
        """How many of `wanted` more findings will still be listed."""
        return wanted if self.cap == 0 else max(0, min(wanted, self.cap - self.log.count))

    def add_lazy(self, kind: str, build: Callable[[], tuple[Finding, tuple | None]]) -> None:
        """Count a finding; build it (masking, display values) only if it will be listed."""
        if self.cap == 0 or self.log.count < self.cap:
            self.add(*build())
        else:
            self.counts[kind] += 1

    @property
    def truncated(self) -> bool:
        return sum(self.counts.values()) > self.log.count


def run_rule(plan: RulePlan, options: RunOptions, progress: Progress, stop: threading.Event):
    """Audit one rule; returns its RuleResult (errors propagate to api.py). A connection lost
    while the referencing side streams into the compare starts the rule over: findings were
    already confirmed from that stream. (A side read into its spill is retried by itself.)"""
    started = time.monotonic()
    return retrying(
        lambda: _attempt(plan, options, progress, stop, started), plan.rule.name, "scan_retry", stop
    )


class _TooBig(Exception):
    """The side meant to be held in memory turned out bigger than its estimate."""


def _attempt(plan: RulePlan, options: RunOptions, progress, stop, started: float) -> RuleResult:
    rule = plan.rule
    collector = Collector(options.max_findings)
    rows: dict[str, int] = {}
    with scratch() as space, contextlib.ExitStack() as stack:
        right = _held_right_side(plan, options, progress, stop, rows)
        if right is None:
            left, right = _scan(plan, options, progress, stop, space, rows)
            pairs = _partition_pairs(left, right, _rows_per_partition(options, plan))
            log.event("scan_done", rule=rule.name, rows=sum(rows.values()),
                      duration_s=round(time.monotonic() - started, 3))  # fmt: skip
        else:
            pairs = _streamed_pairs(plan, options, progress, stop, rows, right.read(0))
        lookups = Lookups(plan, stack, stop)
        confirm = _confirm_references if isinstance(rule, ReferenceRule) else _confirm_copies

        def confirmed(candidates: pa.Table) -> None:
            if stop.is_set():  # stopping: queued chunks are dropped, the rule is interrupted
                return
            room = collector.room(candidates.num_rows)
            for kind, build, count in confirm(plan, options, lookups, candidates, room):
                if build is None:
                    collector.counts[kind] += count
                else:
                    collector.add_lazy(kind, build)

        def add_duplicates(duplicate_keys: pa.Table) -> None:
            listed = duplicate_keys.slice(0, collector.room(duplicate_keys.num_rows))
            for finding in _duplicate_findings(plan, listed):
                collector.add(finding)
            if duplicate_keys.num_rows > listed.num_rows:
                collector.counts["duplicate_key"] += duplicate_keys.num_rows - listed.num_rows

        # Look-ups wait on the databases: one thread confirms while this one keeps comparing;
        # it is also the only thread that touches the collector, in the order of the outcomes.
        with ThreadPoolExecutor(1, thread_name_prefix="confirm") as confirmer:
            confirming: deque = deque()
            hook = options.before_recheck
            pending: list[pa.Table] = []
            for outcome in itertools.chain(_compared(plan, pairs, stop), [None]):
                if outcome is not None:
                    duplicate_keys, candidates = outcome
                    if duplicate_keys.num_rows:
                        confirming.append(confirmer.submit(add_duplicates, duplicate_keys))
                    pending.append(candidates)
                if hook and (pending or outcome is None):
                    hook()  # once, between reading the rows and reading the candidates again
                    hook = None
                if pending and (
                    outcome is None or sum(t.num_rows for t in pending) >= CONFIRM_CHUNK
                ):
                    confirming.append(confirmer.submit(confirmed, pa.concat_tables(pending)))
                    pending.clear()
                while confirming and (len(confirming) > 2 or outcome is None):
                    confirming.popleft().result()
        compared = time.monotonic()
        log.event("compare_done", rule=rule.name, duration_s=round(compared - started, 3))
        cache = plan.left
        if isinstance(cache, RedisSidePlan) and cache.require_ttl and not stop.is_set():
            for key in cache.keys_without_ttl():  # as the keys are now: nothing to re-check
                collector.add(Finding(rule.name, "no_ttl", "warning", {REDIS_KEY: key}))
        suggested = None
        if isinstance(rule, PiiRule) and rule.suggest_keys and not stop.is_set():
            suggested = suggest_keys(plan, lookups, right, collector.log.labelled())
            log.event("suggest_done", rule=rule.name,
                      duration_s=round(time.monotonic() - compared, 3))  # fmt: skip
    return RuleResult(
        name=rule.name,
        type=rule.type,
        severity=rule.severity,
        description=rule.description,
        status="interrupted" if stop.is_set() else finished_status(rule.severity, collector.counts),
        rows_scanned=rows,
        duration_s=time.monotonic() - started,
        counts=dict(sorted(collector.counts.items())),
        findings=collector.log.findings(suggested),
        keyed_by_ref=plan.left.extract is not None,
        findings_truncated=collector.truncated,
    )


def _rows_per_partition(options: RunOptions, plan: RulePlan) -> int:
    """Rows of one side per partition: twice a batch, fewer where rows are wide."""
    if options.rows_per_partition:
        return options.rows_per_partition
    rows = max(options.batch_size * 2, 1)
    widths = [s.row_bytes for s in (plan.left, plan.right) if s.row_bytes]
    return min(rows, max(1_000, PARTITION_BYTES // max(widths))) if widths else rows


def _batch_rows(side: SidePlan, options: RunOptions) -> int:
    """Rows per batch read from the driver: `batch_size`, fewer where rows are wide."""
    width = side.row_bytes
    return min(options.batch_size, max(256, BATCH_BYTES // width)) if width else options.batch_size


def _partition_pairs(left: Spill, right: Spill, rows_per_partition: int, depth: int = 0):
    """Matching partitions of both sides; one that came out too big is split again first."""
    for part in range(left.partitions):
        size = int(left.counts[part] + right.counts[part])
        weight = float(left.sizes[part] + right.sizes[part])  # in bytes: row estimates can miss
        if (size > 4 * rows_per_partition or weight > 4 * PARTITION_BYTES) and depth < 3:
            wanted = max(size / rows_per_partition, weight / PARTITION_BYTES)
            finer = min(MAX_PARTITIONS, max(2, math.ceil(wanted)))
            sub_left, sub_right = left.split(part, finer), right.split(part, finer)
            left.drop(part)
            yield from _partition_pairs(sub_left, sub_right, rows_per_partition, depth + 1)
        else:
            # Read on the compare worker: two partitions are read at once, not one by one here.
            yield _reader(left, part, drop=True), _reader(right, part, drop=False)


def _reader(spill: Spill, part: int, drop: bool) -> Callable[[], pa.Table]:
    """Reads one partition when called; the referenced side stays for suggest_keys."""

    def read() -> pa.Table:
        table = spill.read(part)
        if drop:
            spill.drop(part)
        return table

    return read


def _held_right_side(plan: RulePlan, options: RunOptions, progress, stop, rows) -> Spill | None:
    """The referenced side read whole into memory when it is estimated small, else None.

    Then the referencing side is compared chunk by chunk as it streams (_streamed_pairs): no
    spill files, and comparing overlaps reading. A side that turns out much bigger than its
    estimate is dropped again and the rule falls back to partitioning.
    """
    estimate, width = plan.right.info.estimated_rows, plan.right.row_bytes
    limit = _hold_limit(plan, options, estimate)
    if limit <= 0 or estimate is None or estimate > limit:
        return None
    if width and estimate * width > HOLD_MAX_BYTES:
        return None
    schema = side_schema(plan.right, plan.key_types)
    held = _Capped(schema, 2 * limit + options.batch_size, 2 * HOLD_MAX_BYTES)
    try:
        _read_side(plan, plan.right, held, options, progress, stop, rows)
    except _TooBig:
        rows.pop(plan.right.role, None)
        log.event("held_side_too_big", rule=plan.rule.name, side=plan.right.label)
        return None
    return held


def _hold_limit(plan: RulePlan, options: RunOptions, estimate: int | None) -> int:
    """Most rows of the referenced side held in memory (see INDEXED_HOLD_FACTOR)."""
    if options.hold_rows is not None:
        return options.hold_rows
    other = plan.left.info.estimated_rows
    if plan.key_types == ("int",) and estimate and other and other >= INDEXED_HOLD_RATIO * estimate:
        return HOLD_MAX_ROWS * INDEXED_HOLD_FACTOR
    return HOLD_MAX_ROWS


class _Capped(Spill):
    """An in-memory spill of one partition that refuses to grow past `cap` rows or
    `cap_bytes` bytes (estimates of both can be wrong)."""

    def __init__(self, schema: pa.Schema, cap: int, cap_bytes: int) -> None:
        super().__init__(schema, 1, None)
        self.cap, self.cap_bytes, self.bytes = cap, cap_bytes, 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.bytes += batch.nbytes
        if self.rows + batch.num_rows > self.cap or self.bytes > self.cap_bytes:
            raise _TooBig
        super().add(batch)


def _streamed_pairs(plan: RulePlan, options: RunOptions, progress, stop, rows, right: pa.Table):
    """(chunk of referencing rows, the held side, its key groups, their KeyIndex) as the
    referencing side streams.

    Chunks have a fixed size (one partition's worth), so memory does not grow with either table.
    Integer keys of the held side are indexed once (KeyIndex); other keys are hashed again per
    chunk.
    """
    groups = group_keys(right, len(plan.key_types), plan.right.keys_unique)
    yield None, right, groups, None  # the held side's duplicated keys, reported once
    index = _key_index(plan, right, groups)  # what the chunks are looked up in, indexed once
    side = plan.left
    schema = side_schema(side, plan.key_types)
    chunk_rows = _rows_per_partition(options, plan)
    rows[side.role] = 0
    rows.pop(UNMATCHED, None)
    report = _counter(plan, side, progress, rows)
    buffer: list[pa.RecordBatch] = []
    buffered = 0
    # A lost connection here propagates: run_rule starts the rule over (see there).
    batch_rows = _batch_rows(side, options)
    for batch in prepared_batches(side, schema, plan.key_types, batch_rows, report, stop):
        buffer.append(batch)
        buffered += batch.num_rows
        if buffered >= chunk_rows:
            yield pa.Table.from_batches(buffer).combine_chunks(), right, groups, index
            buffer, buffered = [], 0
    if buffered:
        yield pa.Table.from_batches(buffer).combine_chunks(), right, groups, index


def _counter(plan: RulePlan, side: SidePlan, progress: Progress, rows: dict[str, int]):
    """Counts a side's rows as they are read (`rows[role]`, set to 0 first) and reports them."""

    def report(role: str, n: int) -> None:
        if role == UNMATCHED:  # rows whose text held no reference: counted, not progress
            rows[UNMATCHED] = rows.get(UNMATCHED, 0) + n
            return
        rows[role] += n
        progress(plan.rule.name, role, n, side.info.estimated_rows)

    return report


def _read_side(plan, side: SidePlan, spill: Spill, options, progress, stop, rows) -> None:
    """Read one side into its spill; a lost connection reads the side again, whole (one
    statement is one snapshot)."""
    report = _counter(plan, side, progress, rows)

    def attempt() -> None:
        rows[side.role] = 0
        rows.pop(UNMATCHED, None)
        scan_side(side, plan.key_types, spill, _batch_rows(side, options), report, stop)

    retrying(attempt, plan.rule.name, "scan_retry", stop, reset=spill.reset)


def _scan(plan, options, progress, stop, space: Scratch, rows) -> tuple[Spill, Spill]:
    """Read both sides at once (one thread and one connection each)."""
    estimates = (plan.left.info.estimated_rows, plan.right.info.estimated_rows)
    partitions = partition_count(*estimates, rows_per_partition=_rows_per_partition(options, plan))
    key_range = plan.partition_range
    spills = [
        Spill(side_schema(side, plan.key_types), partitions, space, key_range=key_range)
        for side in (plan.left, plan.right)
    ]

    cancel = CancelToken(stop)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan") as pool:
        futures = [
            pool.submit(_read_side, plan, side, spill, options, progress, cancel, rows)
            for side, spill in zip((plan.left, plan.right), spills, strict=True)
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is None:
                continue
            cancel.set()  # tell the other side to stop, then re-raise the first error
            wait(futures)
            raise error
    return spills[0], spills[1]


COMPARE_WORKERS = 2  # the machine's cores; Arrow kernels release the GIL


def _compared(plan: RulePlan, pairs, stop: threading.Event):
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

    `left` and `right` are tables, or functions that read them (see _partition_pairs). A held
    side comes with its `groups` and, for integer keys, their `index` (KeyIndex): its
    duplicated keys are reported once, by the item whose `left` is None.
    """
    left = left() if callable(left) else left
    right = right() if callable(right) else right
    if groups is None:
        groups = group_keys(right, len(plan.key_types), plan.right.keys_unique)
        index = _key_index(plan, right, groups, dense_only=True)
    elif left is not None:
        return groups.slice(0, 0), _check(plan, left, right, groups, index)
    if left is None:
        left = side_schema(plan.left, plan.key_types).empty_table()
    return duplicates(groups), _check(plan, left, right, groups, index)


def _key_index(plan: RulePlan, right: pa.Table, groups: pa.Table, dense_only: bool = False):
    """The KeyIndex of what the referencing rows are looked up in, for one integer key.

    `dense_only`: None unless the keys fit a direct table (a partition's keys are probed once:
    hashing sparse keys is cheaper than sorting them).
    """
    if plan.key_types != ("int",):
        return None
    looked_up = groups if isinstance(plan.rule, ReferenceRule) else right
    index = KeyIndex(looked_up["c0"], dense_only)
    return index if index.dense or not dense_only else None


def _duplicate_findings(plan: RulePlan, groups: pa.Table) -> list[Finding]:
    rule = plan.rule
    findings = []
    for dup in groups.to_pylist():
        key = {c.name: dup[f"c{i}"] for i, c in enumerate(plan.right.compare)}
        ref = {c.name: dup[f"c{i}"] for i, c in enumerate(plan.left.compare)}
        finding = Finding(rule.name, "duplicate_key", rule.severity, key, ref=ref)
        findings.append(replace(finding, count=dup["count_all"]))
    return findings


def _check(plan: RulePlan, left: pa.Table, right: pa.Table, groups: pa.Table, index=None):
    """The rule's pure check: the same on a scanned partition and on re-read rows."""
    rule = plan.rule
    width = len(plan.key_types)
    if isinstance(rule, ReferenceRule):
        return check_references(left, groups, width, rule.allow_null, index)
    report_missing = rule.missing_source == "report"
    return check_copies(left, right, groups, width, plan.normalizers, report_missing, index)


def _recheck(plan: RulePlan, lookups: Lookups, chunk: pa.Table, identity: list[str]) -> pa.Table:
    """Candidates that are still findings when their rows are read again by key."""
    width = len(plan.key_types)
    if plan.left.rereadable:
        fresh_left = lookups.fetch(plan.left, "labels", label_tuples(chunk))
    else:  # files do not change during a run: the rows as read, the other side read again
        fresh_left = chunk.select(side_schema(plan.left, plan.key_types).names)
    fresh_right = lookups.fetch(plan.right, "compare", _valid_keys(fresh_left, width))
    fresh = _check(plan, fresh_left, fresh_right, group_keys(fresh_right, width))
    names = [n for n in chunk.column_names if n.startswith("r")] + identity
    if plan.left.extract is not None:  # one row holds several references: each its own
        names += [f"c{i}" for i in range(width)]
    wanted = set(tuples([chunk[n] for n in names]))
    mask = [row in wanted for row in tuples([fresh[n] for n in names])]
    return fresh.filter(pa.array(mask, pa.bool_()))


def _valid_keys(table: pa.Table, width: int) -> list[tuple]:
    return [k for k in tuples([table[f"c{i}"] for i in range(width)]) if None not in k]


def _counted(rows: pa.Table):
    """(kind, None, how many) per kind: candidates counted, not built (beyond max_findings)."""
    if rows.num_rows:
        for entry in pc.value_counts(rows["kind"]).to_pylist():
            yield entry["values"], None, entry["counts"]


def _confirm_references(plan: RulePlan, options, lookups: Lookups, chunk: pa.Table, room: int):
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
        canonical = tuple(row[f"c{i}"] for i in range(width))
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


def _confirm_copies(plan: RulePlan, options, lookups: Lookups, chunk: pa.Table, room: int):
    """Confirmed candidates as (kind, build, 1) for the first `room`, then (kind, None, n)."""
    rule = plan.rule
    assert isinstance(rule, PiiRule)
    if options.recheck:
        chunk = _recheck(plan, lookups, chunk, ["kind", "field"])
    mask = options.masker
    label_names = [n for n in chunk.column_names if n.startswith("r")]
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
