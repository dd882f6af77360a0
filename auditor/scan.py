"""Batched streaming of one side, partitioned on the canonical key.

Why partitions and not a sorted merge: two databases never agree on how to sort text (collations)
or on key types (BIGINT vs VARCHAR, UUID vs CHAR(36)), so each side is read unordered in one
consistent statement, every key is put in canonical form locally, and rows are routed to a
partition by that form (partition_of: a hash, a remainder, or for a copy keyed like its source
a key range, which rows stored in key order reach in runs). Matching rows of both sides land in
the same partition, so each partition can be compared alone: memory is bounded by the partition
size, not the table. Partitions live in memory when the whole side fits in one, otherwise in
Arrow IPC files.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from auditor.batch import KEY, SideRows, names_of
from auditor.checks.base import partition_of
from auditor.concurrency import Stop, read_ahead
from auditor.errors import DatabaseError, Interrupted, ResourceError
from auditor.extract import UNMATCHED
from auditor.normalize import numpy_array
from auditor.plan import SidePlan
from auditor.scratch import Scratch, ScratchFile

Progress = Callable[[str, int], None]
ROWS_PER_PARTITION = 250_000


UNKNOWN_SIZE_PARTITIONS = 64
WRITE_BUFFER_BYTES = 2 << 20  # the write buffers of one side's partition files, together
WRITE_SLICE_BYTES = 256 << 10  # the most one IPC batch of a partition file holds
MAX_PARTITIONS = 1024


def partition_count(*estimates: int | None, rows_per_partition: int = ROWS_PER_PARTITION) -> int:
    """Partitions for the larger side; an unknown size (a view, no statistics) gets many.

    Estimates can be wrong either way: a partition that turns out too big is split again
    when it is compared (see Spill.split), so memory stays bounded regardless.
    """
    rows = max([e or 0 for e in estimates] + [1])
    wanted = math.ceil(rows / rows_per_partition)
    if any(e is None for e in estimates):
        wanted = max(wanted, UNKNOWN_SIZE_PARTITIONS)
    return _prime_at_least(max(1, min(MAX_PARTITIONS, wanted)))


def _prime_at_least(n: int) -> int:
    """A prime: integer keys are partitioned modulo it (partition_of), and ids with a step
    (2, 10, 1000...) would fill only some partitions of a count sharing a factor with it."""
    if n <= 2:
        return n
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def grouped(batch: pa.RecordBatch, ids: np.ndarray) -> pa.RecordBatch:
    """The batch's rows ordered by partition number (stable), so each partition is one slice.

    A batch whose rows already come in partition order (a side read in key order and split by
    key ranges) is returned as it is: reordering copies every value (~100 ms per million rows of
    a few text columns).
    """
    if len(ids) < 2 or bool(np.all(ids[:-1] <= ids[1:])):
        return batch
    order = np.argsort(ids.astype(np.int16), kind="stable")  # radix sort on small ints
    return batch.take(numpy_array(order))


def by_partition(
    batch: pa.RecordBatch, ids: np.ndarray, sizes: np.ndarray
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(partition, its rows of the batch as one slice) for each partition that has any;
    `ids`: each row's partition, `sizes`: rows per partition (their bincount)."""
    ordered = grouped(batch, ids)
    starts = np.concatenate(([0], np.cumsum(sizes)))
    for part in np.flatnonzero(sizes):
        yield int(part), ordered.slice(int(starts[part]), int(sizes[part]))


class Spill:
    """The prepared rows of one side, split into partitions by the canonical key (partition_of:
    by ranges of `key_range` when given, else by remainder or hash)."""

    def __init__(
        self,
        schema: pa.Schema,
        partitions: int,
        scratch: Scratch | None,
        seed: int = 0,
        key_range: tuple[int, int] | None = None,
    ) -> None:
        self.schema = schema
        self.partitions = partitions
        self.seed = seed
        self.key_range = key_range
        self.rows = 0
        self.counts = np.zeros(partitions, dtype=np.int64)
        self.sizes = np.zeros(partitions, dtype=np.float64)  # bytes, each batch's share by rows
        self._memory: list[list[pa.RecordBatch]] = [[] for _ in range(partitions)]
        self._scratch = scratch
        self._files: dict[int, ScratchFile] = {}
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._sinks: list[pa.NativeFile] = []

    def _key_columns(self, batch: pa.RecordBatch) -> list[pa.Array]:
        return [batch.column(name) for name in names_of(self.schema, KEY)]

    def add(self, batch: pa.RecordBatch) -> None:
        with self._writing():
            self._add(batch)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Disk full, a quota, a temp directory gone: an error naming the path (exit 3)."""
        try:
            yield
        except OSError as exc:
            where = self._scratch.directory if self._scratch else None
            raise ResourceError.from_os_error(exc, where, "cannot write temp files in") from None

    def _add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if self.partitions == 1 or self._scratch is None:
            self.counts[0] += batch.num_rows
            self.sizes[0] += batch.nbytes
            self._memory[0].append(batch)
            return
        ids = partition_of(self._key_columns(batch), self.partitions, self.seed, self.key_range)
        sizes = np.bincount(ids, minlength=self.partitions)
        self.counts += sizes
        self.sizes += sizes * (batch.nbytes / batch.num_rows)
        # At most WRITE_SLICE_BYTES an IPC batch: a side read in key order sends whole batches
        # to one partition, and writing them whole peaked 20-25 MB higher (W2, W3).
        step = max(256, WRITE_SLICE_BYTES * batch.num_rows // max(batch.nbytes, 1))
        for part, rows in by_partition(batch, ids, sizes):
            writer = self._writer(part)
            for start in range(0, rows.num_rows, step):
                writer.write_batch(rows.slice(start, step))

    def _writer(self, part: int) -> pa.ipc.RecordBatchStreamWriter:
        if part not in self._writers:
            assert self._scratch is not None
            self._files[part] = self._scratch.file()
            # Buffered: unbuffered, every column buffer of every slice was its own write()
            # (75k system calls for 400 MB; buffered writes took 40-60% less time). 2 MB in
            # all: W3's peak RSS was 282 MB with 1 MB, 290 MB with 4 MB, 268 MB unbuffered.
            size = max(4096, min(256 << 10, WRITE_BUFFER_BYTES // self.partitions))
            sink = pa.BufferedOutputStream(pa.OSFile(self._path(part), "wb"), buffer_size=size)
            self._sinks.append(sink)
            self._writers[part] = pa.ipc.new_stream(sink, self.schema)
        return self._writers[part]

    def finish(self) -> None:
        with self._writing():
            for writer in self._writers.values():
                writer.close()
            for sink in self._sinks:
                sink.close()
        self._sinks.clear()

    def reset(self) -> None:
        """Forget everything added: the side is read again from the start."""
        self.finish()
        for part in list(self._writers):
            self.drop(part)
        self._memory = [[] for _ in range(self.partitions)]
        self.counts[:] = 0
        self.sizes[:] = 0
        self.rows = 0

    def _path(self, part: int) -> str:
        return self._files[part].path

    def batches(self, part: int) -> Iterator[pa.RecordBatch]:
        """One partition batch by batch, so it can be split without loading it."""
        if self.partitions == 1 or self._scratch is None:
            yield from self._memory[0]
        elif part in self._writers:
            # Memory-mapped: batches point into the page cache instead of being copied. The
            # map stays open as long as a batch references it (closing it is left to pyarrow).
            # (One file per side, read with pread, wrote 20% faster but held ~70 MB more
            # in two compare threads: W1 at scale 2 peaked at 290 MB against 207 MB.)
            yield from pa.ipc.open_stream(pa.memory_map(self._path(part)))

    def read(self, part: int) -> pa.Table:
        """One partition as a table of single-chunk columns.

        A partition arrives as one small slice per scanned batch; every compute call would pay
        per chunk (measured: the PII compare runs 2x slower on ~140 chunks than on one).
        """
        table = pa.Table.from_batches(list(self.batches(part)), schema=self.schema)
        return table.combine_chunks()

    def split(self, part: int, partitions: int) -> Spill:
        """Divide one partition into `partitions` more with an independent hash."""
        finer = Spill(self.schema, partitions, self._scratch, seed=self.seed + 1)
        for batch in self.batches(part):
            finer.add(batch)
        finer.finish()
        return finer

    def drop(self, part: int) -> None:
        """Delete a partition that was read: it reads back empty."""
        self._writers.pop(part, None)
        if part in self._files:
            self._files.pop(part).close()


EXTRACT_THREADS = 2  # the machine's cores: extracting is the costly part of such a side


def prepared_batches(
    side: SidePlan,
    rows: SideRows,
    batch_size: int,
    progress: Progress,
    stop: Stop,
    since: Any = None,
) -> Iterator[pa.RecordBatch]:
    """One side, read in one read-only statement (one snapshot), as batches of `rows`.

    On a side with `extract` the matching (RE2 over every text, in Arrow without the GIL) costs
    more than reading: batches are exploded and prepared on EXTRACT_THREADS threads, a few at
    a time, in order (5M gzipped log lines: 13.7 s -> 10.2 s, 2026-12-03)."""
    repeated = side.repeated

    def prepared(raw: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        references, unmatched = side.exploded(raw)
        return rows.prepare(references, repeated), unmatched

    def taken(batch: pa.RecordBatch, unmatched: int) -> pa.RecordBatch:
        if unmatched:
            progress(UNMATCHED, unmatched)
        return batch

    threads = EXTRACT_THREADS if side.extract is not None else 0
    try:
        with ThreadPoolExecutor(max(threads, 1), thread_name_prefix="extract") as pool:
            pending: deque = deque()
            stream = (
                side.stream(batch_size) if since is None else side.stream_changed(batch_size, since)
            )
            for raw in read_ahead(stream, stop, overflow=side.pushes):
                if stop.is_set():
                    raise Interrupted("interrupted while scanning")
                if not raw.num_rows:
                    continue
                progress(side.role, raw.num_rows)
                if not threads:
                    yield taken(*prepared(raw))
                    continue
                pending.append(pool.submit(prepared, raw))
                if len(pending) >= threads:
                    yield taken(*pending.popleft().result())
            while pending:
                yield taken(*pending.popleft().result())
    except DatabaseError as exc:
        raise side.refused(exc) from None


def scan_side(
    side: SidePlan, rows: SideRows, spill: Spill, batch_size: int, progress: Progress, stop: Stop
) -> None:
    """Stream one side into its spill."""
    for batch in prepared_batches(side, rows, batch_size, progress, stop):
        spill.add(batch)
    spill.finish()
