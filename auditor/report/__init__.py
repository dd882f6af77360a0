"""Renderers: each reads only the AuditResult model."""

from __future__ import annotations

from collections.abc import Callable

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
