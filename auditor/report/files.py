"""Writing report files: private permissions, `-` for stdout, dated names for `reports.dir`."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

EXTENSIONS = {"json": "json", "html": "html", "csv": "csv", "junit": "xml", "markdown": "md"}


def write_text(path: str, text: str) -> None:
    """Write a report; `-` is stdout. Files are created 0600: reports can name people."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def dated_path(directory: str | Path, config_path: str, fmt: str, when: dt.datetime) -> str:
    """`reports/<config>-<UTC time>.<ext>`, so nightly runs never overwrite each other."""
    stem = Path(config_path).stem or "audit"
    stamp = when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return str(Path(directory) / f"{stem}-{stamp}.{EXTENSIONS[fmt]}")
