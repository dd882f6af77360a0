"""Runs on a Dask cluster (SPEC §12): one rule as K key-range slices, one task each.

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
The client adds the counts up and lists findings slice by slice up to `max_findings`.

Exactness: a slice reads each side in one statement (one snapshot), but slices are different
statements, so the run as a whole sees no single snapshot; every finding is still re-read by
key before it is reported (as in a single-process run), so a row written between slices
causes no false finding. A worker lost mid-task has its task run again by Dask; a slice
only reads, so running it twice changes nothing.

A pii rule's `suggest_keys` looks for the source row a mismatched copy's values belong to,
which may sit in any slice: after the slices, a second round of tasks matches the listed
mismatches (their copies read again by labels on the worker) against each slice of the
source, and a mismatch gets the key exactly one source row of all slices matches.

Not sliced (one task on a worker): a rule with another key (text, UUID, composite), a side
that is not SQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from auditor.batch import SideRows
from auditor.db.reflect import category, unsigned_64
from auditor.plan import RulePlan, SidePlan, StoreSidePlan
from auditor.result import Finding, RuleResult, finished_status

SLICES_PER_WORKER = 4  # slices a worker runs in turn: a slow slice delays less
PUBLISH_ROWS = 100_000  # a worker's progress message per this many rows of a side


@dataclass
class Cluster:
    """Where tasks go: a scheduler's address, or a LocalCluster of `workers` processes."""

    address: str | None = None
    workers: int | None = None
    _client: Any = None
    _local: Any = None

    def client(self) -> Any:
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.address:
                self._client = Client(self.address)
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

    def condition(self, column: sa.Column) -> sa.ColumnElement:
        parts = []
        if self.low is not None:
            parts.append(column >= self.low)
        if self.high is not None:
            parts.append(column < self.high)
        inside = sa.and_(*parts) if parts else sa.true()
        return sa.or_(inside, column.is_(None)) if self.nulls else inside


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
    bounds = [_min_max(side) for side in (plan.left, plan.right)]
    known = [b for b in bounds if b is not None]
    if not known or count <= 1:
        return [Slice(None, None, nulls=True)]
    low, high = min(b[0] for b in known), max(b[1] for b in known)
    width = max(1, -(-(high - low + 1) // count))
    edges = list(range(low, high + 1, width))[1:]
    cut = [None, *edges, None]
    return [Slice(cut[i], cut[i + 1], nulls=i == 0) for i in range(len(cut) - 1)]


def _min_max(side: SidePlan) -> tuple[int, int] | None:
    column = side.compare[0]
    query = sa.select(sa.func.min(column), sa.func.max(column)).select_from(side.info.table)
    with side.database.snapshot() as conn:
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
    parts = slices(plan, cluster.worker_count() * SLICES_PER_WORKER) if sliceable(plan) else [None]
    client = cluster.client()
    topic = f"auditor-progress-{uuid.uuid4().hex}" if progress is not None else None
    if topic is not None:
        assert progress is not None
        forward = progress
        client.subscribe_topic(topic, lambda event: forward(*event[1]))
    try:
        results = _each_slice(
            client, run_slice, parts, config_path, plan, options=options, topic=topic
        )
    finally:
        if topic is not None:
            client.unsubscribe_topic(topic)
    result = merged(plan, results, options["max_findings"])
    if parts != [None] and getattr(plan.rule, "suggest_keys", False):
        result = _with_suggestions(plan, result, parts, config_path, client)
    return dataclasses.replace(result, duration_s=time.monotonic() - started)


def _each_slice(
    client: Any,
    task: Callable[..., Any],
    parts: list,
    config_path: str,
    plan: RulePlan,
    **more: Any,
) -> list[Any]:
    """`task` run once per slice on the workers (retried twice: a slice only reads), results
    in slice order; workers plan the rule from the config file's path."""
    futures = client.map(
        task,
        parts,
        config_path=config_path,
        rule_name=plan.rule.name,
        pure=False,
        retries=2,
        **more,
    )
    return list(client.gather(futures))


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
    part: Slice, config_path: str, rule_name: str, labels: list[tuple]
) -> dict[tuple, list[tuple]]:
    """On a worker: the source rows of one slice that match each listed mismatch's copy."""
    from auditor.engine import RunOptions
    from auditor.pairing import read_side
    from auditor.recheck import Lookups
    from auditor.scan import Spill
    from auditor.scratch import Scratch
    from auditor.suggest import source_matches

    stop = threading.Event()
    with _planned(config_path, rule_name, part) as plan, contextlib.ExitStack() as stack:
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


def run_slice(
    part: Slice | None,
    config_path: str,
    rule_name: str,
    options: dict[str, Any],
    topic: str | None = None,
) -> RuleResult:
    """On a worker: plan the rule from the config file, narrow both sides to the slice, run it
    with the single-process engine; findings come back as a list (not a spill on this disk)."""
    from auditor.engine import RunOptions, run_rule
    from auditor.mask import Masker

    with _planned(config_path, rule_name, part) as plan:
        run_options = RunOptions(
            batch_size=options["batch_size"],
            max_findings=options["max_findings"],
            recheck=options["recheck"],
            masker=Masker.create(options["mask"]),
            suggest=part is None,  # sliced: the client gathers suggestions across slices
        )
        publisher = _Publisher(topic) if topic else None
        result = run_rule(plan, run_options, publisher or (lambda *_: None), threading.Event())
        if publisher is not None:
            publisher.flush()
        return dataclasses.replace(result, findings=tuple(result.findings))


@contextlib.contextmanager
def _planned(config_path: str, rule_name: str, part: Slice | None) -> Iterator[RulePlan]:
    """On a worker: the rule planned from the config file (the URLs stay in it), both scans
    narrowed to the slice; its databases closed afterwards."""
    from auditor import api
    from auditor.config.loader import load_config
    from auditor.db.engines import open_databases

    config = load_config(config_path)
    databases = open_databases(config)
    try:
        plan = api.plan_rule(config, config.rule(rule_name), databases)
        if part is not None:
            only = dataclasses.replace(part, nulls=False)
            plan = dataclasses.replace(
                plan,
                left=dataclasses.replace(plan.left, key_slice=part),
                right=dataclasses.replace(plan.right, key_slice=only),
            )
        yield plan
    finally:
        for database in databases.values():
            dispose = getattr(getattr(database, "engine", None), "dispose", None)
            if dispose:
                dispose()


def merged(plan: RulePlan, results: list[RuleResult], cap: int) -> RuleResult:
    """One rule's result from its slices': counts added, findings listed slice by slice (the
    caller sets the duration: the client's wall time, suggestions included)."""
    errors = [r for r in results if r.status == "error"]
    first = results[0]
    if errors:
        return errors[0]
    counts: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    findings: list[Finding] = []
    for result in results:
        counts.update(result.counts)
        rows.update(result.rows_scanned)
        findings.extend(result.findings)
    listed = findings if cap == 0 else findings[:cap]
    total = sum(counts.values())
    return dataclasses.replace(
        first,
        status=finished_status(plan.rule.severity, dict(counts)),
        counts=dict(counts),
        rows_scanned=dict(rows),
        findings=tuple(listed),
        findings_truncated=total > len(listed),
    )
