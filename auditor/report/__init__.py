"""Renderers: each reads only the AuditResult model.

WRITERS write a report into an open file as they go (JSON and CSV list every finding, which
may be millions: they are streamed); RENDERERS return the same report as one string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from auditor.report import csv, html, junit, markdown
from auditor.report import json as json_report
from auditor.result import AuditResult

RENDERERS: dict[str, Callable[[AuditResult], str]] = {
    "json": json_report.render,
    "html": html.render,
    "csv": csv.render,
    "junit": junit.render,
    "markdown": markdown.render,
}
Writer = Callable[[AuditResult, TextIO], object]


def _whole(render: Callable[[AuditResult], str]) -> Writer:
    return lambda result, out: out.write(render(result))


WRITERS: dict[str, Writer] = {
    **{name: _whole(render) for name, render in RENDERERS.items()},
    "json": json_report.write,
    "csv": csv.write,
}
