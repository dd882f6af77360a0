"""Spilled rows hold raw PII: they must not outlive the process, however it ends (issue 18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from auditor import scratch
from auditor.scratch import Scratch, ScratchFile
from tests.conftest import make_database
from tests.scenarios import build_pii

# Runs an audit with both sides partitioned to disk, says so once both spills are written,
# and waits there to be killed.
KILLED_RUN = textwrap.dedent(
    """
    import sys, threading, time
    from auditor import pairing, scan
    pairing.partition_count = lambda *a, **k: 4
    pairing.HOLD_MAX_ROWS = 0
    finish = scan.Spill.finish
    finished = []
    lock = threading.Lock()
    def finish_then_wait(self):
        finish(self)
        with lock:
            finished.append(self.rows)
            both = len(finished) == 2
        if both:
            print("spilled", flush=True)
            time.sleep(60)
    scan.Spill.finish = finish_then_wait
    from auditor.cli import app
    app(["run", sys.argv[1], "-q"])
    """
)


def left_dir(root: Path) -> str:
    """The run's own directory (it holds a descriptor on it for its lock)."""
    (directory,) = root.iterdir()
    return str(directory)


def _every_byte_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="anonymous files need /proc")
def test_sigkill_leaves_no_spilled_value_and_the_next_run_removes_the_directory(
    tmp_path, write_config
):
    (tmp_path / "crm").mkdir()
    (tmp_path / "orders").mkdir()
    crm = next(make_database("sqlite", tmp_path / "crm"))
    orders = next(make_database("sqlite", tmp_path / "orders"))
    config = write_config(build_pii(crm, orders))
    temp = tmp_path / "tmp"
    temp.mkdir()
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(config)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    try:
        assert run.stdout is not None and run.stdout.readline() == "spilled\n"
        # While the run lives its spill is readable through its descriptors, and only there.
        held = {
            fd: os.readlink(f"/proc/{run.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{run.pid}/fd")
        }
        spilled = [
            fd for fd, link in held.items() if link.startswith(str(temp)) and link != left_dir(temp)
        ]
        assert spilled and all(held[fd].endswith("(deleted)") for fd in spilled), held
        values = b"".join(Path(f"/proc/{run.pid}/fd/{fd}").read_bytes() for fd in spilled)
        assert b"ann@example.com" in values
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    left = list(temp.iterdir())
    assert [p.name[: len(scratch.PREFIX)] for p in left] == [scratch.PREFIX]
    assert _every_byte_under(temp) == b""  # a directory, its marker empty: no value
    old = time.time() - 2 * scratch.STALE_AFTER_S
    os.utime(left[0], (old, old))
    Scratch(str(temp)).close()  # what the next run does first
    assert list(temp.iterdir()) == []


def test_only_auditors_own_stale_directories_are_removed(tmp_path):
    """A directory that merely looks like a scratch directory (a user's notes, a bench's
    folder of configs) is never removed, however old and unlocked."""
    lookalikes = [tmp_path / f"{scratch.PREFIX}notes", tmp_path / "auditor-bench-configs"]
    for folder in lookalikes:
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
    old = time.time() - 2 * scratch.STALE_AFTER_S
    for folder in lookalikes:
        os.utime(folder, (old, old))
    Scratch(str(tmp_path)).close()
    assert all((folder / "keep.txt").read_text() == "mine" for folder in lookalikes)


def test_a_live_run_keeps_its_directory(tmp_path):
    """Another run's directory is removed only when no process holds its lock."""
    live = Scratch(str(tmp_path))
    old = time.time() - 2 * scratch.STALE_AFTER_S
    os.utime(live.directory, (old, old))
    Scratch(str(tmp_path)).close()
    assert live.directory.is_dir()
    live.close()
    assert list(tmp_path.iterdir()) == []


def test_without_proc_files_are_named_private_and_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(scratch, "_PROC_FD", tmp_path / "no-proc")
    space = Scratch(str(tmp_path))
    named = space.file()
    Path(named.path).write_bytes(b"x")
    assert os.stat(named.path).st_mode & 0o777 == 0o600
    assert os.stat(space.directory).st_mode & 0o777 == 0o700
    space.close()
    assert list(tmp_path.iterdir()) == []


def test_a_file_system_without_o_tmpfile_gets_files_unlinked_at_once(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    directory = tmp_path / "d"
    directory.mkdir()
    anonymous = ScratchFile(directory)
    Path(anonymous.path).write_bytes(b"secret")
    assert list(directory.iterdir()) == [] and Path(anonymous.path).read_bytes() == b"secret"
    anonymous.close()
