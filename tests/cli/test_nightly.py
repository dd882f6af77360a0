"""Five nights of the README's cron line: `auditor run CONFIG -q --baseline last --fail-on-new`.

Each night asserts the exit code, what reaches stderr (cron mails any output) and the run's own
diff against the last report: a clean night, a night with a new finding, a night with a
database down, the recovery, and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from tests.cli.test_cli import auditor


def _databases(tmp_path: Path) -> tuple[Path, Path]:
    catalog, reviews = tmp_path / "catalog.db", tmp_path / "reviews.db"
    with sa.create_engine(f"sqlite:///{catalog}").begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER)"))
        conn.execute(sa.text("INSERT INTO products VALUES (1, 0), (2, 0), (3, 0)"))
    with sa.create_engine(f"sqlite:///{reviews}").begin() as conn:
        conn.execute(sa.text("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER)"))
        conn.execute(sa.text("INSERT INTO reviews VALUES (10, 1), (11, 2), (12, 3)"))
        conn.execute(sa.text("CREATE TABLE likes (id INTEGER PRIMARY KEY, review_id INTEGER)"))
        conn.execute(sa.text("INSERT INTO likes VALUES (20, 10), (21, 11)"))
    return catalog, reviews


def _config(tmp_path: Path, catalog: Path, reviews: Path) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        f"""version: 1
databases:
  catalog: {{url: "sqlite:///{catalog}"}}
  reviews: {{url: "sqlite:///{reviews}"}}
reports: {{dir: reports, formats: [json, html]}}
rules:
  - name: reviews-products
    type: reference
    from: {{db: reviews, table: reviews, columns: [product_id]}}
    to: {{db: catalog, table: products, columns: [id], soft_delete: "deleted = 1"}}
  - name: likes-reviews
    type: reference
    from: {{db: reviews, table: likes, columns: [review_id]}}
    to: {{db: reviews, table: reviews, columns: [id]}}
"""
    )
    return path


def _night(config: Path) -> tuple[int, str, dict]:
    before = set((config.parent / "reports").glob("*.json"))
    result = auditor("run", str(config), "-q", "--baseline", "last", "--fail-on-new")
    written = set((config.parent / "reports").glob("*.json")) - before
    assert result.stdout == "", result.stdout
    assert len(written) == 1, (written, result.stderr)
    report = json.loads(next(iter(written)).read_text())
    assert report["exit_code"] == result.returncode
    return result.returncode, result.stderr, report


def _keys(findings: list[dict]) -> list[tuple]:
    return sorted((f["rule"], f["kind"], json.dumps(f["key"])) for f in findings)


def test_five_nights_of_the_cron_line(tmp_path):
    catalog, reviews = _databases(tmp_path)
    config = _config(tmp_path, catalog, reviews)
    catalog_url = f"sqlite:///{catalog}"

    # Night 1: clean, and no earlier report: the empty baseline is said once.
    code, stderr, report = _night(config)
    assert code == 0 and report["status"] == "pass"
    assert stderr.count("empty baseline") == 1 and stderr.count("\n") == 1, stderr
    assert report["baseline"] is None
    assert report["diff"] == {"new": [], "resolved": [], "persisting": 0, "unknown_rules": []}

    # Night 2: product 3 is deleted and its delete event lost: one new orphan pages.
    with sa.create_engine(catalog_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM products WHERE id = 3"))
    code, stderr, report = _night(config)
    assert code == 1 and report["status"] == "fail"
    assert _keys(report["diff"]["new"]) == [("reviews-products", "orphan", '{"id": 12}')]
    assert "1 new findings" in stderr and "reviews-products 1" in stderr
    assert stderr.count("\n") == 1, stderr
    night2 = report

    # Night 3: the catalog is down. Its rule errors (exit 3, a report is still written); its
    # findings are unknown, neither resolved nor new; the other rule is compared as usual.
    catalog.rename(tmp_path / "away.db")
    code, stderr, report = _night(config)
    assert code == 3 and report["status"] == "error"
    rules = {r["name"]: r for r in report["rules"]}
    assert rules["reviews-products"]["status"] == "error"
    assert rules["likes-reviews"]["status"] == "pass"
    assert report["diff"]["new"] == [] and report["diff"]["resolved"] == []
    assert report["diff"]["unknown_rules"] == ["reviews-products"]
    assert stderr.count("does not exist") == 1 and "reviews-products" in stderr

    # Night 4: the catalog is back. The orphan is no news (the rule is compared with night 2,
    # the last report that knew it): nothing to mail.
    (tmp_path / "away.db").rename(catalog)
    code, stderr, report = _night(config)
    assert code == 0 and report["status"] == "fail", stderr
    assert stderr == ""
    assert report["diff"] == {"new": [], "resolved": [], "persisting": 1, "unknown_rules": []}
    assert report["baseline"] != night2["baseline"]

    # Night 5: the review is re-pointed: the orphan is resolved.
    with sa.create_engine(f"sqlite:///{reviews}").begin() as conn:
        conn.execute(sa.text("UPDATE reviews SET product_id = 1 WHERE id = 12"))
    code, stderr, report = _night(config)
    assert code == 0 and report["status"] == "pass" and stderr == ""
    assert _keys(report["diff"]["resolved"]) == [("reviews-products", "orphan", '{"id": 12}')]
    assert report["diff"]["new"] == []


def test_a_report_of_one_rule_resolves_nothing_of_the_others(tmp_path):
    catalog, reviews = _databases(tmp_path)
    config = _config(tmp_path, catalog, reviews)
    with sa.create_engine(f"sqlite:///{reviews}").begin() as conn:
        conn.execute(sa.text("INSERT INTO likes VALUES (22, 99)"))
    full, one = tmp_path / "full.json", tmp_path / "one.json"
    assert auditor("run", str(config), "-q", "--json", str(full)).returncode == 1
    only = auditor("run", str(config), "-q", "--rule", "reviews-products", "--json", str(one))
    assert only.returncode == 0
    diff = auditor("diff", str(full), str(one), "--json", "-")
    data = json.loads(diff.stdout)
    assert data["resolved"] == [] and data["unknown_rules"] == ["likes-reviews"]
    assert diff.returncode == 0 and "likes-reviews" in diff.stderr
    quiet = auditor("diff", str(one), str(full), "-q")
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_the_first_night_has_no_report_to_compare_with(tmp_path):
    """The README's old cron line failed here (`ls ... | sed -n 2p` found nothing)."""
    catalog, reviews = _databases(tmp_path)
    config = _config(tmp_path, catalog, reviews)
    with sa.create_engine(f"sqlite:///{reviews}").begin() as conn:
        conn.execute(sa.text("INSERT INTO likes VALUES (22, 99)"))
    code, stderr, report = _night(config)
    assert code == 1 and "empty baseline" in stderr and "1 new findings" in stderr
    assert _keys(report["diff"]["new"]) == [("likes-reviews", "orphan", '{"id": 22}')]


def test_baseline_flags_need_what_they_read(tmp_path):
    catalog, reviews = _databases(tmp_path)
    config = _config(tmp_path, catalog, reviews)
    alone = auditor("run", str(config), "--fail-on-new")
    assert alone.returncode == 2 and "--baseline" in alone.stderr
    missing = auditor("run", str(config), "--baseline", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "report not found" in missing.stderr
    folder = auditor("run", str(config), "--baseline", str(tmp_path))
    assert folder.returncode == 2 and "is a directory" in folder.stderr
    assert "Traceback" not in folder.stderr


def test_two_runs_in_one_second_write_two_reports(tmp_path):
    import datetime as dt

    from auditor.report.files import dated_paths

    when = dt.datetime(2026, 12, 3, 3, 15, tzinfo=dt.UTC)
    first = dated_paths(tmp_path, "nightly.yaml", ["json", "html"], when)
    second = dated_paths(tmp_path, "nightly.yaml", ["json", "html"], when)
    assert first["json"].endswith("nightly-20261203T031500Z.json")
    assert second["json"].endswith("nightly-20261203T031500Z-2.json")
    assert second["html"].endswith("nightly-20261203T031500Z-2.html")
    assert all(Path(p).stat().st_mode & 0o777 == 0o600 for p in [*first.values(), *second.values()])


def test_report_flags_add_to_the_configs_formats(tmp_path):
    catalog, reviews = _databases(tmp_path)
    config = _config(tmp_path, catalog, reviews)
    extra = tmp_path / "extra.json"
    assert auditor("run", str(config), "-q", "--json", str(extra)).returncode == 0
    dated = sorted(p.suffix for p in (tmp_path / "reports").iterdir())
    assert dated == [".html", ".json"] and extra.exists()
