"""The typer CLI: each command parses its flags, calls one API function, renders, exits.

Errors are caught in exactly one place (`main`); `--debug` re-raises them with a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from auditor import __version__, api, log
from auditor.config import load_config
from auditor.config.model import Config
from auditor.db.engines import redact
from auditor.engine import RunOptions
from auditor.errors import AuditorError, ConfigError
from auditor.mask import Masker
from auditor.report import WRITERS
from auditor.report import csv as csv_report
from auditor.report import json as json_report
from auditor.report.files import dated_paths, write_report
from auditor.result import AuditResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    help="Prove that data duplicated across separate databases is still consistent.",
)


def _flag(*names: str, **kwargs: Any) -> Any:
    """An on/off option: no type after it in --help (typer 0.2x shows `<bool>`)."""
    return typer.Option(*names, metavar="", **kwargs)


class FailOn(StrEnum):
    error = "error"
    warning = "warning"
    never = "never"


class MaskMode(StrEnum):
    partial = "partial"
    hash = "hash"


def _version(value: bool) -> None:
    if value:
        _terminal().plain(f"auditor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, _flag("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, _flag("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    if debug:
        os.environ["AUDITOR_DEBUG"] = "1"  # the library prints tracebacks of what it catches


ConfigArg = Annotated[
    Path, typer.Argument(metavar="CONFIG", help="The YAML config file.", show_default=False)
]


@app.command()
def check(config: ConfigArg) -> None:
    """Validate CONFIG, connect to every database and print the plan; reads no data rows."""
    result = api.check(load_config(config))
    terminal = _terminal()
    terminal.render_check(terminal.console(), result)


@app.command()
def run(
    config: ConfigArg,
    rule: Annotated[
        list[str] | None,
        typer.Option("--rule", metavar="NAME", help="Run only this rule (repeatable)."),
    ] = None,
    json_path: Annotated[
        str | None, typer.Option("--json", metavar="PATH", help="Write JSON here.")
    ] = None,
    html_path: Annotated[
        str | None, typer.Option("--html", metavar="PATH", help="Write HTML here.")
    ] = None,
    csv_path: Annotated[
        str | None, typer.Option("--csv", metavar="PATH", help="Write CSV here.")
    ] = None,
    junit_path: Annotated[
        str | None, typer.Option("--junit", metavar="PATH", help="Write JUnit XML.")
    ] = None,
    markdown_path: Annotated[
        str | None, typer.Option("--markdown", metavar="PATH", help="Write Markdown.")
    ] = None,
    csv_raw: Annotated[
        bool, _flag("--csv-raw", help="CSV cells as they are (no ' before = + - @).")
    ] = False,
    fail_on: Annotated[FailOn | None, typer.Option(help="Lowest severity that fails.")] = None,
    max_findings: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Findings kept per rule (0 = all).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Rows per batch.")
    ] = None,
    show_pii: Annotated[bool, _flag("--show-pii", help="Print raw PII values.")] = False,
    mask: Annotated[MaskMode | None, typer.Option(help="How PII values are masked.")] = None,
    quiet: Annotated[bool, _flag("--quiet", "-q", help="No terminal report.")] = False,
    no_progress: Annotated[bool, _flag("--no-progress", help="No progress bars.")] = False,
    no_recheck: Annotated[
        bool, _flag("--no-recheck", help="Report candidates without re-reading them.")
    ] = False,
    log_file: Annotated[
        str | None, typer.Option("--log-file", metavar="PATH", help="Append a JSON-lines log here.")
    ] = None,
    verbose: Annotated[bool, _flag("--verbose", help="JSON-lines log on stderr.")] = False,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            metavar="PATH|last",
            help="Diff against an earlier JSON report (last: the newest in reports.dir).",
        ),
    ] = None,
    fail_on_new: Annotated[
        bool,
        _flag("--fail-on-new", help="Exit 1 only for findings new since --baseline."),
    ] = False,
    incremental: Annotated[
        bool,
        _flag(
            "--incremental",
            help="Read only rows changed since the last run (sides with `changed`); keep state.",
        ),
    ] = False,
    full: Annotated[
        bool, _flag("--full", help="With --incremental: read everything, then keep the state.")
    ] = False,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster", metavar="ADDRESS", help="Run rules as slices on this Dask scheduler."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            help="Run rules on a local Dask cluster of N processes.",
        ),
    ] = None,
) -> None:
    """Run the audit described by CONFIG; exit 0 pass, 1 findings, 2 config, 3 database."""
    if fail_on_new and baseline is None:
        raise ConfigError("--fail-on-new needs --baseline PATH|last")
    if full and not incremental:
        raise ConfigError("--full goes with --incremental (a run without it is always full)")
    log.configure(log_file, verbose)
    cfg = load_config(config)
    settings = cfg.settings
    overrides: dict[str, object] = {"recheck": not no_recheck}
    if batch_size:
        overrides["batch_size"] = batch_size
    if max_findings is not None:
        overrides["max_findings"] = max_findings
    if mask:
        overrides["masker"] = Masker.create(mask.value)
    if incremental:
        overrides["incremental"] = api.incremental_state(cfg, full)
    if cluster or workers:
        if incremental:  # said before a local cluster starts (api.run says it per rule too)
            raise ConfigError("--incremental runs in one process: leave out --cluster/--workers")
        import importlib.util

        if importlib.util.find_spec("distributed") is None:
            raise ConfigError("--cluster/--workers need Dask: pip install 'auditor[dask]'")
        from auditor.cluster import Cluster

        spread = Cluster(cluster, workers)
        spread.client()  # an unreachable scheduler is one error now (exit 3), not one per rule
        overrides["cluster"] = spread
    explicit = {
        "json": json_path,
        "html": html_path,
        "csv": csv_path,
        "junit": junit_path,
        "markdown": markdown_path,
    }
    audit = Audit(
        cfg,
        RunOptions.from_settings(settings, **overrides),
        targets=[(fmt, path) for fmt, path in explicit.items() if path],
        rules=rule,
        show_pii=show_pii,
        fail_on=fail_on.value if fail_on else None,
        quiet=quiet,
        progress=not no_progress,
        baseline=baseline,
        fail_on_new=fail_on_new,
        csv_raw=csv_raw,
    )
    try:
        result, _ = audit.run()
    finally:
        if audit.options.cluster is not None:
            audit.options.cluster.close()
    raise typer.Exit(result.exit_code)


@dataclass
class Audit:
    """One `run` (or the demo's): progress bars, the report files, the terminal report, and
    each error once on stderr."""

    config: Config
    options: RunOptions
    targets: list[tuple[str, str]] = field(default_factory=list)
    rules: list[str] | None = None
    show_pii: bool = False
    fail_on: str | None = None
    quiet: bool = False
    progress: bool = True
    baseline: str | None = None
    fail_on_new: bool = False
    csv_raw: bool = False

    def run(self) -> tuple[AuditResult, list[str]]:
        """The result and the report files written. Quiet runs (cron's usual form) never
        load the terminal renderer: rich is ~70 ms of start."""
        cfg = self.config
        stop = threading.Event()
        with _stop_on_signals(stop), contextlib.ExitStack() as stack:
            progress = None
            if not self.quiet:
                terminal = _terminal()
                out = terminal.console(stderr="-" in [path for _, path in self.targets])
                databases = {
                    n: redact(d.url) if d.url else str(d.path) for n, d in cfg.databases.items()
                }
                terminal.header(out, str(cfg.path), databases)
                progress = stack.enter_context(
                    terminal.ScanProgress(out, enabled=self.progress).running()
                )
            result = api.run(
                cfg,
                rules=self.rules,
                options=self.options,
                show_pii=self.show_pii,
                fail_on=self.fail_on,
                progress=progress,
                stop=stop,
                baseline=self.baseline,
                fail_on_new=self.fail_on_new,
            )
        written = _write_reports(result, cfg, self.targets, self.csv_raw)
        files = [path for path in written if path != "-"]
        if not self.quiet:
            terminal.render_result(out, result, files)
        _say_errors(result)
        if result.diff is not None:
            _say_baseline(result, cfg, self.quiet, files)
        return result, files


def _say_errors(result: AuditResult) -> None:
    """One line per distinct cause on stderr, naming the rules it stopped."""
    causes: dict[str, list[str]] = {}
    for rule in result.rules:
        if rule.error:
            causes.setdefault(rule.error, []).append(rule.name)
    for message, names in causes.items():
        _terminal().error(f"{message} ({'rules' if len(names) > 1 else 'rule'} {', '.join(names)})")


def _say_baseline(result: AuditResult, cfg: Config, quiet: bool, files: list[str]) -> None:
    diff = result.diff
    assert diff is not None
    terminal = _terminal()
    if result.baseline is None:
        where = api.reports_directory(cfg)
        terminal.warn(
            f"no earlier report of {cfg.path} in {where}: an empty baseline, every finding is new"
        )
    _say_diff(diff, result.fail_on, quiet, result.baseline, files)


def _say_diff(diff, fail_on: str, quiet: bool, since: str | None, files: list[str]) -> None:
    """The diff: its table unless quiet; the rules not compared and, when quiet, the new
    findings that fail, on stderr (so that cron mails only the nights that need a look)."""
    terminal = _terminal()
    if not quiet:
        terminal.render_diff(terminal.console(), diff)
    if diff.unknown_rules:
        terminal.warn(
            "not compared (a report does not list all their findings: absent, error, skipped, "
            f"interrupted or truncated): {', '.join(diff.unknown_rules)}"
        )
    failing = diff.failing_new(fail_on)
    if quiet and failing:
        terminal.error(terminal.new_findings_line(failing, since, files))


def _terminal() -> ModuleType:
    """The terminal renderer, imported when something is printed (see _audit)."""
    from auditor.report import terminal

    return terminal


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", metavar="DIR", help="Where to build the demo databases.")
    ] = Path("demo"),
) -> None:
    """Build SQLite databases and exported files with seeded problems, a config, and audit them."""
    from auditor import demo as demo_data

    config_path = demo_data.build(directory)
    cfg = load_config(config_path)
    result, files = Audit(cfg, RunOptions.from_settings(cfg.settings)).run()
    report = next((p for p in files if p.endswith(".html")), "")
    me, terminal = _self_command(), _terminal()
    terminal.plain(f"\nOpen the report:  xdg-open {report}   (or open it in any browser)")
    terminal.plain(f"Run it again:     {me} run {config_path}")
    terminal.plain(f"Check the plan:   {me} check {config_path}")
    if result.status == "error":
        raise typer.Exit(result.exit_code)


@app.command()
def init(
    urls: Annotated[
        list[str],
        typer.Argument(metavar="URL...", help="Two or more database URLs.", show_default=False),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write the draft here [stdout]."),
    ] = None,
    sample: Annotated[
        int, typer.Option(metavar="N", min=1, help="Distinct values sampled per candidate.")
    ] = 1000,
    phone_region: Annotated[
        str, typer.Option(metavar="CC", help="Region phone numbers are read in.")
    ] = "US",
) -> None:
    """Draft a config from the schemas and sampled values of two or more databases."""
    from auditor.draft import draft_config

    text = draft_config(urls, sample, phone_region).yaml()
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    _terminal().plain(f"Wrote {out}: review it, then `{_self_command()} check {out}`")


@app.command()
def diff(
    old: Annotated[
        Path, typer.Argument(metavar="OLD", help="The earlier JSON report.", show_default=False)
    ],
    new: Annotated[
        Path, typer.Argument(metavar="NEW", help="The later JSON report.", show_default=False)
    ],
    json_path: Annotated[
        str | None, typer.Option("--json", metavar="PATH", help="Write the diff as JSON.")
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option(help="Lowest severity of a new finding that fails.")
    ] = FailOn.error,
    quiet: Annotated[
        bool, _flag("--quiet", "-q", help="No table; new failing findings on stderr.")
    ] = False,
) -> None:
    """Findings new, resolved and persisting between two reports; exit 1 on new findings."""
    result = api.diff(str(old), str(new))
    if json_path:
        write_report(json_path, functools.partial(json_report.write_diff, result))
    _say_diff(result, fail_on.value, quiet or json_path == "-", str(old), [])
    raise typer.Exit(result.exit_code(fail_on.value))


@app.command()
def fix(
    report: Annotated[
        Path, typer.Argument(metavar="REPORT", help="A JSON report of `run`.", show_default=False)
    ],
    config: Annotated[
        Path, typer.Option("--config", metavar="CONFIG", help="The config the report came from.")
    ],
    rule: Annotated[
        list[str] | None,
        typer.Option("--rule", metavar="NAME", help="Fix only this rule (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Where the plan goes [fixes/<report name>/]."),
    ] = None,
    apply: Annotated[
        bool, _flag("--apply", help="Apply the plan through each database's fix_url.")
    ] = False,
    yes: Annotated[bool, _flag("--yes", help="Apply without asking.")] = False,
    log_file: Annotated[
        str | None, typer.Option("--log-file", metavar="PATH", help="Append a JSON-lines log here.")
    ] = None,
    verbose: Annotated[bool, _flag("--verbose", help="JSON-lines log on stderr.")] = False,
) -> None:
    """Turn REPORT's findings into a guarded repair plan per the rules' `fix:`; --apply runs it."""
    from auditor.fix import fix as plan_fixes

    log.configure(log_file, verbose)
    cfg = load_config(config)
    if apply and not yes and not _interactive():
        raise ConfigError("--apply without a terminal to ask on needs --yes")
    confirm = None if yes else _confirm_fix
    result = plan_fixes(cfg, str(report), rules=rule, out=out, apply=apply, confirm=confirm)
    terminal = _terminal()
    terminal.render_fix(terminal.console(), result)
    raise typer.Exit(result.exit_code)


def _interactive() -> bool:
    """Whether a person can be asked (stdin is a terminal)."""
    return sys.stdin.isatty()


def _confirm_fix(result: Any) -> bool:
    planned = sum(rule.planned_total for rule in result.rules)
    databases = sorted({rule.database for rule in result.rules if rule.planned_total})
    question = f"Apply {planned:,} changes to {', '.join(databases)} (plan in {result.out})?"
    return typer.confirm(question, default=False)


def _self_command() -> str:
    """How the user can run this same auditor again (it may not be on PATH, e.g. in .venv)."""
    script = Path(sys.argv[0])
    if script.name == "auditor":
        with contextlib.suppress(ValueError):
            return str(script.resolve().relative_to(Path.cwd()))
        return str(script)
    return f"{sys.executable} -m auditor"


def _write_reports(
    result: AuditResult, cfg: Config, targets: list[tuple[str, str]], csv_raw: bool = False
) -> list[str]:
    """The config's `reports:` files (dated, never overwritten) and those the flags ask for:
    a flag adds a file, it does not replace the config's."""
    writers = dict(WRITERS)
    if csv_raw:
        writers["csv"] = functools.partial(csv_report.write, guard=False)
    directory = api.reports_directory(cfg)
    if directory is not None and cfg.reports is not None:
        when = dt.datetime.fromisoformat(result.started_at)
        dated = dated_paths(directory, str(cfg.path), list(cfg.reports.formats), when)
        targets = [*dated.items(), *targets]
    for fmt, path in targets:
        write_report(path, functools.partial(writers[fmt], result))
    return [path for _, path in targets]


class _stop_on_signals:
    """SIGINT/SIGTERM set the stop event: the scan ends cleanly, reports say `interrupted`."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: dict[int, object] = {}

    def __enter__(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # type: ignore[no-untyped-def]
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    """Entry point: the one place errors become messages and exit codes.

    typer handles usage errors itself (exit 2) and exits through SystemExit.
    """
    try:
        app(args=argv, prog_name="auditor")
    except AuditorError as exc:
        log.debug_traceback(exc)
        _terminal().error(exc.message)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _terminal().error("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, never a traceback unless --debug
        log.debug_traceback(exc)
        # The exception's text may quote a data value: only its type leaves without --debug.
        _terminal().error(f"internal error: {type(exc).__name__} (rerun with --debug for details)")
        sys.exit(4)


def _quiet_native_stderr() -> None:
    """Keep what native code writes straight to file descriptor 2 off the terminal.

    connectorx reports a killed MariaDB connection or an SQL error as a Rust panic: it prints
    `thread '<unnamed>' panicked at ...` (with a backtrace where RUST_BACKTRACE is set) on
    fd 2, then raises in Python, and the raised error becomes auditor's one-line message. So
    Python's own stderr moves to a copy of fd 2, and fd 2 itself to an unlinked temp file.
    Under --debug nothing is moved: every line is shown.
    """
    if "--debug" in sys.argv[1:] or not hasattr(os, "dup2"):
        return
    try:
        terminal = os.dup(2)
        with tempfile.TemporaryFile() as sink:  # unlinked already: nothing is left behind
            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)  # fd 2 keeps the file open after `sink` is closed
        sys.stderr = open(  # noqa: SIM115 - lives as long as the process
            terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace"
        )
    except OSError:
        return  # no fd 2, or no temp directory: native lines stay where they were


def entry() -> None:
    """The `auditor` command: main(), then leave without the interpreter's teardown.

    Unloading pyarrow, SQLAlchemy and the drivers took 0.25-0.4 s after every run on the
    benchmark machine. By the time main() returns, report files are closed; the streams and
    log handlers are flushed here, so nothing written is lost.
    """
    _quiet_native_stderr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
            code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
