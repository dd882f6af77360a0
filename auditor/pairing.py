"""Pairing: bring the rows of both sides that share a canonical key together, a bounded
piece at a time.

Either the referenced side is small and held in memory while the other streams past it in
chunks (held_right_side, streamed_pairs), or both sides are read at once into partitions by
key and paired partition by partition (scan_both, partition_pairs). Each pair goes to
auditor.compare.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from auditor import incremental, log
from auditor.batch import DELETED, SideRows, key_names
from auditor.checks.base import partition_of
from auditor.checks.reference import group_keys
from auditor.compare import key_index
from auditor.concurrency import CancelToken, Stop, retrying
from auditor.config.model import ReferenceRule
from auditor.extract import UNMATCHED
from auditor.plan import RulePlan, SidePlan
from auditor.scan import MAX_PARTITIONS, Spill, partition_count, prepared_batches, scan_side
from auditor.scratch import Scratch

if TYPE_CHECKING:
    from auditor.engine import Progress, RunOptions

# A referenced side estimated at most this many rows is held in memory (see held_right_side):
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


class _TooBig(Exception):
    """The side meant to be held in memory turned out bigger than its estimate."""


def rows_per_partition(options: RunOptions, plan: RulePlan) -> int:
    """Rows of one side per partition: twice a batch, fewer where rows are wide."""
    if options.rows_per_partition:
        return options.rows_per_partition
    rows = max(options.batch_size * 2, 1)
    widths = [s.row_bytes for s in (plan.left, plan.right) if s.row_bytes]
    return min(rows, max(1_000, PARTITION_BYTES // max(widths))) if widths else rows


def batch_rows(side: SidePlan, options: RunOptions) -> int:
    """Rows per batch read from the driver: `batch_size`, fewer where rows are wide."""
    width = side.row_bytes
    return min(options.batch_size, max(256, BATCH_BYTES // width)) if width else options.batch_size


def partition_pairs(left: Spill, right: Spill, rows_per_partition: int, depth: int = 0):
    """Matching partitions of both sides; one that came out too big is split again first."""
    for part in range(left.partitions):
        size = int(left.counts[part] + right.counts[part])
        weight = float(left.sizes[part] + right.sizes[part])  # in bytes: row estimates can miss
        if (size > 4 * rows_per_partition or weight > 4 * PARTITION_BYTES) and depth < 3:
            wanted = max(size / rows_per_partition, weight / PARTITION_BYTES)
            finer = min(MAX_PARTITIONS, max(2, math.ceil(wanted)))
            sub_left, sub_right = left.split(part, finer), right.split(part, finer)
            left.drop(part)
            yield from partition_pairs(sub_left, sub_right, rows_per_partition, depth + 1)
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


def held_right_side(
    plan: RulePlan, options: RunOptions, progress: Progress, stop: Stop, rows: dict[str, int]
) -> Spill | None:
    """The referenced side read whole into memory when it is estimated small, else None.

    Then the referencing side is compared chunk by chunk as it streams (streamed_pairs): no
    spill files, and comparing overlaps reading. A side that turns out much bigger than its
    estimate is dropped again and the rule falls back to partitioning.
    """
    estimate, width = plan.right.info.estimated_rows, plan.right.row_bytes
    limit = hold_limit(plan, options, estimate)
    if limit <= 0 or estimate is None or estimate > limit:
        return None
    if width and estimate * width > HOLD_MAX_BYTES:
        return None
    schema = SideRows.of(plan.right, plan.key_types).schema
    held = _Capped(schema, 2 * limit + options.batch_size, 2 * HOLD_MAX_BYTES)
    try:
        read_side(plan, plan.right, held, options, progress, stop, rows)
    except _TooBig:
        rows.pop(plan.right.role, None)
        log.event("held_side_too_big", rule=plan.rule.name, side=plan.right.label)
        return None
    return held


def hold_limit(plan: RulePlan, options: RunOptions, estimate: int | None) -> int:
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


def streamed_pairs(
    plan: RulePlan,
    options: RunOptions,
    progress: Progress,
    stop: Stop,
    rows: dict[str, int],
    right: pa.Table,
    reread: pa.Table | None = None,
    since: Any = None,
):
    """(chunk of referencing rows, the held side, its key groups, their KeyIndex) as the
    referencing side streams.

    An incremental run (auditor.incremental) streams only rows changed `since`, after the
    rows it `reread` by key (which the stream then leaves out).

    Chunks have a fixed size (one partition's worth), so memory does not grow with either table.
    Integer keys of the held side are indexed once (KeyIndex); other keys are hashed again per
    chunk.
    """
    groups = group_keys(right, len(plan.key_types), plan.right.keys_unique)
    yield None, right, groups, None  # the held side's duplicated keys, reported once
    index = key_index(plan, right, groups)  # what the chunks are looked up in, indexed once
    side = plan.left
    rows_of = SideRows.of(side, plan.key_types)
    chunk_rows = rows_per_partition(options, plan)
    rows[side.role] = 0
    rows.pop(UNMATCHED, None)
    report = _counter(plan, side, progress, rows)
    buffer: list[pa.RecordBatch] = []
    buffered = 0
    # A lost connection here propagates: run_rule starts the rule over (see there).
    size = batch_rows(side, options)
    batches = prepared_batches(side, rows_of, size, report, stop, since)
    if reread is not None:
        report(side.role, reread.num_rows)
        batches = itertools.chain(reread.to_batches(), incremental.without(batches, reread))
    for batch in batches:
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


def read_side(
    plan: RulePlan,
    side: SidePlan,
    spill: Spill,
    options: RunOptions,
    progress: Progress,
    stop: Stop,
    rows: dict[str, int],
) -> None:
    """Read one side into its spill; a lost connection reads the side again, whole (one
    statement is one snapshot)."""
    report = _counter(plan, side, progress, rows)
    rows_of = SideRows.of(side, plan.key_types)

    def attempt() -> None:
        rows[side.role] = 0
        rows.pop(UNMATCHED, None)
        scan_side(side, rows_of, spill, batch_rows(side, options), report, stop)

    retrying(attempt, plan.rule.name, "scan_retry", stop, reset=spill.reset)


def scan_both(
    plan: RulePlan,
    options: RunOptions,
    progress: Progress,
    stop: Stop,
    space: Scratch,
    rows: dict[str, int],
) -> tuple[Spill, Spill]:
    """Read both sides at once (one thread and one connection each)."""
    spills = _spills(plan, options, space)

    cancel = CancelToken(stop)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan") as pool:
        futures = [
            pool.submit(read_side, plan, side, spill, options, progress, cancel, rows)
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


def _spills(plan: RulePlan, options: RunOptions, space: Scratch) -> list[Spill]:
    """The referencing and referenced sides' spills, partitioned alike (by count and range)."""
    estimates = (plan.left.info.estimated_rows, plan.right.info.estimated_rows)
    partitions = partition_count(*estimates, rows_per_partition=rows_per_partition(options, plan))
    return [
        Spill(
            SideRows.of(side, plan.key_types).schema,
            partitions,
            space,
            key_range=plan.partition_range,
        )  # fmt: skip
        for side in (plan.left, plan.right)
    ]


def given_sides(
    plan: RulePlan,
    options: RunOptions,
    space: Scratch,
    left: list[pa.Table],
    right: list[pa.Table],
) -> tuple[Spill, Spill]:
    """Both sides of a cluster bucket, already read by other tasks, in partitions as a scan
    would leave them. The bucket's rows share one value of the bucket hash, so they are split
    by an independent one (seed 1)."""
    estimates = (sum(t.num_rows for t in left), sum(t.num_rows for t in right))
    count = partition_count(*estimates, rows_per_partition=rows_per_partition(options, plan))
    spills = []
    for side, tables in ((plan.left, left), (plan.right, right)):
        spill = Spill(SideRows.of(side, plan.key_types).schema, count, space, seed=1)
        for table in tables:
            for batch in table.to_batches():
                spill.add(batch)
        spill.finish()
        spills.append(spill)
    return spills[0], spills[1]


def delta_pairs(
    plan: RulePlan,
    options: RunOptions,
    progress: Progress,
    stop: Stop,
    rows: dict[str, int],
    delta: incremental.Delta,
    labels: pa.Table,
    since: Any,
    lookups: Any,
    read_source: Callable[[list[tuple]], pa.Table],
):
    """streamed_pairs for an incremental run whose referenced side was read as a delta
    (incremental.read_delta): the referencing rows changed since, those pointing at a moved key
    and the last findings, against the state's keys (reference rules) or, chunk by chunk,
    against the source rows of their keys, read by key (pii rules)."""
    reread = incremental.left_rows(plan, lookups, delta.changed, labels)
    if isinstance(plan.rule, ReferenceRule):
        held = delta.groups.select(["c0", f"{DELETED}_min"]).rename_columns(["c0", DELETED])
        if not plan.right.soft_delete:
            held = held.drop_columns([DELETED])
        yield from streamed_pairs(plan, options, progress, stop, rows, held, reread, since)
        return
    empty = SideRows.of(plan.right, plan.key_types).empty_table()
    for left, *_ in streamed_pairs(plan, options, progress, stop, rows, empty, reread, since):
        if left is None:
            continue
        keys = pc.unique(left["c0"].drop_null()).to_pylist()
        yield left, read_source([(key,) for key in keys])


def scan_changed(
    plan: RulePlan,
    options: RunOptions,
    progress: Progress,
    stop: Stop,
    space: Scratch,
    rows: dict[str, int],
    state: incremental.RuleState,
    previous: tuple[pa.Table, pa.Table] | None,
    lookups: Any,
) -> tuple[Spill, Spill, bool]:
    """scan_both for an incremental run whose referenced side is too big to hold: that side
    is read whole into its partitions first (its key groups are what the state is diffed
    with), then the referencing rows the diff and the watermark name. The next state's key
    groups are written partition by partition (RuleState.write_groups), so no more than one
    partition's are held. Returns both spills and whether the run was incremental (False: no
    usable state, so the referencing side was read whole)."""
    left, right = _spills(plan, options, space)
    partitions, key_range = right.partitions, right.key_range
    read_side(plan, plan.right, right, options, progress, stop, rows)
    before = previous[0] if previous is not None else None
    keys = key_names(len(plan.key_types))
    if before is not None:  # the state's groups, split as this run's partitions are
        parts = partition_of([before[k].combine_chunks() for k in keys], partitions,
                             key_range=key_range)  # fmt: skip
    changed: list[tuple] = []
    for part in range(partitions):  # one partition's groups at a time: memory stays flat
        earlier = None if before is None else before.take(pa.array(np.flatnonzero(parts == part)))
        now = state.merged(state.groups(right.read(part), earlier), earlier)
        if earlier is not None:
            changed += incremental.changed_keys(plan, earlier, now)
        state.write_groups(now)
    if previous is None:
        read_side(plan, plan.left, left, options, progress, stop, rows)
        return left, right, False
    reread = incremental.left_rows(plan, lookups, changed, previous[1])
    report = _counter(plan, plan.left, progress, rows)
    rows[plan.left.role] = 0
    report(plan.left.role, reread.num_rows)
    rows_of = SideRows.of(plan.left, plan.key_types)
    streamed = prepared_batches(
        plan.left, rows_of, batch_rows(plan.left, options), report, stop, state.since
    )
    for batch in itertools.chain(reread.to_batches(), incremental.without(streamed, reread)):
        if batch.num_rows:
            left.add(batch)
    left.finish()
    return left, right, True
