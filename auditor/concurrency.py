"""The one retry helper and the engine's own cancel token (STYLE rule 14).

`retrying` makes an attempt again after a lost connection, with a bounded back-off; the scan,
planning and the recheck all go through it. A `CancelToken` is set by the engine to stop its
own workers (one side failed, stop the other) without touching the user's stop event: the
CLI's signal handler reads that event, and clearing it again after a failure once hid a Ctrl-C
that arrived in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from auditor import log
from auditor.errors import DatabaseError

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
