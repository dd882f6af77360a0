"""Partitioned scans give the same findings however the rows are split."""

from __future__ import annotations

import pytest

import auditor
from auditor import engine
from auditor.engine import RunOptions
from tests.conftest import make_database
from tests.scenarios import build_pii, build_reference


@pytest.fixture
def sqlite_pair(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return next(make_database("sqlite", tmp_path / "a")), next(
        make_database("sqlite", tmp_path / "b")
    )


def _summary(result):
    return [
        (r.name, r.counts, sorted(map(repr, (f.to_dict() for f in r.findings))))
        for r in result.rules
    ]


@pytest.mark.parametrize("build", [build_reference, build_pii], ids=["reference", "pii"])
def test_findings_do_not_depend_on_partitioning(sqlite_pair, write_config, monkeypatch, build):
    config = auditor.load_config(write_config(build(*sqlite_pair)))
    whole = auditor.run(config, options=RunOptions(batch_size=100))
    many = auditor.run(config, options=RunOptions(batch_size=2, rows_per_partition=1))
    # Estimates too low: two partitions of many rows each must be split again when compared.
    monkeypatch.setattr(engine, "partition_count", lambda *a, **k: 2)
    resplit = auditor.run(config, options=RunOptions(batch_size=2, rows_per_partition=1))
    assert _summary(whole) == _summary(many) == _summary(resplit)
    assert any(r.counts for r in whole.rules)


def test_oversized_partitions_are_split(sqlite_pair, write_config, monkeypatch):
    config = auditor.load_config(write_config(build_reference(*sqlite_pair)))
    splits = []
    original = engine.Spill.split

    def counting_split(self, *args, **kwargs):
        splits.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(engine, "partition_count", lambda *a, **k: 2)
    monkeypatch.setattr(engine.Spill, "split", counting_split)
    auditor.run(
        config, rules=["reviews-products"], options=RunOptions(batch_size=2, rows_per_partition=1)
    )
    assert splits
