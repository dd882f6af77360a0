"""`auditor fix` (SPEC §10): a report's findings -> a reviewed repair plan, applied on request.

Stages: the report names findings (identities only: it is masked); `changes` reads each one's
rows again and decides what still holds; `sql` turns changes into guarded statements; this
module writes the plan files and, with `apply`, runs them through each database's `fix_url`,
one transaction a batch, the undo of a batch written (and synced) before the batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import sqlalchemy as sa
from sqlalchemy.sql.dml import UpdateBase

from auditor import api, log
from auditor.config.model import Config, PiiRule, ReferenceRule
from auditor.db.engines import open_databases
from auditor.errors import AuditorError, ConfigError, DatabaseError, Interrupted, ResourceError
from auditor.fix import files as files_fix
from auditor.fix import redis as redis_fix
from auditor.fix import sql
from auditor.fix.changes import Change, RuleChanges, rule_changes
from auditor.plan import RulePlan
from auditor.recheck import Lookups
from auditor.report.diff import UNKNOWN_STATUSES, Report, load_report


@dataclass
class RuleFix:
    """One rule's plan and, after `apply`, what happened to it."""

    name: str
    database: str | None = None  # where its changes go
    table: str | None = None
    store: str = "sql"  # sql | redis | files (files are never changed: see auditor.fix.files)
    planned: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, action) -> n
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> findings
    left_alone: Counter[tuple[str, str]] = field(default_factory=Counter)
    applied: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def planned_total(self) -> int:
        return sum(self.planned.values())

    def counts(self) -> dict[str, Any]:
        """For the log: counts only, never a value."""
        return {
            "rule": self.name,
            "planned": self.planned_total,
            "skipped": sum(self.skipped.values()),
            "left_alone": sum(self.left_alone.values()),
        }


@dataclass
class FixResult:
    report: str
    out: Path
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rules: list[RuleFix] = field(default_factory=list)
    applied: bool = False  # --apply ran (whatever it found to do)
    declined: bool = False  # --apply was asked, and the person said no
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """SPEC §10: 0 all applied (or only planned), 1 some skipped or failed, 130 stopped."""
        if self.interrupted:
            return Interrupted.exit_code
        if self.declined:
            return 1
        if not self.applied:
            return 0
        troubled = any(
            r.skipped or r.failed or (r.store != "files" and r.applied < r.planned_total)
            for r in self.rules
        )
        return 1 if troubled else 0


def default_out(report: str | Path) -> Path:
    """`fixes/<report name>/`, next to where auditor runs."""
    return Path("fixes") / Path(report).stem


def fix(
    config: Config,
    report_path: str,
    *,
    rules: list[str] | None = None,
    out: Path | None = None,
    apply: bool = False,
    confirm: Callable[[FixResult], bool] | None = None,
) -> FixResult:
    """Plan the repairs of a report's findings (files in `out`), and apply them if asked.

    Findings are read, re-checked, written and applied CHUNK at a time, so memory stays flat
    however many a report lists. With `apply` and no `confirm` (`--yes`), each chunk is
    applied as it is planned; with `confirm` (asked once, on a terminal) the whole plan is
    written first, and applying re-checks every finding again.
    """
    report = load_report(report_path)
    result = FixResult(report_path, out or default_out(report_path))
    selected = [_checked(config, rule, report.rules, result) for rule in _wanted(config, rules)]
    databases = open_databases(config)
    writers: dict[str, Any] = {}
    try:
        plans: list[tuple[RuleFix, RulePlan]] = []
        for rule, entry in selected:
            outcome = RuleFix(rule.name)
            result.rules.append(outcome)
            if entry is not None:
                plan = api.plan_rule(config, rule, databases)
                refuse_unfixable(config, plan)
                outcome.database, outcome.table = plan.left.database.name, plan.left.info.label
                outcome.store = store_of(plan)
                plans.append((outcome, plan))
        writers = _writers(config, plans) if apply else {}
        at_once = apply and confirm is None
        with _Signals() as signals:
            try:
                _plan_pass(result, config, report, plans, writers if at_once else None, signals)
                if apply and not at_once:
                    assert confirm is not None
                    if not any(o.planned_total for o, _ in plans) or confirm(result):
                        _apply_pass(result, report, plans, writers, signals)
                    else:
                        result.declined = True
            except KeyboardInterrupt:
                result.interrupted = True
        return result
    finally:
        for writer in writers.values():
            if isinstance(writer, sql.Writer):
                writer.engine.dispose()
        for database in databases.values():
            database.close()


def _chunks(plan: RulePlan, report: Report) -> Iterator[RuleChanges]:
    """The rule's findings in the report, re-checked a chunk at a time (fresh snapshots)."""
    with contextlib.ExitStack() as stack:
        lookups = Lookups(plan, stack, threading.Event())
        yield from rule_changes(plan, lookups, report.source.findings({plan.rule.name}))


def _plan_pass(
    result: FixResult,
    config: Config,
    report: Report,
    plans: list[tuple[RuleFix, RulePlan]],
    writers: dict[str, Any] | None,
    signals: _Signals,
) -> None:
    """Re-check, write the plan files and, given `writers` (--yes), apply each chunk."""
    files = _PlanFiles(result.out)
    applier = _Applier(result, writers, signals) if writers is not None else None
    if applier is not None:
        result.applied = True
    try:
        for outcome, plan in plans:
            for chunk in _chunks(plan, report):
                outcome.skipped.update(chunk.skipped)
                outcome.left_alone.update(chunk.left_alone)
                outcome.planned.update(Counter((c.kind, c.action) for c in chunk.changes))
                files.write(plan, chunk.changes)
                if applier is not None:
                    applier.apply(outcome, plan, chunk.changes)
            log.event("fix_planned", **outcome.counts())
    finally:
        if applier is not None:
            applier.close()
        files.close(result, config)


def _apply_pass(
    result: FixResult,
    report: Report,
    plans: list[tuple[RuleFix, RulePlan]],
    writers: dict[str, Any],
    signals: _Signals,
) -> None:
    """Apply a written plan after the person said yes: every finding re-checked again."""
    result.applied = True
    applier = _Applier(result, writers, signals)
    try:
        for outcome, plan in plans:
            outcome.skipped.clear()
            for chunk in _chunks(plan, report):
                outcome.skipped.update(chunk.skipped)
                applier.apply(outcome, plan, chunk.changes)
    finally:
        applier.close()


def _wanted(config: Config, names: list[str] | None):
    rules = api.selected_rules(config, names)
    return [r for r in rules if names or _has_actions(r)]


def _has_actions(rule: ReferenceRule | PiiRule) -> bool:
    return any(value != "none" for value in rule.fix.model_dump().values())


def _checked(config: Config, rule, rules: dict[str, Any], result: FixResult):
    """(rule, its report entry), or (rule, None) with a warning when the report cannot say
    which findings it has; a truncated list is refused (SPEC §10)."""
    entry = rules.get(rule.name, (None, None))[0]
    if entry is None:
        result.warnings.append(f"rule {rule.name!r} is not in the report: nothing to fix")
        return rule, None
    if entry.get("status") in UNKNOWN_STATUSES:
        result.warnings.append(
            f"rule {rule.name!r} is {entry['status']!r} in the report: its findings are unknown"
        )
        return rule, None
    if not _has_actions(rule):
        return rule, entry
    if entry.get("findings_truncated"):
        raise ConfigError(
            f"{result.report}: the findings of rule {rule.name!r} were truncated; rerun the audit "
            "with --max-findings 0 to fix them"
        )
    if entry.get("rule_sha256") not in (None, rule.fingerprint()):
        result.warnings.append(
            f"rule {rule.name!r} changed in {config.path} since the report was written: "
            "its findings are re-checked under the rule as it is now"
        )
    return rule, entry


def refuse_unfixable(config: Config, plan: RulePlan) -> None:
    """A fix the planned side cannot take is a config error naming the fix key's line."""
    rule = plan.rule
    index = config.rules.index(rule)
    side = plan.left
    for kind, action in rule.fix.model_dump().items():
        if action == "none":
            continue
        problem = None
        store = store_of(plan)
        if store == "redis":
            problem = redis_fix.refusal(side, action)
        elif store == "files":
            problem = files_fix.refusal(side, action)
        elif side.extract is not None:
            problem = "the ids are inside text (extract): auditor fix changes whole columns"
        elif action == "nullify":
            required = [c.name for c in side.compare if not c.nullable]
            if required:
                problem = f"{side.info.label}.{required[0]} is NOT NULL; use delete or none"
        if problem:
            where = config.locate(("rules", index, "fix", kind))
            raise ConfigError(f"{where}: {action}: {problem}")


def store_of(plan: RulePlan) -> str:
    """Where a rule's changes go: "sql", "redis" or "files"."""
    from auditor.files import FileSidePlan
    from auditor.redis_store import RedisSidePlan

    if isinstance(plan.left, RedisSidePlan):
        return "redis"
    return "files" if isinstance(plan.left, FileSidePlan) else "sql"


def _private(path: Path, mode: str = "w") -> TextIO:
    """A new file only its owner can read (it holds raw values), replacing one there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    return cast(TextIO, os.fdopen(fd, mode, encoding="utf-8", newline="\n"))


class _PlanFiles:
    """`<db>.sql` per database, opened at its first change and written a chunk at a time;
    `plan.md` when all is planned."""

    def __init__(self, out: Path) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ResourceError.from_os_error(exc, str(out), "cannot write the plan to") from None
        self.out = out
        self.handles: dict[str, TextIO] = {}
        self.backends: dict[str, str] = {}
        self.tables: dict[str, set[str]] = {}
        self.counts: Counter[str] = Counter()
        self.rules: set[str] = set()
        self.redirects: dict[str, Counter[tuple[str, str]]] = {}

    def write(self, plan: RulePlan, changes: list[Change]) -> None:
        if not changes:
            return
        name = plan.left.database.name
        self.tables.setdefault(name, set()).add(plan.left.info.label)
        store = self.backends.setdefault(name, store_of(plan))
        if store == "files":
            self.redirects.setdefault(name, Counter()).update(
                files_fix.redirects(plan.left, changes)
            )
            self.counts[name] += len(changes)
            return
        if store == "redis":
            if name not in self.handles:
                self.handles[name] = _private(self.out / f"{name}.redis")
            handle = self.handles[name]
            for command in redis_fix.commands(plan.left, changes):
                handle.write(command.line() + "\n")
            self.counts[name] += len(changes)
            return
        target = _target(plan)
        if name not in self.handles:
            self.handles[name] = _private(self.out / f"{name}.sql")
            self.handles[name].write(
                f"-- auditor fix: guarded changes to database {name!r}, in one transaction.\n"
                "-- Each statement changes a row only while it still holds the value read when "
                "it was planned:\n-- running this file twice changes nothing the second time.\n"
                f"{sql.begin(target)}\n"
            )
            self.backends[name] = target.backend
        handle = self.handles[name]
        if plan.rule.name not in self.rules:
            self.rules.add(plan.rule.name)
            handle.write(f"\n-- rule {plan.rule.name}\n")
        dialect = target.database.engine.dialect
        for batch in sql.batches(changes):
            handle.write(sql.render(sql.statement(target, batch), dialect) + "\n")
        self.counts[name] += len(changes)

    def close(self, result: FixResult, config: Config) -> None:
        for name, handle in self.handles.items():
            if self.backends[name] == "redis":
                handle.close()
                result.files.append(self.out / f"{name}.redis")
                continue
            handle.write(f"\nCOMMIT;\n-- {self.counts[name]:,} changes\n")
            handle.close()
            result.files.append(self.out / f"{name}.sql")
        for name, rows in self.redirects.items():
            path = self.out / f"{name}-redirects.csv"
            files_fix.write(path, rows, _private)
            result.files.append(path)
        with _private(self.out / "plan.md") as handle:
            handle.write(_plan_markdown(result, config, self))
        result.files.append(self.out / "plan.md")


class _Applier:
    """Applies changes through each database's writer: one connection and one undo file per
    database, opened at its first change."""

    def __init__(self, result: FixResult, writers: dict[str, Any], signals: _Signals):
        self.result, self.writers, self.signals = result, writers, signals
        self.stack = contextlib.ExitStack()
        self.connections: dict[str, sa.Connection] = {}
        self.undo: dict[str, _UndoFile] = {}
        self.redis_undo: dict[str, tuple[TextIO, Path]] = {}

    def apply(self, outcome: RuleFix, plan: RulePlan, changes: list[Change]) -> None:
        if not changes or outcome.store == "files":
            return
        if outcome.store == "redis":
            self._redis(outcome, plan, changes)
            return
        target = _target(plan)
        name = target.database.name
        writer = self.writers[name]
        if name not in self.connections:
            self.connections[name] = self.stack.enter_context(writer.connect())
        if name not in self.undo:
            self.undo[name] = _UndoFile(self.result.out / "undo" / f"{name}.sql", target)
            self.result.files.append(self.undo[name].path)
        for batch in sql.batches(changes):
            _apply_batch(
                self.connections[name], writer, target, batch, self.undo[name], outcome,
                self.signals,
            )  # fmt: skip

    def _redis(self, outcome: RuleFix, plan: RulePlan, changes: list[Change]) -> None:
        """Each change one guarded script; its undo line written before the next runs (a
        signal waits for both)."""
        name = plan.left.database.name
        writer = self.writers[name]
        if name not in self.redis_undo:
            path = self.result.out / "undo" / f"{name}.redis"
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.redis_undo[name] = (_private(path), path)
            self.result.files.append(path)
        undo = self.redis_undo[name][0]
        for command in redis_fix.commands(plan.left, changes):
            with self.signals.shield():
                reply = writer.run(command)
                line = redis_fix.undo(command, reply) if reply not in (0, None) else None
                if line is None:
                    outcome.skipped["changed since it was planned"] += 1
                    continue
                undo.write(line + "\n")
                undo.flush()
                os.fsync(undo.fileno())
                outcome.applied += 1

    def close(self) -> None:
        for handle, path in self.redis_undo.values():
            handle.close()
            _reverse_lines(path)
        for writer in self.writers.values():
            if isinstance(writer, redis_fix.RedisWriter):
                writer.close()
        for undo in self.undo.values():
            undo.close()
        self.stack.close()
        for outcome in self.result.rules:
            if outcome.planned_total:
                log.event("fix_applied", rule=outcome.name, applied=outcome.applied,
                          failed=outcome.failed)  # fmt: skip


def _reverse_lines(path: Path) -> None:
    """A Redis undo file, its lines last applied first (see _UndoFile.close)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    reordered = path.with_name(path.name + ".tmp")
    with _private(reordered) as out:
        out.writelines(reversed(lines))
        out.flush()
        os.fsync(out.fileno())
    os.replace(reordered, path)


def _writers(config: Config, plans: list[tuple[RuleFix, RulePlan]]) -> dict[str, Any]:
    """A writer per database a rule changes (a missing fix_url fails before any change)."""
    writers: dict[str, Any] = {}
    for _, plan in plans:
        database = plan.left.database
        fix_url = config.databases[database.name].fix_url
        store = store_of(plan)
        if database.name in writers or store == "files":
            continue
        if store == "redis":
            writers[database.name] = redis_fix.writer(database.name, fix_url)
        else:
            writers[database.name] = sql.writer(database, fix_url, database.name)
    return writers


def _target(plan: RulePlan) -> sql.Target:
    side = plan.left
    return sql.Target(side.database, side.info.table, tuple(c.name for c in side.labels))


HOW_TO_APPLY = {
    "postgresql": 'psql "$URL" -v ON_ERROR_STOP=1 -f {file}',
    "mysql": "mariadb -h HOST -u USER -p DATABASE < {file}",
    "mariadb": "mariadb -h HOST -u USER -p DATABASE < {file}",
    "sqlite": "sqlite3 PATH.db < {file}",
}


def _plan_markdown(result: FixResult, config: Config, files: _PlanFiles) -> str:
    lines = [
        "# auditor fix: repair plan",
        "",
        f"- Report: `{result.report}`",
        f"- Config: `{config.path}`",
        f"- Planned: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        "",
        "Every finding was read again from the databases before it was planned: what no longer",
        "holds is skipped. Each statement repeats the value the row held when it was read, so a",
        "row changed since then is left alone and running a file twice changes nothing more.",
        "These files hold raw values: they are readable by their owner only; delete them when",
        "done.",
        "",
    ]
    for warning in result.warnings:
        lines.append(f"> **Warning:** {warning}")
    if result.warnings:
        lines.append("")
    lines += ["## Per rule", "", "| rule | kind | action | planned |", "|---|---|---|---:|"]
    for rule in result.rules:
        for (kind, action), count in sorted(rule.planned.items()):
            lines.append(f"| {rule.name} | {kind} | {action} | {count:,} |")
    lines += ["", "## Skipped and left alone", ""]
    quiet = True
    for rule in result.rules:
        for reason, count in sorted(rule.skipped.items()):
            lines.append(f"- {rule.name}: {count:,} skipped: {reason}")
            quiet = False
        for (kind, why), count in sorted(rule.left_alone.items()):
            lines.append(f"- {rule.name}: {count:,} {kind} left alone: {why}")
            quiet = False
    if quiet:
        lines.append("Nothing.")
    lines += ["", "## Files", ""]
    for name, count in files.counts.items():
        backend = files.backends[name]
        tables = ", ".join(sorted(files.tables[name]))
        if backend == "files":
            lines.append(
                f"- `{name}-redirects.csv`: {len(files.redirects[name]):,} distinct texts in "
                f"{tables} holding a retired id (in {count:,} places), each with the same text "
                "holding the current id: redirects for your web server, or a search-and-"
                "replace you run. auditor does not change files; --apply leaves them alone."
            )
            continue
        if backend == "redis":
            lines.append(
                f"- `{name}.redis`: {count:,} guarded changes to the keys {tables} on "
                f"database `{name}`: each line an EVAL that changes a key only while it holds "
                f"what was read. By hand: `redis-cli -u URL < {name}.redis` (a 0 reply: left "
                f"alone); or --apply with `databases.{name}.fix_url` set (the undo goes to "
                f"`undo/{name}.redis`)."
            )
            continue
        how = HOW_TO_APPLY.get(backend, "your database's client").format(file=f"{name}.sql")
        lines += [
            f"- `{name}.sql`: {count:,} guarded changes to {tables} on database `{name}` "
            f"({backend}), one transaction. By hand: `{how}`; or "
            f"`auditor fix {result.report} --config {config.path} --apply` with "
            f"`databases.{name}.fix_url` set (it re-checks every finding first and writes "
            f"`undo/{name}.sql` before changing anything).",
        ]
    if not files.counts:
        lines.append("No changes: nothing to apply.")
    return "\n".join(lines) + "\n"


class _Signals:
    """SIGINT/SIGTERM while applying: the batch in flight rolls back. A signal during a
    commit waits for the commit (and its bookkeeping) to end, so the undo file is never cut
    short of a change that was made."""

    def __init__(self) -> None:
        self.pending = False
        self.shielded = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # type: ignore[no-untyped-def]
        self.pending = True
        if not self.shielded:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        self.shielded = True
        try:
            yield
        finally:
            self.shielded = False
        if self.pending:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


BATCH_MARK = "-- batch\n"  # starts each batch's undo in the file while it is written


class _UndoFile:
    """`undo/<db>.sql`: what puts back each applied batch, synced to disk before the batch
    runs; cut back to where it was when the batch rolls back. When applying ends, the batches
    are rewritten last applied first: a row changed by two rules (a column copied, then the
    row deleted) is put back in the reverse order."""

    def __init__(self, path: Path, target: sql.Target) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.handle = _private(path, "w+")
        self.path = path
        self.dialect = target.database.engine.dialect
        self.header = (
            f"-- auditor fix: undo of the changes applied to database {target.database.name!r} "
            f"at {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.\n"
            "-- Each statement is guarded by the value written: it leaves alone a row changed "
            "since.\n"
        )
        self.begin = f"{sql.begin(target)}\n"
        self.handle.write(
            self.header + "-- (in the order applied: the run did not end; undo the last batch "
            "first)\n" + self.begin
        )
        self._sync()

    def position(self) -> int:
        """Where the next batch's undo starts: what `cut` goes back to if it rolls back."""
        return self.handle.tell()

    def add(self, statements: Iterable[UpdateBase]) -> None:
        """Write a batch's undo and sync it to disk (before the batch changes anything)."""
        self.handle.write(BATCH_MARK)
        for statement in statements:
            self.handle.write(sql.render(statement, self.dialect) + "\n")
        self._sync()

    def cut(self, position: int) -> None:
        self.handle.seek(position)
        self.handle.truncate()
        self._sync()

    def close(self) -> None:
        """COMMIT, then the same file with its batches last applied first (written beside it
        and renamed over it: a crash leaves one whole file or the other)."""
        self.handle.write("COMMIT;\n")
        self._sync()
        self.handle.seek(0)
        text = self.handle.read()
        self.handle.close()
        body = text.split(self.begin, 1)[1].removesuffix("COMMIT;\n")
        batches = [part for part in body.split(BATCH_MARK) if part]
        reordered = self.path.with_name(self.path.name + ".tmp")
        with _private(reordered) as handle:
            handle.write(self.header + "-- (last applied first)\n" + self.begin)
            handle.writelines(reversed(batches))
            handle.write("COMMIT;\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(reordered, self.path)

    def _sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())


def _apply_batch(
    conn: sa.Connection,
    writer: sql.Writer,
    target: sql.Target,
    batch: list[Change],
    undo: _UndoFile,
    outcome: RuleFix,
    signals: _Signals,
) -> None:
    """One transaction: lock the rows that still hold the audited values, write their undo,
    change exactly them, commit. A failed batch is rolled back and counted, the rest go on."""
    position = None
    try:
        transaction = conn.begin()
        try:
            rows = sql.locked_rows(conn, target, batch)
            held = {sql.key_of(target, row) for row in rows}
            changes = [c for c in batch if tuple(str(v) for v in c.key) in held]
            if changes:
                position = undo.position()
                undo.add(sql.undo_statements(target, changes, rows))
                conn.execute(sql.statement(target, changes))
            with signals.shield():
                transaction.commit()
                position = None
                outcome.applied += len(changes)
                if len(changes) < len(batch):
                    outcome.skipped["changed since it was planned"] += len(batch) - len(changes)
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseError(writer.failure("lost the connection of", exc)) from None
        outcome.failed += len(batch)
        outcome.errors.append(writer.failure("a batch failed on", exc))
    except AuditorError:
        raise
    finally:
        if position is not None:
            undo.cut(position)


__all__ = ["FixResult", "RuleFix", "default_out", "fix"]
