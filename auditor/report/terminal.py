"""The terminal report (rich). The only module that prints.

Designed for a person reading a post-migration run: a header, live progress per rule and side,
a summary table, a sample of findings per rule with masked values, and a one-line verdict.
Without a terminal (cron, pipes) it degrades to plain text; NO_COLOR is respected by rich.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from auditor.report.safe import printable
from auditor.result import AuditResult, Finding, RuleResult

SAMPLE = 10
STATUS_STYLE = {
    "pass": "bold green",
    "warn": "bold yellow",
    "fail": "bold red",
    "error": "bold magenta",
    "interrupted": "bold yellow",
    "skipped": "dim",
}


def console(stderr: bool = False, width: int | None = None, record: bool = False) -> Console:
    return Console(stderr=stderr, width=width, record=record, highlight=False)


def error(message: str) -> None:
    """One line on stderr: what went wrong and, in the message, what to do about it."""
    text = Text(f"auditor: error: {printable(message)}", style="bold red")
    console(stderr=True).print(text, soft_wrap=True)


def warn(message: str) -> None:
    text = Text(f"auditor: warning: {printable(message)}", style="yellow")
    console(stderr=True).print(text, soft_wrap=True)


def plain(text: str) -> None:
    print(text)


class ScanProgress:
    """Progress bars per rule and side: rows read and rows per second."""

    def __init__(self, out: Console, enabled: bool) -> None:
        self.enabled = enabled and out.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=out,
            transient=True,
            disable=not self.enabled,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}

    @contextlib.contextmanager
    def running(self) -> Iterator[ScanProgress]:
        with self._progress:
            yield self

    def __call__(self, rule: str, side: str, rows: int, estimate: int | None = None) -> None:
        if not self.enabled:
            return
        key = (rule, side)
        if key not in self._tasks:
            total = estimate or None  # the catalog's estimate: a bar that may end early or late
            description = f"{rule} · {side}"
            self._tasks[key] = self._progress.add_task(description, total=total, rate="")
        task = self._tasks[key]
        self._progress.advance(task, rows)
        state = self._progress.tasks[task]
        speed = state.speed
        self._progress.update(task, rate=f"{speed:,.0f} rows/s" if speed else "")


def header(out: Console, config_path: str, databases: dict[str, str]) -> None:
    out.print(Text.assemble(("auditor", "bold"), f"  config {config_path}"))
    for name, url in databases.items():
        out.print(Text(f"  {name}: {printable(url)}", style="dim"))


def render_result(out: Console, result: AuditResult, files: list[str]) -> None:
    out.print(_summary(result))
    for rule in result.rules:
        if rule.error:
            out.print(Text(f"{rule.name}: {printable(rule.error)}", style=STATUS_STYLE["error"]))
        if rule.findings:
            out.print(_sample(rule))
    out.print(_verdict(result, files))


def _summary(result: AuditResult) -> Table:
    """Rule, status, rows per side, findings per kind, time: at 80 columns a long rule name
    folds and `kind count` / `side count` pairs wrap between name and number, so the table
    keeps its right edge at 10M-row counts."""
    table = Table(title="Audit summary", title_justify="left", expand=False)
    widest = max((len(rule.name) for rule in result.rules), default=4)
    table.add_column("Rule", overflow="fold", min_width=min(widest, 16))
    table.add_column("Status", no_wrap=True)
    table.add_column("Rows", overflow="fold")
    table.add_column("Findings", overflow="fold")
    table.add_column("Time", justify="right", no_wrap=True)
    for rule in result.rules:
        scanned = "\n".join(f"{side} {n:,}" for side, n in rule.rows_scanned.items()) or "-"
        counts = "\n".join(f"{kind} {n:,}" for kind, n in rule.counts.items())
        counts = counts or ("-" if rule.status in ("error", "skipped", "interrupted") else "none")
        table.add_row(
            Text.assemble((rule.name, "bold"), (f"\n{rule.type}", "dim")),
            Text(rule.status.upper(), style=STATUS_STYLE.get(rule.status, "")),
            scanned,
            counts,
            f"{rule.duration_s:.2f}s",
        )
    return table


def _sample(rule: RuleResult) -> Table:
    shown = min(SAMPLE, len(rule.findings))
    title = f"{rule.name}: {shown} of {rule.total:,} findings"
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in ("Kind", "Key", "Ref", "Details"):
        table.add_column(column, overflow="fold")
    for finding in sample(rule.findings, SAMPLE, rule.counts):
        cells = (finding.kind, _compact(finding.key), _compact(finding.ref), _details(finding))
        table.add_row(*(Text(cell) for cell in cells))
    return table


def sample(
    findings: Sequence[Finding], n: int, counts: dict[str, int] | None = None
) -> list[Finding]:
    """Up to n findings, taking kinds in turn so that every kind shows; one pass, holding at
    most n of each kind, that ends once it has n of every kind in `counts` (a rule may list
    millions, read back from disk)."""
    by_kind: dict[str, list[tuple[int, Finding]]] = {}
    enough = {kind: min(n, count) for kind, count in (counts or {}).items() if count}
    for position, finding in enumerate(findings):
        first = by_kind.setdefault(finding.kind, [])
        if len(first) < n:
            first.append((position, finding))
        if enough and all(len(by_kind.get(kind, ())) >= want for kind, want in enough.items()):
            break
    picked: list[tuple[int, Finding]] = []
    queues = [iter(first) for first in by_kind.values()]
    while len(picked) < n and queues:
        for queue in list(queues):
            if len(picked) < n:
                item = next(queue, None)
                if item is None:
                    queues.remove(queue)
                else:
                    picked.append(item)
    return [finding for _, finding in sorted(picked, key=lambda item: item[0])]


def _compact(value: dict[str, Any] | None) -> str:
    """A key or ref as plain text (never markup), control characters escaped."""
    if not value:
        return "-"
    if len(value) == 1:
        return printable(json.dumps(next(iter(value.values())), ensure_ascii=False))
    pairs = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
    return printable(pairs)


def _details(finding: Finding) -> str:
    parts = []
    if finding.field:
        source, copy = finding.source_value or "(missing)", finding.copy_value or "(missing)"
        parts.append(f"{finding.field}: {source} ≠ {copy}")
    if finding.suggested:
        parts.append(f"use {_compact(finding.suggested)}")
    if finding.suggested_key:
        parts.append(f"matches source {_compact(finding.suggested_key)}")
    if finding.count is not None:
        parts.append(f"{finding.count} rows hold this key")
    if finding.note:
        parts.append(finding.note)
    return printable("; ".join(parts)) or "-"


def _verdict(result: AuditResult, files: list[str]) -> Text:
    totals = result.totals
    style = STATUS_STYLE.get(result.status, "")
    text = Text.assemble(
        (result.status.upper(), style),
        f": {totals['findings']:,} findings in {totals['rules']} rules, "
        f"{result.duration_s:.1f}s (exit {result.exit_code})",
    )
    if files:
        text.append(f"\nreports: {', '.join(files)}")
    return text


def render_check(out: Console, check: Any) -> None:
    header(out, check.config_path, check.databases)
    for rule in check.rules:
        table = Table(
            title=f"{rule.name} ({rule.type}, key type {'/'.join(rule.key_types)})",
            title_justify="left",
        )
        for column in ("Side", "Table", "Rows (estimate)", "Look-up index"):
            table.add_column(column)
        for side in rule.sides:
            rows = "unknown" if side.estimated_rows is None else f"{side.estimated_rows:,}"
            index = Text("missing", style="yellow") if side.lookup_index else Text("ok", "green")
            if not side.rereadable:
                index = Text("- (files: not read again)", style="dim")
            table.add_row(side.role, side.table, rows, index)
        out.print(table)
        for note in rule.notes:
            out.print(Text(f"note: {note}", style="dim"))
        for warning in rule.warnings:
            out.print(Text(f"warning: {warning}", style="yellow"))
    for warning in check.warnings:
        out.print(Text(f"warning: {warning}", style="yellow"))
    out.print(Text(f"OK: {len(check.rules)} rules checked; no data rows were read", "bold green"))


def render_diff(out: Console, diff: Any) -> None:
    table = Table(title="Findings since the earlier report", title_justify="left")
    for column in ("Rule", "New", "Resolved", "Persisting"):
        table.add_column(column, justify="left" if column == "Rule" else "right")
    for rule, counts in diff.rules.items():
        new = Text(f"{counts['new']:,}", style="bold red" if counts["new"] else "")
        resolved = Text(f"{counts['resolved']:,}", style="green" if counts["resolved"] else "")
        table.add_row(Text(printable(rule)), new, resolved, f"{counts['persisting']:,}")
    for rule in diff.unknown_rules:
        table.add_row(Text(printable(rule)), Text("unknown", style="yellow"), "", "")
    out.print(table)
    for finding in diff.new[:SAMPLE]:
        out.print(Text(f"new: {finding['rule']} {finding['kind']} {_compact(finding['key'])}"))
    summary = (
        f"{len(diff.new):,} new, {len(diff.resolved):,} resolved, {diff.persisting:,} persisting"
    )
    out.print(Text(summary, style="bold"))


def new_findings_line(failing: dict[str, int], since: str | None, files: list[str]) -> str:
    """One line for cron's mail: how many new findings, per rule, and where to read them."""
    rules = ", ".join(f"{name} {n:,}" for name, n in failing.items())
    where = f" since {since}" if since else ""
    html = next((f for f in files if f.endswith(".html")), files[0] if files else None)
    total = sum(failing.values())
    return f"{total:,} new findings{where} ({rules})" + (f"; see {html}" if html else "")


def render_fix(out: Console, result: Any) -> None:
    """`auditor fix`: per rule what was planned and, after --apply, what happened to it."""
    for warning in result.warnings:
        out.print(Text(f"warning: {printable(warning)}", style="yellow"))
    title = "Repairs applied" if result.applied else "Repair plan (nothing changed yet)"
    table = Table(title=title, title_justify="left")
    columns = ["Rule", "Table", "Planned", "Skipped", "Left alone"]
    if result.applied:
        columns += ["Applied", "Failed"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("Rule", "Table") else "right")
    for rule in result.rules:
        cells: list[Text | str] = [
            Text(printable(rule.name)),
            Text(printable(rule.table or "-")),
            f"{rule.planned_total:,}",
            Text(f"{sum(rule.skipped.values()):,}", "yellow" if rule.skipped else ""),
            f"{sum(rule.left_alone.values()):,}",
        ]
        if result.applied:
            cells += [
                Text(f"{rule.applied:,}", "green" if rule.applied else ""),
                Text(f"{rule.failed:,}", "bold red" if rule.failed else ""),
            ]
        table.add_row(*cells)
    out.print(table)
    for rule in result.rules:
        for reason, count in sorted(rule.skipped.items()):
            out.print(Text(f"{printable(rule.name)}: {count:,} skipped: {reason}", "dim"))
        for error in rule.errors[:3]:
            out.print(Text(f"{printable(rule.name)}: {printable(error)}", "red"))
    for path in result.files:
        out.print(Text(f"wrote {path}", "dim"))
    if result.interrupted:
        out.print(Text("interrupted: the batch in flight was rolled back", "bold red"))
