"""drained(): a push-style reader (connectorx) taken as fast as it produces, memory bounded."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from auditor.db.dialects import drained


def _batches(count: int, fail_at: int | None = None):
    for i in range(count):
        if i == fail_at:
            raise RuntimeError("connection lost")
        yield pa.record_batch([pa.array([i] * 1000, pa.int64())], names=["k0"])


def test_every_batch_arrives_once_when_the_consumer_lags_past_the_memory_limit():
    seen = []
    for batch in drained(_batches(50), limit=3 * 8000):  # room for three batches
        time.sleep(0.002)
        seen.append(batch.column(0)[0].as_py())
    assert sorted(seen) == list(range(50))


def test_a_source_error_reaches_the_consumer():
    with pytest.raises(RuntimeError, match="connection lost"):
        for _ in drained(_batches(10, fail_at=4), limit=1):
            pass


def test_stopping_early_closes_the_source():
    class Source:
        closed = False

        def __init__(self) -> None:
            self.batches = _batches(100)

        def __iter__(self):
            return self

        def __next__(self) -> pa.RecordBatch:
            return next(self.batches)

        def close(self) -> None:
            self.closed = True

    source = Source()
    stream = drained(source, limit=1)
    next(stream)
    stream.close()  # returns only after the pulling thread has stopped
    assert source.closed
