"""One child process measured: its exit code, wall time, peak RSS and output."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time


def measured(command: list[str]) -> tuple[int, float, float, str, str]:
    """Exit code, wall seconds, peak RSS in MB of this one child, stdout and stderr. The child
    is reaped with wait4, whose rusage is its own (RUSAGE_CHILDREN is the largest so far)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return child.returncode, wall, usage.ru_maxrss / 1024, out.read(), err.read()
