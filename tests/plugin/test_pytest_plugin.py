"""The pytest plugin (SPEC §13), used by a test project through pytester: rules as items,
`-k` selection, JUnit properties, and the `auditor_run` fixture. Each run is a child
process, as a user's is (in-process runs share imported modules with this one)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    """A project with a catalog and a shop database (SQLite) and `audit.yaml`: one rule that
    passes, one with orphans (PII in its findings), one warning rule."""
    with sqlite3.connect(pytester.path / "catalog.db") as db:
        db.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER)")
        db.executemany("INSERT INTO products VALUES (?, ?)", [(1, 0), (2, 0), (3, 1)])
    with sqlite3.connect(pytester.path / "shop.db") as db:
        db.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, email TEXT)")
        rows = [(1, 1, "ann@example.com"), (2, 2, "bob@example.com"), (3, 9, "cy@example.com")]
        db.executemany("INSERT INTO reviews VALUES (?, ?, ?)", rows + [(4, 3, "d@example.com")])

    def rule(name: str, where: str, **more: object) -> dict:
        return {
            "name": name,
            "type": "reference",
            "from": {"db": "shop", "table": "reviews", "columns": ["product_id"], "where": where},
            "to": {"db": "catalog", "table": "products", "columns": ["id"],
                   "soft_delete": "deleted = 1"},
            **more,
        }  # fmt: skip

    config = {
        "version": 1,
        "databases": {
            "catalog": {"url": f"sqlite:///{pytester.path / 'catalog.db'}"},
            "shop": {"url": f"sqlite:///{pytester.path / 'shop.db'}"},
        },
        "rules": [
            rule("reviews-live", "product_id <= 2"),
            rule("reviews-orphans", "id <> 4"),
            rule("reviews-soft-deleted", "id = 4", severity="warning"),
        ],
    }
    path = pytester.path / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_each_rule_is_an_item_that_fails_with_counts(pytester, project):
    result = pytester.runpytest_subprocess("--auditor", str(project), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*rule reviews-orphans: fail (orphan 1)*", "FAILED audit.yaml::reviews-orphans*"]
    )
    assert "'key': {'id': 3}" in result.stdout.str()


def test_rules_are_selected_by_name_and_by_k(pytester, project):
    result = pytester.runpytest_subprocess(
        "--auditor", str(project), "--auditor-rule", "reviews-live"
    )
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("--auditor", str(project), "-k", "orphans or soft")
    result.assert_outcomes(passed=1, failed=1, deselected=1)


def test_without_the_option_nothing_is_added(pytester, project):
    pytester.makepyfile("def test_plain(): pass")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_counts_reach_junit(pytester, project):
    junit = pytester.path / "junit.xml"
    pytester.runpytest_subprocess("--auditor", str(project), f"--junitxml={junit}")
    text = junit.read_text()
    assert 'name="reviews-orphans"' in text and '<property name="orphan" value="1"' in text


def test_a_bad_config_is_a_usage_error(pytester, project):
    project.write_text("version: 1\nrulez: []\n")
    result = pytester.runpytest_subprocess("--auditor", str(project))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--auditor: *audit.yaml:2: rulez: unknown key*"])


def test_the_fixture_runs_a_path_or_a_dict(pytester, project):
    pytester.makepyfile(
        f"""
        import yaml

        def test_by_path(auditor_run):
            result = auditor_run({str(project)!r}, rules=["reviews-orphans"])
            (rule,) = result.rules
            assert rule.counts["orphan"] == 1 and result.exit_code == 1

        def test_by_dict(auditor_run):
            config = yaml.safe_load(open({str(project)!r}))
            config["rules"] = config["rules"][:1]
            result = auditor_run(config, max_findings=1)
            assert result.exit_code == 0 and result.rules[0].status == "pass"
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
