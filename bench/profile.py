"""Where an audit's CPU goes, stage by stage (prints figures): `auditor run` in this process
with the engine's stage functions wrapped to add up their thread CPU and wall time.

    python bench/profile.py CONFIG [auditor run options...]
    python bench/profile.py /tmp/W1.yaml --rule orders-customers

A sampling profiler attributes time to whatever a thread happens to be in, waiting included
(the readers wait on sockets, the compare threads on their queue); thread CPU says what each
stage costs the machine, which on a machine whose cores the databases share is what wall time
follows. Stages nest (a compare calls a normaliser): each line counts its own calls, outer
ones include inner ones, and a stage re-entered on one thread is counted once.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import sys
import threading
import time
from collections import defaultdict
from typing import Any

# (module, qualified name): the pipeline's stages, from reading to confirming.
STAGES = [
    ("auditor.db.engines", "Database.stream"),  # the fast driver's reading and decoding
    ("auditor.scan", "prepared_batches"),
    ("auditor.batch", "SideRows.prepare"),
    ("auditor.scan", "Spill._add"),
    ("auditor.scan", "grouped"),
    ("auditor.scan", "Spill.read"),
    ("auditor.compare", "check"),
    ("auditor.checks.reference", "check_references"),
    ("auditor.checks.reference", "lookup"),
    ("auditor.checks.pii", "check_copies"),
    ("auditor.checks.pii", "_compare_field"),
    ("auditor.checks.pii", "normalise"),
    ("auditor.normalize", "Pipeline.plain"),
    ("auditor.normalize", "Pipeline.equal_shortcut"),
    ("auditor.confirm", "_recheck"),
    ("auditor.recheck", "fetched"),
]

_totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
_lock = threading.Lock()
_inside = threading.local()


def _wrapped(name: str, function: Any) -> Any:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        active = _inside.__dict__.setdefault("names", set())
        if name in active:  # re-entered (a recursive split): counted by the outer call
            return function(*args, **kwargs)
        active.add(name)
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            active.discard(name)
            with _lock:
                total = _totals[name]
                total[0] += time.thread_time() - cpu
                total[1] += time.perf_counter() - wall
                total[2] += 1

    return timed


def _generator(name: str, function: Any) -> Any:
    """A generator stage: its thread CPU is counted while it runs, not while it is suspended."""

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        produced = function(*args, **kwargs)
        while True:
            cpu = time.thread_time()
            try:
                item = next(produced)
            except StopIteration:
                return
            finally:
                with _lock:
                    _totals[name][0] += time.thread_time() - cpu
            yield item

    return timed


def install() -> None:
    """Wrap every stage where it is defined and where it was imported by name."""
    import inspect

    for module_name, qualified in STAGES:
        owner: Any = importlib.import_module(module_name)
        *path, attribute = qualified.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, attribute)
        name = f"{module_name}.{qualified}"
        wrap = _generator if inspect.isgeneratorfunction(original) else _wrapped
        replacement = wrap(name, original)
        setattr(owner, attribute, replacement)
        if path:
            continue
        for module in list(sys.modules.values()):  # `from x import f` copies the binding
            named = module is not None and module.__name__.startswith("auditor")
            if named and getattr(module, attribute, None) is original:
                setattr(module, attribute, replacement)


def report(started: float) -> None:
    wall = time.perf_counter() - started
    print(f"\nwall {wall:.2f} s, process CPU {time.process_time():.2f} s", file=sys.stderr)
    print(f"{'thread CPU s':>12} {'wall s':>8} {'calls':>7}  stage", file=sys.stderr)
    for name, (cpu, spent, calls) in sorted(_totals.items(), key=lambda item: -item[1][0]):
        shown = f"{spent:8.2f}" if calls else " " * 8  # generators: CPU only
        print(f"{cpu:12.2f} {shown} {int(calls):7d}  {name}", file=sys.stderr)


def main() -> None:
    started = time.perf_counter()
    install()
    atexit.register(report, started)
    from auditor.cli import main as auditor

    sys.argv = ["auditor", "run", *sys.argv[1:]]
    auditor()


if __name__ == "__main__":
    main()
