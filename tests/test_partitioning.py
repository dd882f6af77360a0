"""Findings do not depend on how the rows are split: partitions of any size, by remainder or by
key range, or the referenced side held in memory while the referencing side streams."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

import auditor
from auditor import pairing
from auditor.checks.base import partition_of
from auditor.db import dialects
from auditor.engine import RunOptions
from auditor.plan import RulePlan
from auditor.scan import grouped
from tests.conftest import make_database, plans
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
    held = auditor.run(config, options=RunOptions(batch_size=2))
    whole = auditor.run(config, options=RunOptions(batch_size=100, hold_rows=0))
    many = auditor.run(config, options=RunOptions(batch_size=2, rows_per_partition=1, hold_rows=0))
    # Estimates too low: two partitions of many rows each must be split again when compared.
    monkeypatch.setattr(pairing, "partition_count", lambda *a, **k: 2)
    resplit = auditor.run(
        config, options=RunOptions(batch_size=2, rows_per_partition=1, hold_rows=0)
    )
    assert _summary(held) == _summary(whole) == _summary(many) == _summary(resplit)
    assert any(r.counts for r in whole.rules)


def _keyed_alike(tmp_path, write_config) -> auditor.Config:
    """A 1:1 copy keyed by the same integer primary key as its source, in key order."""
    import sqlite3

    path = tmp_path / "alike.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT);"
            "CREATE TABLE copies (id INTEGER PRIMARY KEY, email TEXT);"
        )
        db.executemany(
            "INSERT INTO people VALUES (?, ?)", [(i, f"p{i}@example.com") for i in range(1, 501)]
        )
        copies = [(i, f"p{i}@example.com") for i in range(1, 501) if i % 50]  # some missing
        copies += [(i, f"P{i}@Example.com ") for i in range(50, 501, 50)]  # equal once normalised
        copies += [(i, f"changed{i}@example.com") for i in (7, 123, 499)]  # mismatches
        copies += [(i, "orphan@example.com") for i in (0, 501, 502)]  # no source row
        db.executemany("INSERT OR REPLACE INTO copies VALUES (?, ?)", copies)
    rule = {
        "name": "copies",
        "type": "pii",
        "source": {"db": "d", "table": "people", "key": ["id"]},
        "copy": {"db": "d", "table": "copies", "key": ["id"]},
        "fields": [{"source": "email", "copy": "email", "normalize": ["email"]}],
    }
    databases = {"d": {"url": f"sqlite:///{path}"}}
    return auditor.load_config(
        write_config({"version": 1, "databases": databases, "rules": [rule]})
    )


def test_a_copy_keyed_like_its_source_is_split_by_key_ranges_with_the_same_findings(
    tmp_path, write_config, monkeypatch
):
    config = _keyed_alike(tmp_path, write_config)
    ranges = []
    original = pairing.Spill.__init__

    def spy(self, *args, **kwargs):
        ranges.append(kwargs.get("key_range"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(pairing.Spill, "__init__", spy)
    held = auditor.run(config)
    ranges.clear()
    options = RunOptions(batch_size=7, rows_per_partition=20, hold_rows=0)
    by_range = auditor.run(config, options=options)
    assert ranges == [(0, 502), (0, 502)]  # both sides' keys: 503 values for 500 rows
    monkeypatch.setattr(RulePlan, "partition_range", property(lambda plan: None))
    by_remainder = auditor.run(config, options=options)
    assert _summary(held) == _summary(by_range) == _summary(by_remainder)
    assert by_range.rules[0].counts == {"mismatch": 3, "missing_source": 3}


def test_integer_keys_split_by_ranges_keep_key_order_and_clip_outsiders():
    keys = pa.array([None, -(2**63), -5, 0, 1, 2, 50, 99, 100, 101, 2**63 - 1], pa.int64())
    parts = partition_of([keys], 7, key_range=(0, 100))
    assert parts.tolist() == [0, 0, 0, 0, 0, 0, 3, 6, 6, 6, 6]  # null as 0, outsiders clipped
    sequence = pa.array(range(1, 10_001), pa.int64())
    parts = partition_of([sequence], 13, key_range=(1, 10_000))
    sizes = np.bincount(parts, minlength=13)
    assert np.all(np.diff(parts) >= 0) and sizes.max() - sizes.min() <= 13  # in order, even


def test_a_batch_already_in_partition_order_is_not_reordered():
    batch = pa.RecordBatch.from_pydict({"c0": [1, 2, 3, 4], "v0": ["a", "b", "c", "d"]})
    assert grouped(batch, np.array([0, 0, 2, 5])) is batch
    reordered = grouped(batch, np.array([1, 0, 1, 0]))
    assert reordered.column("v0").to_pylist() == ["b", "d", "a", "c"]  # stable


def test_key_ranges_come_from_dense_integer_primary_keys_on_both_sides(tmp_path, write_config):
    import sqlite3

    path = tmp_path / "k.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE dense (id INTEGER PRIMARY KEY, v TEXT);"
            "CREATE TABLE sparse (id INTEGER PRIMARY KEY, v TEXT);"
            "CREATE TABLE named (code TEXT PRIMARY KEY, v TEXT);"
            "CREATE TABLE copies (id INTEGER PRIMARY KEY, ref INTEGER, code TEXT, v TEXT);"
        )
        db.executemany("INSERT INTO dense VALUES (?, 'x')", [(i,) for i in range(10, 110)])
        db.executemany("INSERT INTO sparse VALUES (?, 'x')", [(i * 1000,) for i in range(100)])
        db.executemany("INSERT INTO named VALUES (?, 'x')", [(f"k{i}",) for i in range(100)])
        db.executemany("INSERT INTO copies VALUES (?, 1, 'k1', 'x')", [(i,) for i in range(5, 95)])

    def rule(name: str, source: str, key: str, copy_key: str) -> dict:
        return {
            "name": name,
            "type": "pii",
            "source": {"db": "d", "table": source, "key": [key]},
            "copy": {"db": "d", "table": "copies", "key": [copy_key]},
            "fields": [{"source": "v", "copy": "v"}],
        }

    rules = [
        rule("alike", "dense", "id", "id"),
        rule("by-ref", "dense", "id", "ref"),
        rule("sparse", "sparse", "id", "id"),
        rule("named", "named", "code", "code"),
    ]
    databases = {"d": {"url": f"sqlite:///{path}"}}
    config = auditor.load_config(
        write_config({"version": 1, "databases": databases, "rules": rules})
    )
    planned = {p.rule.name: p for p in plans(config)}
    assert planned["alike"].right.key_range == (10, 109) and planned["alike"].left.key_range == (
        5,
        94,
    )
    assert planned["alike"].partition_range == (5, 109)
    # Only the source is keyed by its primary key: left to remainders.
    assert planned["by-ref"].left.key_range is None and planned["by-ref"].partition_range is None
    assert planned["sparse"].right.key_range == (0, 99_000)
    assert planned["sparse"].partition_range is None  # 99,000 apart for 100 rows: by remainder
    assert planned["named"].right.key_range is None and planned["named"].partition_range is None


def test_a_held_side_bigger_than_its_estimate_falls_back_to_partitions(
    sqlite_pair, write_config, monkeypatch
):
    config = auditor.load_config(write_config(build_reference(*sqlite_pair)))
    expected = _summary(auditor.run(config, options=RunOptions(hold_rows=0)))
    outcomes = []
    original = pairing.held_right_side

    def spy(*args):
        side = original(*args)
        outcomes.append(side is not None)
        return side

    monkeypatch.setattr(pairing, "held_right_side", spy)
    held = auditor.run(config, options=RunOptions(batch_size=1, hold_rows=10_000))
    assert outcomes and all(outcomes)
    outcomes.clear()
    # Every table estimated at one row, sides capped at three: found too big while read.
    monkeypatch.setattr(dialects.SQLite, "estimate_rows", lambda self, conn, table: 1)
    monkeypatch.setattr(pairing, "HOLD_MAX_ROWS", 1)
    too_big = auditor.run(config, options=RunOptions(batch_size=1))
    assert False in outcomes
    assert _summary(held) == _summary(too_big) == expected


def test_oversized_partitions_are_split(sqlite_pair, write_config, monkeypatch):
    config = auditor.load_config(write_config(build_reference(*sqlite_pair)))
    splits = []
    original = pairing.Spill.split

    def counting_split(self, *args, **kwargs):
        splits.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pairing, "partition_count", lambda *a, **k: 2)
    monkeypatch.setattr(pairing.Spill, "split", counting_split)
    options = RunOptions(batch_size=2, rows_per_partition=1, hold_rows=0)
    auditor.run(config, rules=["reviews-products"], options=options)
    assert splits


def test_many_duplicate_keys_are_counted_exactly_and_listed_up_to_the_cap(tmp_path, write_config):
    import sqlite3

    path = tmp_path / "dups.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE cities (id INTEGER PRIMARY KEY, name TEXT); CREATE TABLE people (id INTEGER PRIMARY KEY, city TEXT);"
        )
        db.executemany(
            "INSERT INTO cities (name) VALUES (?)", [(f"c{i % 500}",) for i in range(2000)]
        )
        db.executemany(
            "INSERT INTO people (city) VALUES (?)", [(f"c{i % 600}",) for i in range(1200)]
        )
    rule = {
        "name": "people-cities",
        "type": "reference",
        "from": {"db": "d", "table": "people", "columns": ["city"]},
        "to": {"db": "d", "table": "cities", "columns": ["name"]},
    }
    config = auditor.load_config(
        write_config(
            {"version": 1, "databases": {"d": {"url": f"sqlite:///{path}"}}, "rules": [rule]}
        )
    )
    for cap, options in ((0, RunOptions(batch_size=64, rows_per_partition=50, max_findings=0)),
                         (3, RunOptions(batch_size=64, rows_per_partition=50, max_findings=3)),
                         (0, RunOptions(batch_size=64, max_findings=0, hold_rows=0))):  # fmt: skip
        result = auditor.run(config, options=options).rules[0]
        assert result.counts == {"duplicate_key": 500, "orphan": 200}
        assert len(result.findings) == (700 if cap == 0 else cap)
        assert result.findings_truncated == (cap != 0)
        assert all(f.count == 4 for f in result.findings if f.kind == "duplicate_key")


@pytest.mark.parametrize("kind", ["reference", "pii"])
def test_confirmed_findings_past_the_cap_are_counted_exactly(tmp_path, write_config, kind):
    """Candidates beyond max_findings are confirmed and counted by kind, not built one by one;
    the listed ones are the same whatever the cap."""
    import sqlite3

    path = tmp_path / "many.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT);"
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, person_id INTEGER, email TEXT);"
        )
        db.executemany("INSERT INTO people VALUES (?, ?)", [(i, f"p{i}@x.com") for i in range(300)])
        orders = [
            (i, i % 400, f"p{i % 400}@x.com" if i % 3 else f"other{i}@x.com") for i in range(900)
        ]
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)", orders)
    if kind == "reference":
        rule = {"name": "r", "type": "reference",
                "from": {"db": "d", "table": "orders", "columns": ["person_id"]},
                "to": {"db": "d", "table": "people", "columns": ["id"]}}  # fmt: skip
        expected = {"orphan": sum(1 for _, p, _ in orders if p >= 300)}
    else:
        rule = {"name": "r", "type": "pii", "source": {"db": "d", "table": "people", "key": ["id"]},
                "copy": {"db": "d", "table": "orders", "key": ["person_id"]},
                "fields": [{"source": "email", "copy": "email"}]}  # fmt: skip
        expected = {
            "missing_source": sum(1 for _, p, _ in orders if p >= 300),
            "mismatch": sum(1 for i, p, _ in orders if p < 300 and i % 3 == 0),
        }
    data = {"version": 1, "databases": {"d": {"url": f"sqlite:///{path}"}}, "rules": [rule]}
    config = auditor.load_config(write_config(data))
    everything = auditor.run(config, options=RunOptions(batch_size=64, max_findings=0)).rules[0]
    assert everything.counts == expected
    for cap in (1, 7, 250):
        capped = auditor.run(config, options=RunOptions(batch_size=64, max_findings=cap)).rules[0]
        assert capped.counts == expected
        assert len(capped.findings) == min(cap, sum(expected.values()))
        assert {f.identity for f in capped.findings} <= {f.identity for f in everything.findings}


def test_wide_rows_get_fewer_rows_per_batch_and_partition_and_are_not_held(tmp_path, write_config):
    """Budgets are in bytes, from a sample of the columns a side reads: 2,000 rows of 20 kB
    texts are read in small batches, partitioned rather than held (40 MB), and compared
    exactly; a rule that leaves the texts alone keeps the full batch size."""
    import sqlite3

    path = tmp_path / "wide.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE src (id INTEGER PRIMARY KEY, bio TEXT);"
            "CREATE TABLE cp (id INTEGER PRIMARY KEY, src_id INTEGER, bio TEXT);"
        )
        db.executemany("INSERT INTO src VALUES (?, ?)", [(i, f"{i}" * 20_000) for i in range(2000)])
        db.executemany(
            "INSERT INTO cp VALUES (?, ?, ?)",
            [(i, i, f"{i}" * 20_000 + ("!" if i % 500 == 0 else "")) for i in range(2000)],
        )
    pii = {"name": "bios", "type": "pii", "source": {"db": "d", "table": "src", "key": ["id"]},
           "copy": {"db": "d", "table": "cp", "key": ["src_id"]},
           "fields": [{"source": "bio", "copy": "bio"}]}  # fmt: skip
    reference = {"name": "ids", "type": "reference",
                 "from": {"db": "d", "table": "cp", "columns": ["src_id"]},
                 "to": {"db": "d", "table": "src", "columns": ["id"]}}  # fmt: skip
    data = {
        "version": 1,
        "databases": {"d": {"url": f"sqlite:///{path}"}},
        "rules": [pii, reference],
    }
    config = auditor.load_config(write_config(data))
    wide, narrow = plans(config)
    options = RunOptions()
    assert wide.right.row_bytes > 20_000 and narrow.left.row_bytes < 100
    assert pairing.batch_rows(wide.right, options) < 500 < options.batch_size
    assert pairing.batch_rows(narrow.left, options) == options.batch_size
    assert pairing.rows_per_partition(options, wide) == 1_000
    assert pairing.rows_per_partition(options, narrow) == 2 * options.batch_size
    assert pairing.held_right_side(wide, options, lambda *_: None, None, {}) is None
    result = auditor.run(config)
    assert [r.counts for r in result.rules] == [{"mismatch": 4}, {}]


def test_spilled_partitions_hold_their_own_keys(tmp_path):
    """Each scanned batch is sorted by partition and its slices appended to the partitions'
    files; a partition reads back exactly the rows whose keys go to it, in the order they were
    added."""
    import pyarrow as pa

    from auditor import scratch
    from auditor.checks.base import partition_of
    from auditor.scan import Spill
    from auditor.scratch import Scratch

    schema = pa.schema([("c0", pa.int64()), ("v0", pa.string())])
    space = Scratch(str(tmp_path))
    descriptors = len(os.listdir("/proc/self/fd"))
    spill = Spill(schema, 8, space)
    for start in range(0, 3000, 1000):
        keys = list(range(start, start + 1000))
        spill.add(pa.record_batch([pa.array(keys), pa.array([f"v{k}" for k in keys])], schema))
    spill.finish()
    named = [p.name for p in space.directory.iterdir()]
    assert named == [scratch.MARKER]  # the files have no names (scratch.py), only the marker
    assert len(os.listdir("/proc/self/fd")) == descriptors + 8
    seen = []
    for part in range(8):
        table = spill.read(part)
        keys = table["c0"].to_pylist()
        assert keys == sorted(keys) and len(keys) == spill.counts[part]
        assert set(partition_of([table["c0"].combine_chunks()], 8).tolist()) <= {part}
        assert table["v0"].to_pylist() == [f"v{k}" for k in keys]
        seen += keys
    assert sorted(seen) == list(range(3000))
    spill.drop(3)
    assert spill.read(3).num_rows == 0
    spill.reset()
    assert spill.rows == 0 and len(os.listdir("/proc/self/fd")) == descriptors
    space.close()
    assert list(tmp_path.iterdir()) == []


def test_an_integer_keyed_side_is_held_longer_when_the_other_is_much_bigger():
    """Integer keys are indexed once, so a bigger referenced side can be held while a side at
    least INDEXED_HOLD_RATIO times its size streams past; other keys keep HOLD_MAX_ROWS."""

    def plan(key_types, other):
        info = SimpleNamespace(estimated_rows=other)
        return SimpleNamespace(key_types=key_types, left=SimpleNamespace(info=info))

    usual = pairing.HOLD_MAX_ROWS
    held = 2 * usual
    ratio = pairing.INDEXED_HOLD_RATIO
    options = RunOptions()
    assert pairing.hold_limit(plan(("int",), ratio * held), options, held) >= held > usual
    assert pairing.hold_limit(plan(("int",), ratio * held - 1), options, held) == usual
    assert pairing.hold_limit(plan(("string",), 100 * held), options, held) == usual
    assert pairing.hold_limit(plan(("int", "int"), 100 * held), options, held) == usual
    assert pairing.hold_limit(plan(("int",), None), options, held) == usual
    assert pairing.hold_limit(plan(("int",), 100 * held), RunOptions(hold_rows=0), held) == 0
