"""The library API the CLI is a thin layer over: load_config, check, run.

Orchestration only: config -> databases -> plan -> engine (scan, compare, recheck) -> result.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import sqlalchemy as sa

from auditor import __version__, incremental, log, memory
from auditor.concurrency import retrying
from auditor.config.model import Config, PiiRule
from auditor.db.engines import Database, open_databases, ping
from auditor.engine import RunOptions, run_rule
from auditor.errors import AuditorError, ConfigError, DatabaseError, Interrupted, ResourceError
from auditor.incremental import Incremental
from auditor.mask import Masker
from auditor.plan import RulePlan, build_plan
from auditor.report.diff import (
    ReportDiff,
    Rules,
    diff_reports,
    last_baseline,
    load_report,
    of_result,
)
from auditor.result import AuditResult, RuleResult, fails
from auditor.suggest import anchor_order

Progress = Callable[[str, str, int, int | None], None]


@dataclass(frozen=True)
class SideCheck:
    role: str
    table: str
    estimated_rows: int | None
    lookup_index: str | None  # CREATE INDEX statement that would serve look-ups, or None
    rereadable: bool = True  # files are not read again by the recheck
    ttl_sample: tuple[int, int] | None = None  # Redis: (keys sampled, of which expire)
    changed_index: str | None = None  # CREATE INDEX that would serve `changed >= watermark`
    verify_index: str | None = None  # CREATE INDEX for auditor.verify's suggested_key look-up


@dataclass(frozen=True)
class RuleCheck:
    name: str
    type: str
    key_types: tuple[str, ...]
    sides: tuple[SideCheck, ...]

    @property
    def warnings(self) -> list[str]:
        return [
            f"{side.table}: no index serves the recheck look-ups; consider: {side.lookup_index}"
            for side in self.sides
            if side.lookup_index
        ] + [f"{side.table}: the key pattern matches no key" for side in self.sides
             if side.ttl_sample == (0, 0)] + [
            f"{side.table}: an incremental run reads it by `changed`"
            f"{' and by the referencing columns' if side.role in ('from', 'copy') else ''}, "
            f"consider: {side.changed_index}"
            for side in self.sides if side.changed_index
        ]  # fmt: skip

    @property
    def notes(self) -> list[str]:
        """What `check` saw of a Redis side's keys (how many of a sample expire), and the
        index auditor.verify wants (only services that call it need it: not a warning)."""
        return [
            f"{side.table}: {side.ttl_sample[1]:,} of {side.ttl_sample[0]:,} sampled keys expire"
            for side in self.sides
            if side.ttl_sample and side.ttl_sample[0]
        ] + [
            f"{side.table}: auditor.verify finds suggested_key by this column; consider: "
            f"{side.verify_index}"
            for side in self.sides
            if side.verify_index
        ]


@dataclass(frozen=True)
class CheckResult:
    config_path: str
    databases: dict[str, str]
    rules: tuple[RuleCheck, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = ()  # about the databases: a login that could write


def selected_rules(config: Config, names: Iterable[str] | None):
    if not names:
        return list(config.rules)
    known = {rule.name for rule in config.rules}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"--rule {unknown[0]!r}: no such rule; known: {', '.join(sorted(known))}")
    wanted = set(names)
    return [rule for rule in config.rules if rule.name in wanted]


def plan_rule(
    config: Config, rule, databases: dict[str, Database], check: bool = False
) -> RulePlan:
    """Reflect a rule's tables inside one read-only snapshot per database it touches; an
    error about the config names its file, line and field."""
    try:
        return build_plan(rule, databases, check)
    except ConfigError as exc:
        raise config.config_error(exc, "rules", config.rules.index(rule)) from None


def check(config: Config, rules: Iterable[str] | None = None) -> CheckResult:
    """Validate against the live databases without reading a data row."""
    from auditor.fix import refuse_unfixable  # auditor.fix builds on this module

    databases = open_databases(config)
    try:
        for database in databases.values():
            ping(database)
        checks = []
        audited: dict[str, dict[str, sa.Table]] = {}
        for rule in selected_rules(config, rules):
            plan = plan_rule(config, rule, databases, check=True)
            refuse_unfixable(config, plan)  # its fix block, against the planned sides
            for side in plan.sides:
                audited.setdefault(side.database.name, {})[side.info.label] = side.info.table
            lookups = [(plan.left, plan.left.labels), (plan.right, plan.right.compare)]
            if plan.aliases:
                lookups.append((plan.aliases, plan.aliases.compare))
            sides = tuple(
                SideCheck(
                    side.role,
                    side.info.label,
                    side.info.estimated_rows,
                    side.lookup_index_hint(columns),
                    side.rereadable,
                    side.ttl_sample(),
                    _changed_index(plan, side),
                    _verify_index(plan, side),
                )
                for side, columns in lookups
            )
            checks.append(RuleCheck(rule.name, rule.type, plan.key_types, sides))
        warnings = tuple(
            warning
            for name, tables in audited.items()
            if (warning := _write_warning(databases[name], list(tables.values())))
        )
        return CheckResult(str(config.path), _redacted(databases), tuple(checks), warnings)
    finally:
        _dispose(databases)


def _changed_index(plan: RulePlan, side) -> str | None:  # type: ignore[no-untyped-def]
    """The indexes an incremental run's reads want, when the side has none: on `changed`
    (rows changed since the watermark) and, on the referencing or copy side, on the
    referencing columns (the rows pointing at a key that changed)."""
    if side.changed is None or (side is plan.right and not incremental.reads_delta(plan)):
        return None
    hints = [side.lookup_index_hint((side.changed,))]
    if side is plan.left:
        hints.append(side.lookup_index_hint(side.compare))
    return "; ".join(hint for hint in hints if hint) or None


def _verify_index(plan: RulePlan, side) -> str | None:  # type: ignore[no-untyped-def]
    """The index auditor.verify's suggested_key look-up wants on a pii rule's source: on the
    anchor field (the first that needs no phone parsing), when it has none."""
    rule = plan.rule
    if side is not plan.right or not isinstance(rule, PiiRule) or not rule.suggest_keys:
        return None
    return side.lookup_index_hint((side.values[anchor_order(rule)[0]],))


def _write_warning(database: Database, tables: list[sa.Table]) -> str | None:
    """A warning when the database's login could write to what it audits (SPEC: auditor never
    writes; a read-only login is what guarantees it), or None, also when that is unknown."""
    if not isinstance(database, Database):  # files: opened read-only, no login
        return None
    try:
        with database.snapshot() as conn:
            access = database.dialect.write_access(conn, tables)
    except DatabaseError:
        return None
    if access is None:
        return None
    login = database.url.username or "this login"
    return (
        f"database {database.name!r}: {login} {access}; auditor opens read-only transactions "
        "and refuses predicates that could write, but a login that can only read makes it "
        f"certain: {database.dialect.read_only_login(database.url)}"
    )


def run(
    config: Config,
    *,
    rules: Iterable[str] | None = None,
    options: RunOptions | None = None,
    show_pii: bool = False,
    fail_on: str | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    baseline: str | None = None,
    fail_on_new: bool = False,
) -> AuditResult:
    """Run the audit; rule-level failures become `status: error` rules, not exceptions.

    `baseline` (a JSON report's path, or `last`): the result carries its diff against that
    report, and with `fail_on_new` the exit code counts only new findings (SPEC §5).
    """
    settings = config.settings
    options = options or RunOptions.from_settings(settings)
    if show_pii:
        options = replace(options, masker=Masker.create("none"))
    elif options.masker.mode == "none":
        where = config.locate(("settings", "mask"))
        raise ConfigError(f"{where}: none prints raw PII and needs --show-pii (or --mask)")
    fail_on = fail_on or settings.fail_on
    stop = stop or threading.Event()
    memory.tune()
    started = _now()
    selected = selected_rules(config, rules)
    earlier = _baseline(config, baseline, [rule.name for rule in selected])
    databases = open_databases(config)
    for database in databases.values():
        database.warm_up()
    results: list[RuleResult] = []
    log.event("run_start", rules=len(selected))
    try:
        for rule in selected:
            if stop.is_set():
                results.append(_skipped(rule, "interrupted"))
                continue
            log.event("rule_start", rule=rule.name)
            result = replace(
                _run_one(config, rule, databases, options, progress, stop),
                rule_sha256=rule.fingerprint(),
            )
            log.event(
                "rule_done" if result.error is None else "rule_error",
                logging.INFO if result.error is None else logging.ERROR,
                rule=rule.name,
                status=result.status,
                rows=sum(result.rows_scanned.values()),
                duration_s=round(result.duration_s, 3),
                counts=result.counts,
                **({"message": result.error} if result.error else {}),
                **log.said(result),
            )
            results.append(result)
    finally:
        _dispose(databases)
    status, exit_code = _outcome(results, fail_on, stop.is_set())
    log.event("run_done", status=status)
    audit = AuditResult(
        run_id=str(uuid.uuid4()),
        auditor_version=__version__,
        started_at=started,
        finished_at=_now(),
        config_path=str(config.path or ""),
        config_sha256=config.sha256 or "",
        status=status,
        exit_code=exit_code,
        rules=tuple(results),
        databases=_redacted(databases),
        fail_on=fail_on,
    )
    if earlier is None:
        return audit
    path, report = earlier
    compared = diff_reports(report, of_result(audit).rules)
    if fail_on_new and status in ("pass", "fail"):
        exit_code = compared.exit_code(fail_on)
    return replace(audit, baseline=path, diff=compared, exit_code=exit_code)


def incremental_state(config: Config, full: bool = False) -> Incremental:
    """Where `run --incremental` keeps each rule's state: `settings.state_dir` (relative to
    the config) / the config's name."""
    folder = Path(config.settings.state_dir)
    if config.path and not folder.is_absolute():
        folder = Path(config.path).parent / folder
    stem = Path(config.path).stem if config.path else "audit"
    return Incremental(folder / stem, config.settings.change_lag_s, full)


def reports_directory(config: Config) -> Path | None:
    """`reports.dir`, relative to the config file; None when the config writes no reports."""
    if config.reports is None:
        return None
    folder = Path(config.reports.dir)
    return Path(config.path).parent / folder if config.path else folder


def _baseline(
    config: Config, baseline: str | None, rule_names: list[str]
) -> tuple[str | None, Rules | None] | None:
    """(path, report's rules) to diff the run against, read before the run so that a bad path fails
    at once; (None, None) is the empty baseline of a first night; None: no baseline asked."""
    if baseline is None:
        return None
    if baseline != "last":
        return baseline, load_report(baseline).rules
    directory = reports_directory(config)
    if directory is None:
        raise ConfigError(
            "--baseline last: the config has no reports.dir to find earlier reports in "
            "(add reports: {dir: reports/, formats: [json]})"
        )
    assert config.reports is not None
    if "json" not in config.reports.formats:
        raise ConfigError(
            "--baseline last: reports.formats must include json (earlier reports are read from it)"
        )
    stem = Path(config.path).stem if config.path else "audit"
    path, report = last_baseline(directory, stem or "audit", rule_names)
    return (str(path) if path else None), report


def _run_one(config: Config, rule, databases, options, progress, stop) -> RuleResult:
    try:
        plan = _plan_retrying(config, rule, databases, stop)
        if options.cluster is not None:
            return _on_cluster(config, plan, options, progress)
        return run_rule(plan, options, progress or (lambda *_: None), stop)
    except Interrupted:
        return _skipped(rule, "interrupted")
    except AuditorError as exc:
        if isinstance(exc, ConfigError) and exc.loc is not None:  # found by reading a side
            exc = config.config_error(exc, "rules", config.rules.index(rule))
        return replace(
            _skipped(rule, "error"),
            error=exc.message,
            error_code=exc.exit_code,
            sqlstate=exc.sqlstate,
            errno=exc.errno,
        )
    except OSError as exc:  # a file the run needs: operational (exit 3), not a bug
        error = ResourceError.from_os_error(exc, what="cannot read or write")
        return replace(_skipped(rule, "error"), error=error.message, error_code=error.exit_code)
    except Exception as exc:  # a bug must not cost the other rules their results
        log.debug_traceback(exc)
        # The exception's text may quote a data value: only its type leaves without --debug.
        message = f"internal error: {type(exc).__name__} (rerun with --debug for details)"
        return replace(_skipped(rule, "error"), error=message, error_code=4)


def _on_cluster(config: Config, plan: RulePlan, options: RunOptions, progress) -> RuleResult:
    """The rule run as slices on Dask workers, which read the config from its file (the
    task graph carries its path and these options, never a URL)."""
    from auditor.cluster import run_on_cluster

    if options.incremental is not None:
        raise ConfigError("--incremental runs in one process: leave out --cluster/--workers")
    settings = {
        "batch_size": options.batch_size,
        "max_findings": options.max_findings,
        "recheck": options.recheck,
        "mask": options.masker.mode,
    }
    assert config.path is not None  # loaded from a file: workers load it again
    path = str(Path(config.path).resolve())
    return run_on_cluster(path, plan, settings, options.cluster, progress)


def _plan_retrying(
    config: Config, rule, databases: dict[str, Database], stop: threading.Event
) -> RulePlan:
    """Plan the rule; a connection lost while planning (killed, server restarted) is retried
    like a lost scan."""
    return retrying(lambda: plan_rule(config, rule, databases), rule.name, "plan_retry", stop)


def _skipped(rule, status: str) -> RuleResult:
    return RuleResult(rule.name, rule.type, rule.severity, status, description=rule.description)


def _outcome(results: list[RuleResult], fail_on: str, interrupted: bool) -> tuple[str, int]:
    if interrupted:
        return "interrupted", 130
    errors = [r for r in results if r.status == "error"]
    if errors:
        return "error", errors[0].error_code or DatabaseError.exit_code
    # A `warn` rule's findings are warnings: a warning rule's, or only warning kinds (no_ttl).
    failed = any(
        r.total and fails("warning" if r.status == "warn" else r.severity, fail_on) for r in results
    )
    return ("fail", 1) if failed else ("pass", 0)


def _redacted(databases: dict[str, Database]) -> dict[str, str]:
    return {name: db.redacted for name, db in databases.items()}


def _dispose(databases: dict[str, Database]) -> None:
    for database in databases.values():
        database.close()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def diff(old_path: str, new_path: str) -> ReportDiff:
    """Findings new, resolved and persisting between two JSON reports."""
    return diff_reports(load_report(old_path).rules, load_report(new_path).rules)


__all__ = ["CheckResult", "RunOptions", "check", "diff", "run"]
