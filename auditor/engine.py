"""Runs one planned rule: scan both sides concurrently, compare partition by partition,
confirm candidates with look-ups, and collect exact counts plus a capped list of findings."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from auditor import compare, confirm, incremental, log, pairing
from auditor.concurrency import retrying
from auditor.config.model import PiiRule, ReferenceRule, Settings
from auditor.findings import FindingLog
from auditor.mask import Masker
from auditor.plan import RulePlan
from auditor.recheck import Lookups
from auditor.result import Finding, RuleResult, finished_status
from auditor.scratch import scratch
from auditor.suggest import suggest_by_anchor, suggest_keys

CONFIRM_CHUNK = 10_000  # candidates confirmed together: fewer, larger look-up statements
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
    incremental: incremental.Incremental | None = None  # `run --incremental` (SPEC §11)
    cluster: Any = None  # cluster.Cluster: rules run as slices on Dask workers (SPEC §12)
    suggest: bool = True  # False: a cluster slice, whose suggestions the client gathers
    # Both sides already read (a cluster bucket: auditor.cluster.compare_bucket): compared and
    # confirmed, not scanned.
    given: tuple[list[pa.Table], list[pa.Table]] | None = None

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


def _attempt(plan: RulePlan, options: RunOptions, progress, stop, started: float) -> RuleResult:
    rule = plan.rule
    collector = Collector(options.max_findings)
    rows: dict[str, int] = {}
    state, why_full = _state(plan, options)
    previous = state.load() if state is not None else None  # (key groups, finding labels)
    delta = None
    if state is not None and previous is not None and incremental.reads_delta(plan):
        delta = incremental.read_delta(state, previous[0], rows)
    groups = None  # the referenced side's key groups, for the next state
    mode = "full"
    with scratch() as space, contextlib.ExitStack() as stack:
        lookups = Lookups(plan, stack, stop)
        right = None
        if delta is not None:
            assert state is not None and previous is not None
            groups, mode = delta.groups, "incremental"
            fetcher = Lookups(plan, stack, stop)  # the confirm thread has its own connections

            def read_source(keys: list[tuple]) -> pa.Table:
                found = fetcher.fetch(plan.right, "compare", keys)
                rows[plan.right.role] += found.num_rows
                return found

            pairs = pairing.delta_pairs(plan, options, progress, stop, rows, delta, previous[1],
                                        state.since, lookups, read_source)  # fmt: skip
        elif options.given is not None:
            left, right = pairing.given_sides(plan, options, space, *options.given)
            pairs = pairing.partition_pairs(left, right, pairing.rows_per_partition(options, plan))
        elif (right := pairing.held_right_side(plan, options, progress, stop, rows)) is None:
            if state is None:
                left, right = pairing.scan_both(plan, options, progress, stop, space, rows)
            else:
                left, right, changed_only = pairing.scan_changed(
                    plan, options, progress, stop, space, rows, state, previous, lookups
                )
                mode = "incremental" if changed_only else "full"
            pairs = pairing.partition_pairs(left, right, pairing.rows_per_partition(options, plan))
            log.event("scan_done", rule=rule.name, rows=sum(rows.values()),
                      duration_s=round(time.monotonic() - started, 3))  # fmt: skip
        else:
            held = right.read(0)
            reread, since = None, None
            if state is not None:
                before = previous and previous[0]
                groups = state.merged(state.groups(held, before), before)
                if previous is not None:
                    changed = incremental.changed_keys(plan, previous[0], groups)
                    reread = incremental.left_rows(plan, lookups, changed, previous[1])
                    since, mode = state.since, "incremental"
            pairs = pairing.streamed_pairs(
                plan, options, progress, stop, rows, held, reread=reread, since=since
            )
        confirm_chunk = confirm.references if isinstance(rule, ReferenceRule) else confirm.copies

        def confirmed(candidates: pa.Table) -> None:
            if stop.is_set():  # stopping: queued chunks are dropped, the rule is interrupted
                return
            if state is not None:
                state.record(candidates)
            room = collector.room(candidates.num_rows)
            for kind, build, count in confirm_chunk(plan, options, lookups, candidates, room):
                if build is None:
                    collector.counts[kind] += count
                else:
                    collector.add_lazy(kind, build)

        def add_duplicates(duplicate_keys: pa.Table) -> None:
            listed = duplicate_keys.slice(0, collector.room(duplicate_keys.num_rows))
            for finding in compare.duplicate_findings(plan, listed):
                collector.add(finding)
            if duplicate_keys.num_rows > listed.num_rows:
                collector.counts["duplicate_key"] += duplicate_keys.num_rows - listed.num_rows

        # Look-ups wait on the databases: one thread confirms while this one keeps comparing;
        # it is also the only thread that touches the collector, in the order of the outcomes.
        with ThreadPoolExecutor(1, thread_name_prefix="confirm") as confirmer:
            confirming: deque = deque()
            hook = options.before_recheck
            pending: list[pa.Table] = []
            for outcome in itertools.chain(compare.outcomes(plan, pairs, stop), [None]):
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
        if not stop.is_set():
            for finding in plan.left.side_findings(rule.name):  # e.g. Redis keys without TTL
                collector.add(finding)
        suggested = None
        if (
            isinstance(rule, PiiRule)
            and rule.suggest_keys
            and options.suggest
            and not stop.is_set()
        ):
            if delta is None:
                assert right is not None
                suggested = suggest_keys(plan, lookups, right, collector.log.labelled())
            else:  # the source was not read: the state's anchor hashes name the candidates
                suggested = suggest_by_anchor(
                    plan, lookups, delta.groups, read_source, collector.log.labelled()
                )
            log.event("suggest_done", rule=rule.name,
                      duration_s=round(time.monotonic() - compared, 3))  # fmt: skip
    if state is not None and not stop.is_set():
        state.save(groups)  # or the groups it wrote partition by partition
    return RuleResult(
        incremental=_incremental_summary(options, state, mode, why_full),
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


def _state(plan: RulePlan, options: RunOptions) -> tuple[incremental.RuleState | None, str | None]:
    """This rule's incremental state, or (None, why not): not asked, or the rule cannot."""
    if options.incremental is None:
        return None, None
    state = options.incremental.for_rule(plan)
    why = state.supported
    if why is not None:
        incremental.say(plan.rule.name, why)
        return None, why
    state.read_watermark()
    return state, None


def _incremental_summary(
    options: RunOptions, state: incremental.RuleState | None, mode: str, why_full: str | None
) -> dict[str, Any] | None:
    """What the report says of an incremental run: full or incremental, from which watermark,
    and why a run was full."""
    if options.incremental is None:
        return None
    if state is None:
        return {"mode": "full", "since": None, "watermark": None, "reason": why_full}
    return {
        "mode": mode,
        "since": incremental.shown(state.since) if mode == "incremental" else None,
        "watermark": incremental.shown(state.next_watermark),
        "reason": state.reason if mode == "full" else None,
    }
