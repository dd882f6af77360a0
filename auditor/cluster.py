"""Runs on a Dask cluster (SPEC §12): one rule as K key-range slices, one task each, or
shuffled through buckets by key.

Imported only with `run --cluster ADDRESS` or `--workers N`; nothing of Dask is imported
otherwise (`dask[distributed]` is the optional extra `auditor[dask]`).

A rule whose two sides compare one integer key (a reference by id, a copy keyed like its
source) is cut by ranges of that key, on both sides at once: slice i reads the referencing
rows whose key is in [low_i, high_i) and the referenced rows whose key is in the same range,
so the rows that must meet are read by the same task and no shuffle is needed (each side's
rows are selected by the compared column, which `check` asks to be indexed for look-ups).
NULL references go with the first slice. Each task runs the single-process engine on its
slice (scan, compare, recheck by key, alias chase) with its own read-only connections, opened
from the config file's path on the worker: no URL or password travels in the task graph.
The client adds the counts up and lists the first `max_findings` findings in report order,
taking the slices' results one at a time.

Exactness: a slice reads each side in one statement (one snapshot), but slices are different
statements, so the run as a whole sees no single snapshot; every finding is still re-read by
key before it is reported (as in a single-process run), so a row written between slices
causes no false finding. A worker lost mid-task has its task run again by Dask; a slice
only reads, so running it twice changes nothing.

A pii rule's `suggest_keys` looks for the source row a mismatched copy's values belong to,
which may sit in any slice: after the slices, a second round of tasks matches the listed
mismatches (their copies read again by labels on the worker) against each slice of the
source, and a mismatch gets the key exactly one source row of all slices matches.

Any other rule between two SQL sides (a text, UUID or composite key, a key stored as text on
one side) is shuffled: each side is cut by its own rows (ranges of its integer primary key, or
on PostgreSQL of its heap pages, `ctid`; a side with neither is read by one task), each read
task puts its rows' keys in canonical form and routes them into B buckets by a hash of that
form, and Dask moves bucket b of every read task to the task that compares bucket b (Dask's
scheduler places, transfers, spills and, after a lost worker, recomputes them). A key's rows
of both sides meet in one bucket, as in one process's partitions. The bucket task runs the
engine on what it was handed (compare, recheck by key), so findings are the same.

Not spread (one task on a worker): a rule with a side that is not SQL (Redis, files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from auditor.batch import SideRows, key_names
from auditor.db.reflect import category, unsigned_64
from auditor.errors import ConfigError, DatabaseError
from auditor.findings import FindingLog
from auditor.plan import RulePlan, SidePlan, StoreSidePlan
from auditor.result import Finding, RuleResult, finished_status
from auditor.scan import MAX_PARTITIONS

SLICES_PER_WORKER = 4  # slices a worker runs in turn: a slow slice delays less
ROWS_PER_TASK = 1_000_000  # at most about this many rows of a side per read or bucket task
PUBLISH_ROWS = 100_000  # a worker's progress message per this many rows of a side
CONNECT_TIMEOUT_S = 10  # to reach the scheduler at --cluster ADDRESS


@dataclass
class Cluster:
    """Where tasks go: a scheduler's address, or a LocalCluster of `workers` processes."""

    address: str | None = None
    workers: int | None = None
    _client: Any = None
    _local: Any = None
    _unreachable: DatabaseError | None = None

    def client(self) -> Any:
        """The Dask client, connected (or the local cluster started) on first use. An address
        Dask cannot parse is a ConfigError (exit 2). A scheduler that does not answer is a
        DatabaseError naming its address (exit 3), raised again at once on later calls: each
        rule must not wait out its own connect timeout."""
        if self._unreachable is not None:
            raise self._unreachable
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.address:
                try:
                    self._client = Client(self.address, timeout=CONNECT_TIMEOUT_S)
                except ValueError:  # unparsable; not echoed, it may hold a secret
                    raise ConfigError(
                        "--cluster: not a Dask scheduler address (e.g. tcp://HOST:8786)"
                    ) from None
                except (OSError, TimeoutError) as exc:
                    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                    self._unreachable = DatabaseError(
                        f"cannot reach the Dask scheduler at {self.address}: {reason}"
                    )
                    raise self._unreachable from None
            else:
                self._local = LocalCluster(
                    n_workers=self.workers or 2,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                self._client = Client(self._local)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._local is not None:
            self._local.close()
        self._client = self._local = None

    def worker_count(self) -> int:
        return max(1, len(self.client().scheduler_info().get("workers", {})))


@dataclass(frozen=True)
class Slice:
    """Compared keys in [low, high) (None: unbounded); `nulls`: NULL references too."""

    low: int | None
    high: int | None
    nulls: bool = False

    def condition(self, side: SidePlan) -> sa.ColumnElement:
        column = side.compare[0]
        inside = _within(column, self.low, self.high)
        return sa.or_(inside, column.is_(None)) if self.nulls else inside


class _Tid(sa.types.UserDefinedType):
    """PostgreSQL's row address type (page, item), for `ctid` ranges."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "tid"


@dataclass(frozen=True)
class RowSlice:
    """A share of one side's own rows for a shuffled rule: its integer primary key `column`
    in [low, high), or (`column` None) PostgreSQL heap pages [low, high) by `ctid` (a TID
    range scan reads only those pages); None: unbounded."""

    column: str | None
    low: int | None
    high: int | None

    def condition(self, side: SidePlan) -> sa.ColumnElement:
        if self.column is not None:
            return _within(side.info.table.c[self.column], self.low, self.high)
        page = [None if p is None else sa.cast(sa.literal(f"({p},0)"), _Tid()) for p in
                (self.low, self.high)]  # fmt: skip
        return _within(sa.literal_column("ctid"), *page)


def _within(value: Any, low: Any, high: Any) -> sa.ColumnElement:
    parts = []
    if low is not None:
        parts.append(value >= low)
    if high is not None:
        parts.append(value < high)
    return sa.and_(*parts) if parts else sa.true()


def _ranges(low: int, high: int, count: int) -> list[tuple[int | None, int | None]]:
    """`count` ranges of equal width over [low, high], the first and last unbounded outside."""
    width = max(1, -(-(high - low + 1) // count))
    cut = [None, *list(range(low, high + 1, width))[1:], None]
    return [(cut[i], cut[i + 1]) for i in range(len(cut) - 1)]


def sliceable(plan: RulePlan) -> bool:
    """One integer key on two SQL sides, compared as integers: ranges of it cut both sides."""
    sides = (plan.left, plan.right)
    if plan.key_types != ("int",) or any(isinstance(s, StoreSidePlan) for s in sides):
        return False
    if any(s.extract is not None or len(s.compare) != 1 for s in sides):
        return False
    return not any(category(s.compare[0]) != "int" or unsigned_64(s.compare[0]) for s in sides)


def slices(plan: RulePlan, count: int) -> list[Slice]:
    """`count` ranges of equal width over both sides' smallest to largest key (a min/max each,
    answered from an index), the first taking NULL references."""
    bounds = []
    for side in (plan.left, plan.right):
        with side.database.snapshot() as conn:
            bounds.append(_min_max(conn, side, side.compare[0]))
    known = [b for b in bounds if b is not None]
    if not known or count <= 1:
        return [Slice(None, None, nulls=True)]
    low, high = min(b[0] for b in known), max(b[1] for b in known)
    ranges = _ranges(low, high, count)
    return [Slice(a, b, nulls=i == 0) for i, (a, b) in enumerate(ranges)]


def shuffled(plan: RulePlan) -> bool:
    """A rule that is not sliced but whose two sides are SQL: its sides are read in row
    slices and paired through buckets (see the module's docstring)."""
    sides = (plan.left, plan.right)
    return not sliceable(plan) and not any(isinstance(s, StoreSidePlan) for s in sides)


def row_slices(side: SidePlan, count: int) -> list[RowSlice]:
    """`count` shares of a side's rows, each read by one statement: ranges of its integer
    primary key (a min/max the index answers), else on PostgreSQL ranges of its heap pages;
    one share (the whole side) where there is neither."""
    whole = [RowSlice(None, None, None)]
    if count <= 1:
        return whole
    table, key = side.info.table, side.info.primary_key
    column = table.c[key[0]] if len(key) == 1 else None
    with side.database.snapshot() as conn:
        if column is not None and category(column) == "int" and not unsigned_64(column):
            bounds = _min_max(conn, side, column)
            if bounds is None:
                return whole
            return [RowSlice(key[0], a, b) for a, b in _ranges(*bounds, count)]
        pages = side.database.dialect.heap_pages(conn, table)
    if not pages:
        return whole
    return [RowSlice(None, a, b) for a, b in _ranges(0, pages - 1, min(count, pages))]


def _min_max(conn: sa.Connection, side: SidePlan, column: sa.Column) -> tuple[int, int] | None:
    """The smallest and largest value of an integer column of the side's table (an index
    answers), or None when it holds none."""
    query = sa.select(sa.func.min(column), sa.func.max(column)).select_from(side.info.table)
    low, high = conn.execute(query).one()
    return None if low is None else (int(low), int(high))


def run_on_cluster(
    config_path: str,
    plan: RulePlan,
    options: dict[str, Any],
    cluster: Cluster,
    progress: Callable[[str, str, int, int | None], None] | None = None,
) -> RuleResult:
    """The rule's result, its slices run as tasks (retried where a worker was lost). Rows
    read per side, across workers, reach `progress` as Dask events on a topic of this run."""
    started = time.monotonic()
    tasks = cluster.worker_count() * SLICES_PER_WORKER
    client = cluster.client()
    topic = f"auditor-progress-{uuid.uuid4().hex}" if progress is not None else None
    if topic is not None:
        assert progress is not None
        forward = progress
        client.subscribe_topic(topic, lambda event: forward(*event[1]))
    sources: list[Slice | RowSlice]  # the source side's slices, for suggest_keys
    try:
        if shuffled(plan):
            result, by_rows = _shuffle(client, config_path, plan, options, tasks, topic)
            sources = list(by_rows)
        else:  # sliced by key ranges, or one task (None: not narrowed, suggests by itself)
            parts = slices(plan, tasks) if sliceable(plan) else [None]
            results = _each_slice(
                client, run_slice, parts, config_path, plan, options=options, topic=topic
            )
            result = merged(plan, results, options["max_findings"])
            sources = [part for part in parts if part is not None]
    finally:
        if topic is not None:
            client.unsubscribe_topic(topic)
    if sources and getattr(plan.rule, "suggest_keys", False):
        result = _with_suggestions(plan, result, sources, config_path, client)
    return dataclasses.replace(result, duration_s=time.monotonic() - started)


def _shares(side: SidePlan, least: int) -> int:
    """How many read tasks a side gets: `least`, more for a big side (ROWS_PER_TASK)."""
    return max(least, math.ceil((side.info.estimated_rows or 0) / ROWS_PER_TASK))


def bucket_count(plan: RulePlan, tasks: int) -> int:
    """Buckets of a shuffled rule: one compare task per bigger side's share, at most
    MAX_PARTITIONS (rows are put in bucket order by a 16-bit radix sort, scan.grouped)."""
    return min(MAX_PARTITIONS, max(_shares(plan.left, tasks), _shares(plan.right, tasks)))


def _shuffle(
    client: Any, config_path: str, plan: RulePlan, options: dict[str, Any], tasks: int,
    topic: str | None,
) -> tuple[RuleResult, list[RowSlice]]:  # fmt: skip
    """The rule read in row slices by one set of tasks and compared bucket by bucket by
    another; Dask hands each bucket's pieces from the read tasks to its compare task."""
    buckets = bucket_count(plan, tasks)
    reads = {}
    for role, side in (("left", plan.left), ("right", plan.right)):
        parts = row_slices(side, _shares(side, tasks))
        reads[role] = (parts, client.map(
            read_slice, parts, config_path=config_path, rule_name=plan.rule.name, role=role,
            buckets=buckets, options=options, topic=topic, pure=False, retries=2,
        ))  # fmt: skip
    # Bucket b of read task i is item b + 1 of its result (item 0: the rows it read).
    pieces = {
        role: [[client.submit(operator.getitem, read, b + 1) for read in futures]
               for b in range(buckets)]
        for role, (_, futures) in reads.items()
    }  # fmt: skip
    compared = [
        client.submit(
            compare_bucket, pieces["left"][b], pieces["right"][b], config_path=config_path,
            rule_name=plan.rule.name, options=options, pure=False, retries=2,
        )
        for b in range(buckets)
    ]  # fmt: skip
    counted = [client.submit(operator.getitem, read, 0) for _, futures in reads.values()
               for read in futures]  # fmt: skip
    # Only the pieces are wanted now: a read result is freed once its pieces are taken (held
    # twice, Dask counted it twice against a worker's memory). A lost piece is still made
    # again from its read task, which the scheduler keeps while a piece depends on it.
    sources = reads["right"][0]
    del reads, pieces
    result = merged(plan, _in_turn(compared), options["max_findings"])
    read_rows = client.gather(counted)
    rows: Counter[str] = Counter()
    for each in read_rows:
        rows.update(each)
    return dataclasses.replace(result, rows_scanned=dict(rows)), sources


def _each_slice(
    client: Any,
    task: Callable[..., Any],
    parts: list,
    config_path: str,
    plan: RulePlan,
    **more: Any,
) -> Iterator[Any]:
    """`task` run once per slice on the workers (retried twice: a slice only reads), results
    in slice order, one at a time (_in_turn); workers plan the rule from the config file's
    path."""
    futures = client.map(
        task,
        parts,
        config_path=config_path,
        rule_name=plan.rule.name,
        pure=False,
        retries=2,
        **more,
    )
    return _in_turn(futures)


def _labels(finding: Finding) -> tuple[str, ...]:
    """A copy row's labels as text: the same whatever type a database returned them in."""
    return tuple(str(value) for value in finding.key.values())


def _with_suggestions(
    plan: RulePlan, result: RuleResult, parts: list, config_path: str, client: Any
) -> RuleResult:
    """suggest_keys across slices: each slice of the source matches the listed mismatches'
    copies (read again by their labels on the worker: no value travels in the task graph);
    a mismatch gets the key only one source row of all slices matches, as in one process."""
    from auditor.suggest import unique_matches

    wanted = list(dict.fromkeys(
        tuple(f.key.values()) for f in result.findings if f.kind == "mismatch"
    ))  # fmt: skip
    if not wanted:
        return result
    matches: dict[tuple, set[tuple]] = {}
    for found in _each_slice(client, suggest_slice, parts, config_path, plan, labels=wanted):
        for labels, keys in found.items():
            matches.setdefault(labels, set()).update(map(tuple, keys))
    suggested = unique_matches(plan, matches)
    findings = [
        dataclasses.replace(f, suggested_key=suggested[_labels(f)])
        if f.kind == "mismatch" and _labels(f) in suggested
        else f
        for f in result.findings
    ]
    return dataclasses.replace(result, findings=tuple(findings))


def suggest_slice(
    part: Slice | RowSlice, config_path: str, rule_name: str, labels: list[tuple]
) -> dict[tuple, list[tuple]]:
    """On a worker: the source rows of one slice (of keys, or of the source's own rows) that
    match each listed mismatch's copy."""
    from auditor.engine import RunOptions
    from auditor.pairing import read_side
    from auditor.recheck import Lookups
    from auditor.scan import Spill
    from auditor.scratch import Scratch
    from auditor.suggest import source_matches

    stop = threading.Event()
    with _planned(config_path, rule_name, right=part) as plan, contextlib.ExitStack() as stack:
        lookups = Lookups(plan, stack, stop)
        copies = lookups.fetch(plan.left, "labels", labels)
        space = Scratch()
        stack.callback(space.close)
        source = Spill(SideRows.of(plan.right, plan.key_types).schema, 1, space)
        read_side(plan, plan.right, source, RunOptions(), lambda *_: None, stop, {})
        matches = source_matches(plan, copies, source)
    return {tuple(str(v) for v in labels): sorted(keys) for labels, keys in matches.items() if keys}


class _Publisher:
    """A worker's progress, sent every PUBLISH_ROWS rows per side (not per batch) as an event
    of the run's topic, which the scheduler passes on to the client."""

    def __init__(self, topic: str) -> None:
        from distributed import get_worker

        self.worker = get_worker()
        self.topic = topic
        self.pending: Counter[tuple[str, str, int | None]] = Counter()
        self.lock = threading.Lock()  # sides are read on threads of their own

    def __call__(self, rule: str, side: str, rows: int, estimate: int | None) -> None:
        with self.lock:
            self.pending[(rule, side, estimate)] += rows
            if self.pending[(rule, side, estimate)] >= PUBLISH_ROWS:
                self._send()

    def flush(self) -> None:
        with self.lock:
            self._send()

    def _send(self) -> None:
        for (rule, side, estimate), rows in self.pending.items():
            if rows:
                self.worker.log_event(self.topic, [rule, side, rows, estimate])
        self.pending.clear()


def _run_options(options: dict[str, Any], **more: Any) -> Any:
    """On a worker: the engine's RunOptions from the settings the task graph carries."""
    from auditor.engine import RunOptions
    from auditor.mask import Masker

    return RunOptions(
        batch_size=options["batch_size"],
        max_findings=options["max_findings"],
        recheck=options["recheck"],
        masker=Masker.create(options["mask"]),
        **more,
    )


def run_slice(
    part: Slice | None,
    config_path: str,
    rule_name: str,
    options: dict[str, Any],
    topic: str | None = None,
) -> RuleResult:
    """On a worker: plan the rule from the config file, narrow both sides to the slice, run it
    with the single-process engine; findings come back as a list (not a spill on this disk)."""
    from auditor.engine import run_rule

    only = None if part is None else dataclasses.replace(part, nulls=False)
    with _planned(config_path, rule_name, left=part, right=only) as plan:
        # Sliced, the client gathers suggestions across the slices (_with_suggestions).
        run_options = _run_options(options, suggest=part is None)
        publisher = _Publisher(topic) if topic else None
        result = run_rule(plan, run_options, publisher or (lambda *_: None), threading.Event())
        if publisher is not None:
            publisher.flush()
        return dataclasses.replace(result, findings=tuple(result.findings))


def read_slice(
    part: RowSlice,
    config_path: str,
    rule_name: str,
    role: str,
    buckets: int,
    options: dict[str, Any],
    topic: str | None = None,
) -> list[Any]:
    """On a worker: one row slice of one side (`role` "left" or "right"), its keys in
    canonical form, routed into `buckets` tables by key (partition_of, as a single process
    partitions); returned as [rows read, bucket 0, bucket 1, ...]. A lost connection reads
    the slice again (one statement, one snapshot)."""
    from auditor.checks.base import partition_of
    from auditor.concurrency import retrying
    from auditor.engine import RunOptions
    from auditor.pairing import batch_rows
    from auditor.scan import by_partition, prepared_batches

    stop = threading.Event()
    publisher = _Publisher(topic) if topic else None
    with _planned(config_path, rule_name, **{role: part}) as plan:
        side = plan.left if role == "left" else plan.right
        rows_of = SideRows.of(side, plan.key_types)
        keys = key_names(len(plan.key_types))
        size = batch_rows(side, RunOptions(batch_size=options["batch_size"]))
        read: Counter[str] = Counter()
        routed: list[list[pa.RecordBatch]] = []

        def counted(what: str, rows: int) -> None:  # the side's role, or unmatched rows
            read[what] += rows
            if publisher is not None and what == side.role:
                publisher(rule_name, side.role, rows, side.info.estimated_rows)

        def attempt() -> None:
            read.clear()
            routed[:] = [[] for _ in range(buckets)]
            for batch in prepared_batches(side, rows_of, size, counted, stop):
                ids = partition_of([batch.column(k) for k in keys], buckets)
                sizes = np.bincount(ids, minlength=buckets)
                for bucket, rows in by_partition(batch, ids, sizes):
                    routed[bucket].append(rows)

        retrying(attempt, rule_name, "scan_retry", stop)
        if publisher is not None:
            publisher.flush()
        tables = [pa.Table.from_batches(b, rows_of.schema).combine_chunks() for b in routed]
    return [dict(read), *tables]


def compare_bucket(
    left: list[pa.Table],
    right: list[pa.Table],
    config_path: str,
    rule_name: str,
    options: dict[str, Any],
) -> RuleResult:
    """On a worker: one bucket of a shuffled rule, its pieces from every read task, compared
    and confirmed by the single-process engine (which reads nothing but the recheck)."""
    from auditor.engine import run_rule

    with _planned(config_path, rule_name) as plan:
        # The client gathers suggestions across the source's row slices (_with_suggestions).
        run_options = _run_options(options, suggest=False, given=(left, right))
        result = run_rule(plan, run_options, lambda *_: None, threading.Event())
        return dataclasses.replace(result, findings=tuple(result.findings))


@contextlib.contextmanager
def _planned(
    config_path: str, rule_name: str, left: Any = None, right: Any = None
) -> Iterator[RulePlan]:
    """On a worker: the rule planned from the config file (the URLs stay in it), each side's
    scan narrowed to its slice (a Slice of keys or a RowSlice); its databases closed after."""
    from auditor import api
    from auditor.config.loader import load_config
    from auditor.db.engines import open_databases

    config = load_config(config_path)
    databases = open_databases(config)
    try:
        plan = api.plan_rule(config, config.rule(rule_name), databases)
        narrowed = {
            role: dataclasses.replace(getattr(plan, role), scan_slice=part)
            for role, part in (("left", left), ("right", right))
            if part is not None
        }
        yield dataclasses.replace(plan, **narrowed)
    finally:
        for database in databases.values():
            dispose = getattr(getattr(database, "engine", None), "dispose", None)
            if dispose:
                dispose()


def merged(plan: RulePlan, results: Iterable[RuleResult], cap: int) -> RuleResult:
    """One rule's result from its slices' or buckets', taken one at a time: counts added,
    the first `cap` findings listed (all with 0) in report order, as one process lists them,
    through a FindingLog (past 50,000 findings it sorts them to disk: the client's memory stays
    flat). The first error wins. The caller sets the duration: the client's wall time."""
    first: RuleResult | None = None
    error: RuleResult | None = None
    counts: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    listed = FindingLog()
    for result in results:
        first = first or result
        if result.status == "error":
            error = error or result
            continue
        counts.update(result.counts)
        rows.update(result.rows_scanned)
        for finding in result.findings:
            if cap == 0 or listed.count < cap:
                listed.add(finding)
    assert first is not None, "a rule has at least one slice"
    if error is not None:
        return error
    return dataclasses.replace(
        first,
        status=finished_status(plan.rule.severity, dict(counts)),
        counts=dict(counts),
        rows_scanned=dict(rows),
        findings=listed.findings(),
        findings_truncated=sum(counts.values()) > listed.count,
    )


def _in_turn(futures: list[Any]) -> Iterator[Any]:
    """Each future's result in order, fetched only when wanted; the list is emptied as they
    are taken, so a result is released on its worker once the client has it, and the client
    holds one slice's findings at a time, not every slice's."""
    while futures:
        yield futures.pop(0).result()
