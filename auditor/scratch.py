"""Scratch files that cannot outlive the process.

Spilled partitions hold raw values, PII included. A file with a name outlives a SIGKILL (a
killed run left 297 MB of plaintext emails in /tmp), so on Linux a scratch file never has
one: it is created with O_TMPFILE (or created and unlinked at once where the file system
cannot do that), 0600, and reached through `/proc/self/fd/N` for as long as its descriptor is
open. When the process dies, however it dies, the kernel closes the descriptors and frees the
files. What can be left is an empty directory: each run holds a lock on its own, and the next
run removes those whose lock nobody holds. Where there is no /proc the files keep their names
(0600, in a 0700 directory) and the same clean-up at the next start removes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from auditor.errors import ResourceError

PREFIX = "auditor-scratch-"
# In every scratch directory: only a directory holding it is ever removed as stale, so a
# user's own /tmp/auditor-scratch-notes (or a tool's) is never touched.
MARKER = ".auditor-scratch"
# A directory this young may be one whose run has not locked it yet: left for the next start.
STALE_AFTER_S = 60
_PROC_FD = Path("/proc/self/fd")

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, no stale clean-up
    fcntl = None  # type: ignore[assignment]


class ScratchFile:
    """One anonymous file: `path` opens it (for pyarrow) until `close()`, or until nothing
    refers to it any more."""

    def __init__(self, directory: Path) -> None:
        fd: int | None = None
        name: str | None = None
        if _PROC_FD.is_dir():
            try:
                fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
            except (AttributeError, OSError):  # no O_TMPFILE here, or not on this file system
                fd, unlinked = tempfile.mkstemp(dir=directory, suffix=".arrow")
                os.unlink(unlinked)
        else:
            kept, name = tempfile.mkstemp(dir=directory, suffix=".arrow")
            os.close(kept)
        self.path = str(_PROC_FD / str(fd)) if fd is not None else str(name)
        self._release = weakref.finalize(self, _release, fd, name)

    def close(self) -> None:
        """Free the file. A memory map of it stays readable until it is dropped."""
        self._release()


def _release(fd: int | None, name: str | None) -> None:
    if fd is not None:
        os.close(fd)
    if name is not None:
        Path(name).unlink(missing_ok=True)


class Scratch:
    """A run's private directory of scratch files; `close()` frees every file still open."""

    def __init__(self, root: str | None = None) -> None:
        root = root or tempfile.gettempdir()
        remove_stale(Path(root))
        try:
            self.directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
        except OSError as exc:
            raise ResourceError.from_os_error(
                exc, root, "cannot create a temp directory in"
            ) from None
        (self.directory / MARKER).touch(mode=0o600)
        self._lock = _hold_lock(self.directory)
        self._files: weakref.WeakSet[ScratchFile] = weakref.WeakSet()
        self._guard = threading.Lock()

    def file(self) -> ScratchFile:
        created = ScratchFile(self.directory)
        with self._guard:
            self._files.add(created)
        return created

    def close(self) -> None:
        with self._guard:
            files, self._files = list(self._files), weakref.WeakSet()
        for scratch_file in files:
            scratch_file.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


@contextlib.contextmanager
def scratch() -> Iterator[Scratch]:
    """A Scratch for the length of a `with` block."""
    space = Scratch()
    try:
        yield space
    finally:
        space.close()


def _hold_lock(directory: Path) -> int | None:
    """An exclusive lock on the directory for as long as this run lives (see remove_stale)."""
    if fcntl is None:
        return None
    fd = os.open(directory, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def remove_stale(root: Path) -> None:
    """Remove the scratch directories of runs that died (SIGKILL, power loss): this user's,
    marked as auditor's (MARKER), older than STALE_AFTER_S, whose lock no process holds."""
    if fcntl is None:
        return
    with contextlib.suppress(OSError):
        for entry in root.glob(f"{PREFIX}*"):
            with contextlib.suppress(OSError):
                info = entry.lstat()
                if not entry.is_dir() or entry.is_symlink() or info.st_uid != os.getuid():
                    continue
                if not (entry / MARKER).is_file():
                    continue
                if time.time() - info.st_mtime < STALE_AFTER_S:
                    continue
                fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live run: raises
                    shutil.rmtree(entry, ignore_errors=True)
                finally:
                    os.close(fd)
