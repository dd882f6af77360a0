"""The engine's own cancel token: stopping its workers never touches the user's stop event."""

from __future__ import annotations

import threading

import pytest

import auditor
from auditor import engine, pairing
from auditor.concurrency import CancelToken
from auditor.errors import DatabaseError
from tests.conftest import make_database, plans
from tests.scenarios import build_reference


class RecordingEvent(threading.Event):
    """The user's stop event, as the CLI's signal handler holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def set(self) -> None:
        self.calls.append("set")
        super().set()

    def clear(self) -> None:
        self.calls.append("clear")
        super().clear()


def test_a_failed_side_cancels_the_other_without_setting_the_users_stop(
    tmp_path, write_config, monkeypatch
):
    """The engine used to set the user's event to stop the other side, then clear it: a
    Ctrl-C between the two found it set and raised KeyboardInterrupt (no report written)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    catalog = next(make_database("sqlite", tmp_path / "a"))
    reviews = next(make_database("sqlite", tmp_path / "b"))
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))
    plan = plans(config)[0]
    cancelled = []

    def read_side(plan, side, spill, options, progress, stop, rows):
        if side is plan.left:
            raise DatabaseError("the left side failed")
        assert stop.wait(5), "the other side was never told to stop"
        cancelled.append(stop.is_set())

    monkeypatch.setattr(pairing, "read_side", read_side)
    user_stop = RecordingEvent()
    with pytest.raises(DatabaseError, match="left side failed"):
        pairing.scan_both(plan, engine.RunOptions(), lambda *_: None, user_stop, tmp_path, {})
    assert cancelled == [True]
    assert user_stop.calls == [] and not user_stop.is_set()


def test_the_token_follows_the_users_stop_and_its_own_cancel():
    stop = threading.Event()
    token = CancelToken(stop)
    assert not token.is_set() and not token.wait(0.01)
    stop.set()
    assert token.is_set() and token.wait(0)
    other = CancelToken(threading.Event())
    other.set()
    assert other.is_set() and not other.stop.is_set()


def test_no_reader_handle_is_opened_after_close(tmp_path, monkeypatch):
    """warm_up() opens the fast driver's handle on a thread; one that starts after close()
    must not open a handle nobody will close."""
    from auditor.config.model import DatabaseConfig
    from auditor.db.engines import open_database

    (tmp_path / "a").mkdir()
    db = next(make_database("sqlite", tmp_path / "a"))
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    database = open_database("a", DatabaseConfig(url=db.url), None)
    opened = []
    monkeypatch.setattr(database.dialect, "open_reader", lambda *a: opened.append(a) or object())
    database.close()
    assert database._shared_reader() is None and opened == []


def test_retries_nested_in_retries_are_not_made_twice(monkeypatch):
    """A side retries its lost connection 3 times; the rule around it, which also retries,
    does not make those 4 attempts again: the error that ends them is no longer retryable."""
    from auditor import concurrency

    monkeypatch.setattr(concurrency, "RETRY_PAUSES_S", (0.0, 0.0, 0.0))
    attempts = []

    def lost() -> None:
        attempts.append(1)
        error = DatabaseError("connection lost")
        error.retryable = True
        raise error

    def side() -> None:
        concurrency.retrying(lost, "r", "scan_retry", threading.Event())

    with pytest.raises(DatabaseError) as raised:
        concurrency.retrying(side, "r", "scan_retry", threading.Event())
    assert len(attempts) == 4 and raised.value.retryable is False
