"""A pytest plugin (SPEC §13): a project's own test run checks its auditor rules.

Registered through the `pytest11` entry point, so pytest loads it wherever auditor is
installed; it stays inactive unless asked: without `--auditor` it adds no test, and nothing
of auditor's engine is imported until a rule runs or the fixture is used.

- `pytest --auditor audit.yaml [--auditor-rule NAME]...`: one test item per rule
  (`audit.yaml::rule-name`, so `-k` selects them), failing with its counts and a masked sample
  of findings; the counts also go into JUnit XML as properties.
- the fixture `auditor_run(config, **options)`: runs a config (a path, or a dict written to a
  temporary file) and returns the AuditResult, for assertions in the project's own tests.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from auditor.config.model import Config
    from auditor.result import AuditResult, RuleResult

SAMPLE = 5  # findings shown per failing rule


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("auditor", "auditor rules as tests")
    group.addoption(
        "--auditor",
        action="append",
        default=[],
        metavar="CONFIG",
        help="Run the rules of this auditor config as test items (repeatable).",
    )
    group.addoption(
        "--auditor-rule",
        action="append",
        default=[],
        metavar="NAME",
        help="With --auditor: only this rule (repeatable).",
    )


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect items: ours are selectable too
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for path in config.getoption("auditor"):
        items.extend(AuditorConfig.from_parent(session, path=Path(path).resolve()).collect())


class AuditorConfig(pytest.File):
    """One auditor config: its rules (those named by --auditor-rule, if any) as items."""

    def collect(self) -> Iterator[AuditorRule]:
        from auditor.api import selected_rules
        from auditor.config.loader import load_config
        from auditor.errors import AuditorError

        try:
            config = load_config(self.path)
            wanted = self.config.getoption("auditor_rule") or None
            rules = selected_rules(config, wanted)
        except AuditorError as exc:
            raise pytest.UsageError(f"--auditor: {exc}") from None
        for rule in rules:
            yield AuditorRule.from_parent(self, name=rule.name, audit=config)


class RuleFailed(Exception):
    """A rule whose findings fail it (its severity against `fail_on`), or that erred."""

    def __init__(self, rule: RuleResult) -> None:
        super().__init__(rule.name)
        self.rule = rule


class AuditorRule(pytest.Item):
    def __init__(self, *, audit: Config, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audit = audit

    def runtest(self) -> None:
        from auditor.api import run
        from auditor.result import fails

        result = run(self.audit, rules=[self.name])
        (rule,) = result.rules
        self.user_properties.extend(sorted(rule.counts.items()))
        severity = "warning" if rule.status == "warn" else rule.severity
        if rule.status == "error" or (rule.total and fails(severity, result.fail_on)):
            raise RuleFailed(rule)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[no-untyped-def]
        if not isinstance(excinfo.value, RuleFailed):
            return str(super().repr_failure(excinfo, style))
        rule = excinfo.value.rule
        if rule.status == "error":
            return f"rule {rule.name}: error: {rule.error}"
        counts = ", ".join(f"{kind} {count:,}" for kind, count in rule.counts.items() if count)
        lines = [f"rule {rule.name}: {rule.status} ({counts})"]
        for finding in list(rule.findings[:SAMPLE]):
            shown = {k: v for k, v in finding.to_dict().items() if k not in ("rule", "severity")}
            lines.append(f"  {shown}")
        if rule.total > SAMPLE:
            lines.append(f"  ... {rule.total - SAMPLE:,} more")
        return "\n".join(lines)

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        return self.path, None, f"auditor rule {self.name}"


@pytest.fixture
def auditor_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., AuditResult]:
    """`auditor_run(config, rules=None, show_pii=False, fail_on=None, **run_options)`: run an
    auditor config (a path, or a dict as the YAML would hold it) and return its AuditResult;
    `run_options` are RunOptions fields (max_findings, batch_size, recheck...)."""

    def run_config(
        config: str | os.PathLike[str] | dict[str, Any],
        rules: list[str] | None = None,
        show_pii: bool = False,
        fail_on: str | None = None,
        **run_options: Any,
    ) -> AuditResult:
        from auditor.api import run
        from auditor.config.loader import load_config
        from auditor.engine import RunOptions

        if isinstance(config, dict):
            path = tmp_path_factory.mktemp("auditor") / "auditor.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            config = path
        loaded = load_config(config)
        options = dataclasses.replace(RunOptions.from_settings(loaded.settings), **run_options)
        return run(loaded, rules=rules, options=options, show_pii=show_pii, fail_on=fail_on)

    return run_config
