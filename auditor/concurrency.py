"""The one retry helper, the one read-ahead producer and the engine's own cancel token
(STYLE rule 14).

`retrying` makes an attempt again after a lost connection, with a bounded back-off; the scan,
planning and the recheck all go through it. A `CancelToken` is set by the engine to stop its
own workers (one side failed, stop the other) without touching the user's stop event: the
CLI's signal handler reads that event, and clearing it again after a failure once hid a Ctrl-C
that arrived in between. `read_ahead` is the one thread that reads a store while the scan
prepares what was read.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pyarrow as pa

from auditor import log
from auditor.errors import DatabaseError, Interrupted

T = TypeVar("T")
RETRY_PAUSES_S = (0.5, 1.0, 2.0)  # bounded back-off when a connection is lost
POLL_S = 0.05


class Stop(Protocol):
    """What the engine's loops read: a threading.Event or a CancelToken."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class CancelToken:
    """Set when the user's `stop` is set or when the engine cancels; setting it never sets
    `stop`."""

    def __init__(self, stop: Stop) -> None:
        self.stop = stop
        self._cancelled = threading.Event()

    def set(self) -> None:
        self._cancelled.set()

    def is_set(self) -> bool:
        return self._cancelled.is_set() or self.stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if left <= 0:
                return False
            self._cancelled.wait(left)
        return True


def retrying(
    attempt: Callable[[], T],
    rule: str,
    event: str,
    stop: Stop,
    reset: Callable[[], None] | None = None,
) -> T:
    """`attempt()`, made again after a lost connection (a retryable DatabaseError) with the
    RETRY_PAUSES_S back-off; `reset` undoes a failed attempt's work first. The error that ends
    the retries is no longer retryable: a caller that retries too (a rule around its sides)
    does not make the same attempts again."""
    for pause in (*RETRY_PAUSES_S, None):
        try:
            return attempt()
        except DatabaseError as exc:
            if not exc.retryable:
                raise
            if pause is None or stop.is_set():
                exc.retryable = False
                raise
            log.event(event, logging.WARNING, exc.message, rule=rule, **log.said(exc))
            if reset is not None:
                reset()
            if stop.wait(pause):
                exc.retryable = False
                raise
    raise AssertionError("unreachable")


OVERFLOW_HOLD_BYTES = 32 << 20  # what a push-style reader may hold in memory before it spills


def read_ahead(batches: Iterator[Any], stop: Stop, overflow: bool = False) -> Iterator[Any]:
    """`batches`, read on a thread of their own while the caller works on the previous one
    (record batches; without `overflow`, anything, e.g. a page of Redis keys).

    The drivers release the GIL while they read, so reading and preparing overlap. A pull-style
    reader (ADBC, files, Redis) waits while one batch is ready and not yet taken: memory stays
    at one batch. A push-style reader (`overflow`: connectorx reads on threads of its own and
    queues batches without bound when its consumer is slower; 147 MB read alone, 417 MB read
    slowly, for 100k rows of 6 kB texts) is taken as fast as it produces: up to
    OVERFLOW_HOLD_BYTES in memory, the rest in an anonymous temporary file handed over after
    (row order does not matter to the scan). An error of the reader is raised here; leaving
    early (or `stop`) ends the thread and closes the reader.
    """
    ready: deque[Any] = deque()
    held = [0]  # bytes in `ready`
    changed = threading.Condition()
    finished = threading.Event()
    leaving = threading.Event()  # the thread must never outlive its consumer
    failed: list[BaseException] = []
    spill: list[Any] = []  # [file, IPC writer] once an overflowing reader filled memory
    hold = OVERFLOW_HOLD_BYTES if overflow else 0

    def quitting() -> bool:
        return leaving.is_set() or stop.is_set()

    def produce() -> None:
        try:
            for batch in batches:
                with changed:
                    while ready and not overflow and not quitting():
                        changed.wait(POLL_S)
                    if quitting():
                        return
                    size = batch.nbytes if overflow else 0
                    if not ready or held[0] + size <= hold:
                        ready.append(batch)
                        held[0] += size
                        changed.notify_all()
                        continue
                if not spill:
                    file = tempfile.TemporaryFile(prefix="auditor-")  # noqa: SIM115 - closed below
                    spill.extend([file, pa.ipc.new_stream(pa.PythonFile(file, "w"), batch.schema)])
                spill[1].write_batch(batch)
        except BaseException as exc:  # handed to the consumer, raised there
            failed.append(exc)
        finally:
            close = getattr(batches, "close", None)
            if close:
                close()  # ends the driver's statement and closes its connection
            with changed:
                finished.set()
                changed.notify_all()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            with changed:
                while not (ready or failed or finished.is_set()):
                    if stop.is_set():
                        raise Interrupted("interrupted while scanning")
                    changed.wait(POLL_S)
                if failed:
                    raise failed[0]
                if not ready:
                    break
                batch = ready.popleft()
                held[0] -= batch.nbytes if overflow else 0
                changed.notify_all()
            yield batch
        if spill:
            spill[1].close()
            spill[0].seek(0)
            yield from pa.ipc.open_stream(pa.PythonFile(spill[0], "r"))
    finally:
        leaving.set()
        with changed:
            changed.notify_all()
        # At most one more batch; a hung driver is left to the OS, at once when stopping.
        thread.join(timeout=1 if stop.is_set() else 10)
        if spill:
            spill[0].close()
