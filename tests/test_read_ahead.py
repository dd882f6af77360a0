"""read_ahead(): the one producer thread between a store's reader and the scan."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from auditor import concurrency
from auditor.concurrency import read_ahead
from auditor.errors import Interrupted

BATCH_BYTES = 8000  # 1000 int64 values


def _batches(count: int, fail_at: int | None = None, produced: list[int] | None = None):
    for i in range(count):
        if i == fail_at:
            raise RuntimeError("connection lost")
        if produced is not None:
            produced.append(i)
        yield pa.record_batch([pa.array([i] * 1000, pa.int64())], names=["k0"])


class _Closable:
    closed = False

    def __init__(self, count: int) -> None:
        self.batches = _batches(count)

    def __iter__(self):
        return self

    def __next__(self) -> pa.RecordBatch:
        return next(self.batches)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("overflow", [False, True])
def test_every_batch_arrives_once_when_the_consumer_lags(monkeypatch, overflow):
    monkeypatch.setattr(concurrency, "OVERFLOW_HOLD_BYTES", 3 * BATCH_BYTES)  # three in memory
    seen = []
    for batch in read_ahead(_batches(50), threading.Event(), overflow=overflow):
        time.sleep(0.002)
        seen.append(batch.column(0)[0].as_py())
    assert sorted(seen) == list(range(50))
    if not overflow:
        assert seen == list(range(50))  # a pull-style reader keeps its order


def test_a_pull_style_reader_is_at_most_one_batch_ahead():
    produced: list[int] = []
    stream = read_ahead(_batches(20, produced=produced), threading.Event())
    next(stream)
    time.sleep(0.2)
    assert len(produced) <= 3  # the one taken, the one waiting, the one in the reader's hand
    stream.close()


def test_a_push_style_reader_is_taken_as_fast_as_it_produces(monkeypatch):
    """connectorx queues without bound when not taken: here everything is read while the
    consumer sleeps, past the memory limit into the overflow file."""
    monkeypatch.setattr(concurrency, "OVERFLOW_HOLD_BYTES", 2 * BATCH_BYTES)
    produced: list[int] = []
    stream = read_ahead(_batches(30, produced=produced), threading.Event(), overflow=True)
    next(stream)
    deadline = time.monotonic() + 5
    while len(produced) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(produced) == 30
    assert len(list(stream)) == 29


@pytest.mark.parametrize("overflow", [False, True])
def test_a_reader_error_reaches_the_consumer(overflow):
    with pytest.raises(RuntimeError, match="connection lost"):
        for _ in read_ahead(_batches(10, fail_at=4), threading.Event(), overflow=overflow):
            pass


@pytest.mark.parametrize("overflow", [False, True])
def test_leaving_early_closes_the_reader(overflow):
    source = _Closable(100)
    stream = read_ahead(source, threading.Event(), overflow=overflow)
    next(stream)
    stream.close()  # returns only after the reading thread has stopped
    assert source.closed


def test_stop_interrupts_a_consumer_waiting_on_a_slow_reader():
    def slow():
        yield pa.record_batch([pa.array([1])], names=["k0"])
        time.sleep(5)
        yield pa.record_batch([pa.array([2])], names=["k0"])

    stop = threading.Event()
    stream = read_ahead(slow(), stop)
    next(stream)
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        next(stream)
    assert time.monotonic() - started < 3  # not the reader's 5 s
