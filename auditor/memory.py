"""Allocator settings that keep the process's resident memory close to what it really uses.

Measured on W1/W3 (bench/run.py): with pyarrow's default mimalloc pool and glibc's per-thread
malloc arenas, freed batch memory stays resident, and peak RSS ran 20-25% above the same run
with jemalloc (which returns memory to the OS on a timer) and at most two glibc arenas.
The drivers' own buffers (ADBC's nanoarrow, connectorx) come from glibc malloc, whose mmap
threshold grows with every large block freed, after which such blocks stay in the heap: a fixed
1 MB threshold returns them to the OS when freed (W3 peak RSS 262-291 MB over five runs,
against 295-300 MB without; same time).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import pyarrow as pa

_M_ARENA_MAX = -8  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
_applied = False


def tune() -> None:
    """Once per process, before the reader threads start; harmless where unsupported."""
    global _applied
    if _applied:
        return
    _applied = True
    with contextlib.suppress(NotImplementedError, pa.ArrowException):
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
