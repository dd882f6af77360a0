"""Structured log for cron: one JSON object per line (time, level, rule, event, rows, duration).

Only names, counts, durations and redacted messages are logged: never a data value.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import traceback
from typing import Any

logger = logging.getLogger("auditor")
# Without it, records reach Python's last-resort handler, which printed every error and
# warning as a bare line on stderr beside the CLI's own one-line message.
logger.addHandler(logging.NullHandler())
FIELDS = ("rule", "event", "rows", "duration_s", "counts", "status", "sqlstate", "errno")


def said(error: Any) -> dict[str, Any]:
    """What a database said about an error (its SQLSTATE and error number) as log fields,
    those it told."""
    fields = {"sqlstate": error.sqlstate, "errno": error.errno}
    return {name: value for name, value in fields.items() if value is not None}


def event(name: str, level: int = logging.INFO, message: str | None = None, **fields: Any) -> None:
    logger.log(level, message or name, extra={"event": name, **fields})


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.getMessage() != data.get("event"):
            data["message"] = record.getMessage()
        return json.dumps(data, ensure_ascii=False)


def configure(log_file: str | None, verbose: bool) -> None:
    """Attach JSON-lines handlers; the file is created 0600 like every report."""
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handler: logging.Handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)


def debug_traceback(exc: BaseException) -> None:
    """The traceback of an error, on stderr, under `auditor --debug` only: it can quote data
    values, so it never reaches a report or the log. Nothing else changes with --debug."""
    if os.environ.get("AUDITOR_DEBUG"):
        sys.stderr.write("".join(traceback.format_exception(exc)))
        sys.stderr.flush()
