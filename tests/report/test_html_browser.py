"""The HTML report as a reviewer sees it: rendered by headless Chromium (Debian's `chromium`),
its script run, and the resulting DOM checked. Skips without Chromium, except with CI=true."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.cli.test_cli import auditor
from tests.conftest import IN_CI, make_database
from tests.scenarios import build_pii, build_reference

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("chromium is not installed (CI=true: .ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


class Dom(HTMLParser):
    """Elements by tag, each with its attributes and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[tuple[str, dict[str, str], list[str]]] = []

    def handle_starttag(self, tag, attrs):
        element = (tag, {k: v or "" for k, v in attrs}, [])
        self.elements.append(element)
        if tag not in ("input", "br", "meta", "link"):
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for element in self._open:
            element[2].append(data)

    def find(self, tag: str, cls: str | None = None) -> list[tuple[dict[str, str], str]]:
        return [
            (attrs, "".join(text).strip())
            for name, attrs, text in self.elements
            if name == tag and (cls is None or cls in attrs.get("class", "").split())
        ]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("html")
    for name in ("a", "b", "c", "d"):
        (tmp / name).mkdir()
    catalog, reviews = (next(make_database("sqlite", tmp / n)) for n in ("a", "b"))
    crm, orders = (next(make_database("sqlite", tmp / n)) for n in ("c", "d"))
    reference, pii = build_reference(catalog, reviews), build_pii(crm, orders)
    config = {**reference, "databases": {**reference["databases"], **pii["databases"]}}
    config["rules"] = reference["rules"] + pii["rules"]
    path = tmp / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    html = tmp / "report.html"
    assert auditor("run", str(path), "-q", "--html", str(html)).returncode == 1
    return html


def test_the_report_renders_grouped_readable_findings(report, tmp_path):
    dump = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=3000", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dump.returncode == 0 and "<html" in dump.stdout, dump.stderr[-2000:]
    dom = Dom()
    dom.feed(dump.stdout)

    groups = dom.find("details", "rule")
    names = [attrs["data-rule"] for attrs, _ in groups]
    assert "reviews-products" in names and "order-customer-pii" in names
    assert all("open" in attrs for attrs, _ in groups)  # collapsible, open to start with

    cells = [text for _, text in dom.find("td")]
    assert "id=8" in cells  # a key reads id=8, not {"id": 8}
    assert not any(c.startswith("{") for c in cells)
    assert dom.find("td", "missing") and "(missing)" in cells
    # a duplicate_key's count sits in the Count column, not under Suggested
    headers = [text for _, text in dom.find("th")]
    assert "Count" in headers
    # the script ran: it counted the rows it shows
    (shown,) = [text for attrs, text in dom.find("span") if attrs.get("id") == "shown"]
    assert shown.endswith(" shown") and int(shown.split()[0]) > 10
    assert [text for _, text in dom.find("span", "badge")][0] == "FAIL"


def test_a_screenshot_renders(report, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,1800", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
