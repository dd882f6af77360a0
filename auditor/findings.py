"""The listed findings of one rule, in report order, in flat memory at any `max_findings`.

A Finding object weighs about 600 bytes: 2M of them took 5.5 GB. So a rule keeps at most
RUN_FINDINGS in memory; past that they are sorted and written as a *run* to an anonymous Arrow
IPC file (auditor.scratch), one column per field, and the report order is a k-way merge of the
runs, read back READ_ROWS at a time. Nearly every rule never spills: its findings are a tuple.

A mismatch also keeps the labels of its copy row (which row to look up again to name the
source row it matches: suggest.py); the suggestions found are applied as the findings are read.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import json
import pickle
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, overload

import pyarrow as pa

from auditor.result import Finding
from auditor.scratch import Scratch, ScratchFile

RUN_FINDINGS = 50_000  # ~30 MB of Finding objects
READ_ROWS = 512  # per run while merging: 100 runs (5M findings) hold ~30 MB
TEXT = ("rule", "kind", "severity", "field", "source_value", "copy_value", "note")
MAPS = ("key", "ref", "suggested", "suggested_key")
SCHEMA = pa.schema(
    [(name, pa.string()) for name in (*TEXT, *MAPS)]
    + [("count", pa.int64()), ("labels", pa.binary())]
)
Labels = tuple[Any, ...]
Suggestions = dict[Labels, dict[str, Any]]

_scratch: Scratch | None = None
_scratch_lock = threading.Lock()


def order(finding: Finding) -> tuple:
    """Report order: kind, then key in natural order (numbers as numbers), then field."""
    key = [(0, v, "") if isinstance(v, int) else (1, 0, str(v)) for v in finding.key.values()]
    return (finding.kind, key, finding.field or "")


class FindingLog:
    """Where a rule's listed findings go as they are confirmed (engine.Collector)."""

    def __init__(self) -> None:
        self.count = 0
        self._buffer: list[tuple[Finding, Labels | None]] = []
        self._runs: list[ScratchFile] = []

    def add(self, finding: Finding, labels: Labels | None = None) -> None:
        self._buffer.append((finding, labels))
        self.count += 1
        if len(self._buffer) >= RUN_FINDINGS:
            self._spill()

    def labelled(self) -> Iterator[Labels]:
        """The copy-row labels of every listed mismatch, in no particular order."""
        for _, labels in itertools.chain(self._buffer, *map(_read, self._runs)):
            if labels is not None:
                yield labels

    def findings(self, suggested: Suggestions | None = None) -> Sequence[Finding]:
        """Every listed finding in report order, with `suggested` keys filled in."""
        suggested = suggested or {}
        if not self._runs:
            listed = (_with(finding, labels, suggested) for finding, labels in self._buffer)
            return tuple(sorted(listed, key=order))
        self._spill()
        return SpilledFindings(self._runs, self.count, suggested)

    def _spill(self) -> None:
        if not self._buffer:
            return
        self._buffer.sort(key=lambda item: order(item[0]))
        run = _space().file()
        with pa.OSFile(run.path, "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
            for start in range(0, len(self._buffer), READ_ROWS):
                writer.write_batch(_batch(self._buffer[start : start + READ_ROWS]))
        self._runs.append(run)
        self._buffer = []


class SpilledFindings(Sequence[Finding]):
    """Findings merged from sorted runs on disk each time they are iterated. Indexing reads
    from the start: renderers take the first few or stream them all."""

    def __init__(self, runs: list[ScratchFile], count: int, suggested: Suggestions) -> None:
        self._runs = runs
        self._count = count
        self._suggested = suggested

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Finding]:
        merged = heapq.merge(*(_ordered(run) for run in self._runs), key=lambda item: item[0])
        for _, finding, labels in merged:
            yield _with(finding, labels, self._suggested)

    @overload
    def __getitem__(self, index: int) -> Finding: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Finding]: ...
    def __getitem__(self, index: int | slice) -> Finding | Sequence[Finding]:
        if isinstance(index, slice):
            return tuple(itertools.islice(self, *index.indices(self._count)))
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return next(itertools.islice(self, index % self._count, None))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]


def _with(finding: Finding, labels: Labels | None, suggested: Suggestions) -> Finding:
    if labels is not None and labels in suggested:
        return replace(finding, suggested_key=suggested[labels])
    return finding


def _batch(items: list[tuple[Finding, Labels | None]]) -> pa.RecordBatch:
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for finding, labels in items:
        for name in TEXT:
            columns[name].append(getattr(finding, name))
        for name in MAPS:
            value = getattr(finding, name)
            columns[name].append(None if value is None else json.dumps(value, ensure_ascii=False))
        columns["count"].append(finding.count)
        # The run is this process's own anonymous file: pickle keeps label values exact
        # (dates, bytes, decimals) for the look-ups that suggest keys.
        columns["labels"].append(None if labels is None else pickle.dumps(labels))
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def _read(run: ScratchFile) -> Iterator[tuple[Finding, Labels | None]]:
    """One run, READ_ROWS at a time, read (not memory-mapped: mapped pages count as the
    process's memory for as long as the map lives)."""
    with pa.OSFile(run.path, "rb") as source:
        for batch in pa.ipc.open_stream(source):
            for row in batch.to_pylist():
                labels = row.pop("labels")
                for name in MAPS:
                    if row[name] is not None:
                        row[name] = json.loads(row[name])
                yield Finding(**row), None if labels is None else pickle.loads(labels)


def _ordered(run: ScratchFile) -> Iterator[tuple[tuple, Finding, Labels | None]]:
    for finding, labels in _read(run):
        yield order(finding), finding, labels


def _space() -> Scratch:
    """The process's scratch directory for findings: they outlive a rule's own (its spilled
    rows), until the reports are written."""
    global _scratch
    with _scratch_lock:
        if _scratch is None:
            _scratch = Scratch()
            atexit.register(_scratch.close)
        return _scratch
