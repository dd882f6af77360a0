"""Writing report files: private permissions, `-` for stdout, dated names for `reports.dir`."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from auditor.errors import ResourceError

EXTENSIONS = {"json": "json", "html": "html", "csv": "csv", "junit": "xml", "markdown": "md"}


def write_report(path: str, write: Callable[[TextIO], object]) -> None:
    """Write a report with `write(file)`; `-` is stdout. Files are created 0600: reports can
    name people."""
    if path == "-":
        write(sys.stdout)
        sys.stdout.flush()
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
    except OSError as exc:
        raise ResourceError.from_os_error(exc, target, "cannot write report") from None


def write_text(path: str, text: str) -> None:
    """Write a report held as one string (see write_report)."""
    write_report(path, lambda handle: handle.write(text))


def dated_paths(
    directory: str | Path, config_path: str, formats: list[str], when: dt.datetime
) -> dict[str, str]:
    """`DIR/<config>-<UTC time>.<ext>` per format, created empty (0600) and exclusively, so
    two runs started in the same second never overwrite each other: the second one gets
    `<config>-<UTC time>-2.<ext>`, and so on."""
    stem = Path(config_path).stem or "audit"
    stamp = when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResourceError.from_os_error(exc, folder, "cannot create reports.dir") from None
    for attempt in range(1, 1000):
        suffix = "" if attempt == 1 else f"-{attempt}"
        paths = {f: folder / f"{stem}-{stamp}{suffix}.{EXTENSIONS[f]}" for f in formats}
        created: list[Path] = []
        try:
            for path in paths.values():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                created.append(path)
        except FileExistsError:
            for path in created:
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        except OSError as exc:
            raise ResourceError.from_os_error(exc, folder, "cannot write report") from None
        return {f: str(p) for f, p in paths.items()}
    raise ResourceError(f"{folder}: no free report name for {stem}-{stamp}")
