"""Findings past RUN_FINDINGS go to sorted runs on disk (auditor.findings); the reports and the
result read the same findings, in the same order, as when they all fit in memory."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import replace

import pytest

import auditor
from auditor import findings as findings_module
from auditor import suggest
from auditor.engine import RunOptions
from auditor.findings import FindingLog, SpilledFindings, order
from auditor.report import RENDERERS
from auditor.report import diff as diff_module
from auditor.report import json as json_report
from auditor.result import AuditResult, Finding, RuleResult
from tests.conftest import make_database
from tests.scenarios import build_pii, build_reference


def _finding(i: int, kind: str = "mismatch") -> Finding:
    key = {"id": i} if i % 3 else {"id": f"k{i:03d}"}
    return Finding("r", kind, "error", key, ref={"c": i}, field="email" if i % 2 else "phone",
                   source_value="é\n\"x", copy_value=None, count=i if i % 5 == 0 else None,
                   note=None if i % 7 else "n")  # fmt: skip


def test_a_spilled_log_reads_back_in_report_order_with_suggestions(monkeypatch):
    monkeypatch.setattr(findings_module, "RUN_FINDINGS", 7)
    monkeypatch.setattr(findings_module, "READ_ROWS", 3)
    log = FindingLog()
    added = []
    for i in reversed(range(100)):
        finding = _finding(i, "orphan" if i % 4 == 0 else "mismatch")
        labels = (i, dt.date(2026, 1, 1 + i % 28), b"\x00raw") if i % 2 else None
        log.add(finding, labels)
        added.append((finding, labels))
    descriptors = len(os.listdir("/proc/self/fd"))
    assert sorted(log.labelled()) == sorted(labels for _, labels in added if labels)
    suggested = {(1, dt.date(2026, 1, 2), b"\x00raw"): {"id": 42}}
    listed = log.findings(suggested)
    assert isinstance(listed, SpilledFindings) and len(listed) == 100
    expected = sorted((f for f, _ in added), key=order)
    got = list(listed)
    assert [f.to_dict() for f in got if f.key != {"id": 1}] == [
        f.to_dict() for f in expected if f.key != {"id": 1}
    ]
    (one,) = [f for f in got if f.key == {"id": 1}]
    assert one.suggested_key == {"id": 42}
    assert listed[:5] == tuple(got[:5]) and listed[-1] == got[-1] and listed == got
    assert list(listed) == got  # read again: every iteration merges the runs afresh
    del log, listed, got
    assert len(os.listdir("/proc/self/fd")) <= descriptors  # the runs' files are freed


def test_few_findings_stay_a_tuple():
    log = FindingLog()
    log.add(_finding(2))
    log.add(_finding(1))
    assert log.findings() == (_finding(1), _finding(2))


def _result(listed) -> AuditResult:
    rule = RuleResult("r", "pii", "error", "fail", counts={"mismatch": len(listed)},
                      findings=listed)  # fmt: skip
    empty = RuleResult("e", "reference", "error", "pass")
    return AuditResult("id", "1", "2026-12-03T00:00:00+00:00", "2026-12-03T00:00:01+00:00",
                       "a.yaml", "0" * 64, "fail", 1, (empty, rule, empty))  # fmt: skip


def test_the_streamed_json_is_the_document_with_one_finding_a_line(monkeypatch):
    monkeypatch.setattr(findings_module, "RUN_FINDINGS", 4)
    log = FindingLog()
    for i in range(30):
        log.add(_finding(i))
    result = _result(log.findings())
    streamed = json_report.render(result)
    assert json.loads(streamed) == json.loads(json.dumps(result.to_dict()))
    assert json.loads(streamed)["rules"][1]["findings"][0]["key"] == {"id": 1}
    one_a_line = [line for line in streamed.splitlines() if line.startswith(" " * 8 + '{"rule"')]
    assert len(one_a_line) == 30
    assert json.loads(json_report.render(_result(()))) == json.loads(
        json.dumps(_result(()).to_dict())
    )
    for render in RENDERERS.values():
        assert render(result)


@pytest.mark.parametrize("scenario", ["reference", "pii"])
def test_a_run_whose_findings_spill_reports_what_one_in_memory_does(
    scenario, tmp_path, write_config, monkeypatch
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    left = next(make_database("sqlite", tmp_path / "a"))
    right = next(make_database("sqlite", tmp_path / "b"))
    data = (build_reference if scenario == "reference" else build_pii)(left, right)
    config = auditor.load_config(write_config(data))
    options = RunOptions(max_findings=0)
    in_memory = auditor.run(config, options=options)
    monkeypatch.setattr(findings_module, "RUN_FINDINGS", 2)
    monkeypatch.setattr(suggest, "SUGGEST_CHUNK", 1)  # one look-up pass per mismatch
    spilled = auditor.run(config, options=options)
    assert any(isinstance(r.findings, SpilledFindings) for r in spilled.rules)
    assert any(f.suggested_key for r in spilled.rules for f in r.findings) == (scenario == "pii")
    for before, after in zip(in_memory.rules, spilled.rules, strict=True):
        assert [f.to_dict() for f in after.findings] == [f.to_dict() for f in before.findings]
    reports = [json.loads(RENDERERS["json"](result)) for result in (in_memory, spilled)]
    assert [[r["findings"] for r in report["rules"]] for report in reports] == [
        [r["findings"] for r in reports[0]["rules"]]
    ] * 2
    assert RENDERERS["csv"](spilled) == RENDERERS["csv"](in_memory)


def test_diff_reads_reports_as_streams_and_matches_by_identity(tmp_path, monkeypatch):
    """New, resolved and persisting from hashed identities, the lists read again from the
    report files (parsed with ijson, never loaded whole), in batches smaller than a rule."""
    monkeypatch.setattr(diff_module, "HASH_BATCH", 3)
    old_findings = [_finding(i) for i in range(0, 20)]
    new_findings = [_finding(i) for i in range(10, 30)]
    old_findings[0] = replace(old_findings[0], copy_value="changed")  # value differs: same id
    paths = []
    for name, listed in (("old", old_findings), ("new", new_findings)):
        path = tmp_path / f"{name}.json"
        path.write_text(json_report.render(_result(tuple(listed))))
        paths.append(str(path))
    compared = auditor.api.diff(*paths)
    assert [f["key"] for f in compared.new] == [f.key for f in new_findings[10:]]
    assert [f["key"] for f in compared.resolved] == [f.key for f in old_findings[:10]]
    assert compared.persisting == 10 and compared.rules["r"] == {
        "new": 10, "resolved": 10, "persisting": 10
    }  # fmt: skip
    assert compared.failing_new("error") == {"r": 10} and compared.exit_code("never") == 0
    assert len(compared.new[:4]) == 4 and compared.new[0]["key"] == new_findings[10].key
    out = io.StringIO()
    json_report.write_diff(compared, out)
    written = json.loads(out.getvalue())
    assert written["new"] == list(compared.new) and written["persisting"] == 10
    assert diff_module.load_report(paths[0]).data["rules"][1]["findings"] == []
