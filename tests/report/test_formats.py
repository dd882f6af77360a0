"""Every report format written by one run, each parsed by a real parser."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from importlib import resources

import jsonschema

from tests.cli.test_cli import auditor
from tests.scenarios import EXPECTED_REFERENCE

SCHEMA = json.loads(resources.files("auditor").joinpath("schemas/report.schema.json").read_text())


class ResourceFinder(HTMLParser):
    """Collects every URL an element would fetch (src, href, url(...) in style)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_every_format_flag_writes_a_parseable_file(sqlite_config, tmp_path):
    paths = {ext: tmp_path / f"report.{ext}" for ext in ("json", "html", "csv", "xml", "md", "log")}
    result = auditor(
        "run", str(sqlite_config), "--max-findings", "0", "-q",
        "--json", str(paths["json"]), "--html", str(paths["html"]), "--csv", str(paths["csv"]),
        "--junit", str(paths["xml"]), "--markdown", str(paths["md"]), "--log-file", str(paths["log"]),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert all(p.exists() and p.stat().st_mode & 0o777 == 0o600 for p in paths.values())

    report = json.loads(paths["json"].read_text())
    jsonschema.validate(report, SCHEMA)
    total = report["totals"]["findings"]
    assert total == len(EXPECTED_REFERENCE) + 1  # + the duplicate SKU

    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == total
    assert set(rows[0]) >= {"rule", "kind", "severity", "key", "ref", "field", "suggested", "note"}

    suite = ET.parse(paths["xml"]).getroot()
    assert suite.tag == "testsuite" and int(suite.get("tests")) == len(report["rules"])
    failed = [
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None
    ]
    assert "reviews-products" in failed and "reviews-not-null" not in failed
    # a warning rule passes under fail_on: error, and lists its findings
    warned = next(c for c in suite.iter("testcase") if c.get("name") == "reviews-not-null")
    assert "warning: 1 findings (null_reference: 1)" in warned.find("system-out").text

    html = paths["html"].read_text()
    finder = ResourceFinder()
    finder.feed(html)
    assert finder.urls == []
    assert "http://" not in html and "https://" not in html
    assert "reviews-products" in html and "<table" in html

    markdown = paths["md"].read_text()
    assert markdown.startswith("## auditor: FAIL") and "| reviews-products |" in markdown

    events = [json.loads(line) for line in paths["log"].read_text().splitlines()]
    assert {e["event"] for e in events} >= {"run_start", "rule_start", "rule_done", "run_done"}
    assert all({"time", "level"} <= set(e) for e in events)


def test_reports_dir_gets_dated_files(sqlite_config):
    text = sqlite_config.read_text() + "reports:\n  dir: nightly\n  formats: [json, markdown]\n"
    sqlite_config.write_text(text)
    assert auditor("run", str(sqlite_config), "-q").returncode == 1
    files = sorted(p.name for p in (sqlite_config.parent / "nightly").iterdir())
    assert len(files) == 2 and files[0].startswith("audit-") and files[0].endswith("Z.json")


def test_schema_rejects_a_broken_report(sqlite_config, tmp_path):
    out = tmp_path / "r.json"
    auditor("run", str(sqlite_config), "-q", "--json", str(out))
    report = json.loads(out.read_text())
    report["rules"][0]["findings"][0]["kind"] = "not-a-kind"
    try:
        jsonschema.validate(report, SCHEMA)
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema accepted an unknown finding kind")
