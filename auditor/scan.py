"""Batched streaming of one side, hash-partitioned on the canonical key.

Why partitions and not a sorted merge: two databases never agree on how to sort text (collations)
or on key types (BIGINT vs VARCHAR, UUID vs CHAR(36)), so each side is read unordered in one
consistent statement, every key is put in canonical form locally, and rows are routed to a
partition by a hash of that form. Matching rows of both sides land in the same partition, so
each partition can be compared alone: memory is bounded by the partition size, not the table.
Partitions live in memory when the whole side fits in one, otherwise in Arrow IPC files.
"""

from __future__ import annotations

import math
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from auditor.checks.base import as_text, canonical_key, partition_of
from auditor.errors import Interrupted
from auditor.plan import DELETED, SidePlan

Progress = Callable[[str, int], None]
ROWS_PER_PARTITION = 250_000


def side_schema(side: SidePlan, key_types: tuple[str, ...]) -> pa.Schema:
    """Canonical keys c*, their text k*, row labels r*, values v*, and the soft-delete flag."""
    fields = [
        pa.field(f"c{i}", pa.int64() if t == "int" else pa.string())
        for i, t in enumerate(key_types)
    ]
    fields += [pa.field(f"k{i}", side.display_type(c)) for i, c in enumerate(side.compare)]
    fields += [pa.field(f"r{i}", side.display_type(c)) for i, c in enumerate(side.labels)]
    fields += [pa.field(f"v{i}", pa.string()) for i in range(len(side.values))]
    if side.soft_delete:
        fields.append(pa.field(DELETED, pa.int8()))
    return pa.schema(fields)


def prepare(batch: pa.RecordBatch, schema: pa.Schema, key_types: tuple[str, ...]):
    """A raw batch from the driver -> the side's fixed schema (canonical keys computed once)."""
    columns: list[pa.Array] = []
    for field in schema:
        name = field.name
        if name.startswith("c"):
            index = int(name[1:])
            columns.append(canonical_key(batch.column(f"k{index}"), key_types[index]))
        elif name == DELETED:
            columns.append(batch.column(DELETED).cast(pa.int8()))
        elif pa.types.is_integer(field.type):
            columns.append(batch.column(name).cast(pa.int64()))
        else:
            columns.append(as_text(batch.column(name)))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def partition_count(*estimates: int | None, rows_per_partition: int = ROWS_PER_PARTITION) -> int:
    rows = max([e or 0 for e in estimates] + [1])
    return max(1, min(1024, math.ceil(rows / rows_per_partition)))


class Spill:
    """The prepared rows of one side, split into partitions by the canonical key hash."""

    def __init__(self, schema: pa.Schema, partitions: int, directory: Path | None) -> None:
        self.schema = schema
        self.partitions = partitions
        self.rows = 0
        self._memory: list[list[pa.RecordBatch]] = [[] for _ in range(partitions)]
        self._dir = directory
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def _key_columns(self, batch: pa.RecordBatch) -> list[pa.Array]:
        return [batch.column(f.name) for f in self.schema if f.name.startswith("c")]

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if self.partitions == 1 or self._dir is None:
            self._memory[0].append(batch)
            return
        ids = partition_of(self._key_columns(batch), self.partitions)
        order = np.argsort(ids.astype(np.int16), kind="stable")  # radix sort on small ints
        sorted_batch = batch.take(pa.array(order))
        bounds = np.concatenate(([0], np.cumsum(np.bincount(ids, minlength=self.partitions))))
        for part in np.flatnonzero(np.diff(bounds)):
            start, stop = int(bounds[part]), int(bounds[part + 1])
            self._writer(int(part)).write_batch(sorted_batch.slice(start, stop - start))

    def _writer(self, part: int) -> pa.ipc.RecordBatchStreamWriter:
        if part not in self._writers:
            assert self._dir is not None
            sink = pa.OSFile(str(self._dir / f"{id(self)}-{part}.arrow"), "wb")
            self._writers[part] = pa.ipc.new_stream(sink, self.schema)
        return self._writers[part]

    def finish(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def read(self, part: int) -> pa.Table:
        if self.partitions == 1 or self._dir is None:
            return pa.Table.from_batches(self._memory[0], schema=self.schema)
        if part not in self._writers:
            return self.schema.empty_table()
        with pa.OSFile(str(self._dir / f"{id(self)}-{part}.arrow"), "rb") as source:
            return pa.ipc.open_stream(source).read_all()


def scan_side(
    side: SidePlan,
    key_types: tuple[str, ...],
    spill: Spill,
    batch_size: int,
    progress: Progress,
    stop: threading.Event,
) -> None:
    """Stream one side in one read-only statement (one snapshot) into its spill."""
    for raw in prefetch(side.database.stream(side.sql(), batch_size), stop):
        if stop.is_set():
            raise Interrupted("interrupted while scanning")
        if raw.num_rows:
            spill.add(prepare(raw, spill.schema, key_types))
            progress(side.role, raw.num_rows)
    spill.finish()


def prefetch(batches: Iterator[pa.RecordBatch], stop: threading.Event, depth: int = 2):
    """Read the next batches on another thread while this one prepares the current one.

    The drivers release the GIL while they read, so reading and preparing overlap; the queue
    bound keeps memory at `depth` batches.
    """
    box: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as exc:  # handed to the consumer, raised there
            offer(exc)
        finally:
            close = getattr(batches, "close", None)
            if close:
                close()

    reader = threading.Thread(target=produce, name="prefetch", daemon=True)
    reader.start()
    while True:
        try:
            item = box.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                raise Interrupted("interrupted while scanning") from None
            continue
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    reader.join()


def spill_directory() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="auditor-")
