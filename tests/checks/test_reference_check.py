"""SortedKeys, the held side's sorted key index, answers exactly as Arrow's index_in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from auditor.checks.reference import SortedKeys, lookup


def _random_keys(rng: np.random.Generator, size: int, span: int) -> pa.Array:
    values = rng.integers(-span, span, size=size)
    return pa.array(values, mask=rng.random(size) < 0.1, type=pa.int64())


@pytest.mark.parametrize("seed", range(20))
def test_sorted_keys_match_index_in(seed):
    rng = np.random.default_rng(seed)
    held = _random_keys(rng, int(rng.integers(0, 300)), 100)  # duplicates, nulls, negatives
    probe = _random_keys(rng, int(rng.integers(0, 300)), 150)  # absent values too
    expected = pc.index_in(probe, value_set=held, skip_nulls=True)
    assert SortedKeys(held).index_in(probe).equals(expected.cast(pa.int64()))


def test_lookup_with_sorted_keys_equals_hash_lookup():
    right = pa.table({"c0": pa.array([5, 3, None, 9], pa.int64()), "n": [50, 30, 0, 90]})
    left = pa.table({"c0": pa.array([9, 4, None, 3, 5], pa.int64()), "r0": [1, 2, 3, 4, 5]})
    hashed = lookup(left, right.filter(pc.is_valid(right["c0"])), ["c0"])
    present = right.filter(pc.is_valid(right["c0"]))
    assert lookup(left, present, ["c0"], SortedKeys(present["c0"])).equals(hashed)
    assert hashed["n"].to_pylist() == [90, None, None, 30, 50]


def test_empty_held_side_finds_nothing():
    probe = pa.array([1, None], pa.int64())
    assert SortedKeys(pa.array([], pa.int64())).index_in(probe).null_count == 2
