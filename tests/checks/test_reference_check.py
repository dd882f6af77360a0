"""KeyIndex, the held side's key index (a dense table or sorted keys), answers exactly as
Arrow's index_in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from auditor.checks.reference import KeyIndex, lookup


def _random_keys(rng: np.random.Generator, size: int, span: int) -> pa.Array:
    values = rng.integers(-span, span, size=size)
    return pa.array(values, mask=rng.random(size) < 0.1, type=pa.int64())


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("span", "dense"), [(100, True), (10**15, False)])
def test_key_index_matches_index_in(seed, span, dense):
    rng = np.random.default_rng(seed)
    held = _random_keys(rng, int(rng.integers(1, 300)), span)  # duplicates, nulls, negatives
    probe = pa.concat_arrays([held, _random_keys(rng, int(rng.integers(0, 300)), span * 2)])
    index = KeyIndex(held)
    assert (index.table is not None) == dense
    expected = pc.index_in(probe, value_set=held, skip_nulls=True)
    assert index.index_in(probe).equals(expected)


@pytest.mark.parametrize("seed", range(10))
def test_one_partitions_keys_get_a_direct_table_with_their_stride(seed):
    """Integer keys are partitioned modulo a prime P, so one partition's keys lie P apart:
    indexed by (key - smallest) / P, probes between them (other remainders) find nothing."""
    from auditor.checks.base import partition_of

    rng = np.random.default_rng(seed)
    ids = pa.array(rng.permutation(np.arange(-5_000, 200_000)), pa.int64())
    part = ids.filter(pa.array(partition_of([ids], 53) == 7))
    held = part.slice(0, len(part) - 50)  # some of the partition's keys are absent
    probe = pa.concat_arrays([part, _random_keys(rng, 500, 300_000)])
    index = KeyIndex(held, dense_only=True)
    assert index.dense and index.stride == 53 and len(index.table) <= 4 * len(held) + 1024
    expected = pc.index_in(probe, value_set=held, skip_nulls=True)
    assert index.index_in(probe).equals(expected)


def test_sparse_keys_are_left_to_hashing_when_only_dense_is_wanted():
    held = pa.array([1, 10**15, 3 * 10**15 + 7], pa.int64())
    assert not KeyIndex(held, dense_only=True).dense
    assert len(KeyIndex(held).sorted) == 3


def test_integer_keys_are_partitioned_modulo_a_prime_count():
    from auditor.checks.base import partition_of
    from auditor.scan import partition_count

    assert [partition_count(n, rows_per_partition=1) for n in (1, 2, 50, 64, 1024)] == [
        1, 2, 53, 67, 1031,
    ]  # fmt: skip
    keys = pa.array([0, 52, 53, -1, None, 2**63 - 1], pa.int64())
    assert partition_of([keys], 53).tolist() == [0, 52, 0, 52, 0, (2**63 - 1) % 53]
    hashed = partition_of([keys], 53, seed=1)  # a split: hashed, not modulo again
    assert hashed.tolist() != partition_of([keys], 53).tolist()


@pytest.mark.parametrize("held", [[1, 2, 3], [-(2**63), 2**63 - 1, 0]])
def test_key_index_at_the_ends_of_int64(held):
    """No key arithmetic overflows: probes far outside a dense range, keys at both ends."""
    probe = pa.array([2**63 - 1, -(2**63), 3, 0, None], pa.int64())
    expected = pc.index_in(probe, value_set=pa.array(held, pa.int64()), skip_nulls=True)
    assert KeyIndex(pa.array(held, pa.int64())).index_in(probe).equals(expected)


def test_lookup_with_key_index_equals_hash_lookup():
    right = pa.table({"c0": pa.array([5, 3, None, 9], pa.int64()), "n": [50, 30, 0, 90]})
    left = pa.table({"c0": pa.array([9, 4, None, 3, 5], pa.int64()), "r0": [1, 2, 3, 4, 5]})
    hashed = lookup(left, right.filter(pc.is_valid(right["c0"])), ["c0"])
    present = right.filter(pc.is_valid(right["c0"]))
    assert lookup(left, present, ["c0"], KeyIndex(present["c0"])).equals(hashed)
    assert hashed["n"].to_pylist() == [90, None, None, 30, 50]


def test_lookup_of_no_rows_hashes_nothing(monkeypatch):
    """A held side is checked once with no referencing rows (for its duplicated keys): hashing
    its keys for that cost 110 MB at 1.6M held rows."""
    import auditor.checks.reference as reference

    def refuse(*args, **kwargs):
        raise AssertionError("hashed the right side for an empty left side")

    monkeypatch.setattr(reference.pc, "index_in", refuse)
    right = pa.table({"c0": pa.array([5, 3], pa.int64()), "n": [50, 30]})
    empty = pa.table({"c0": pa.array([], pa.int64()), "r0": pa.array([], pa.int64())})
    joined = lookup(empty, right, ["c0"])
    assert joined.num_rows == 0 and joined.column_names == ["c0", "r0", "n"]


def test_empty_held_side_finds_nothing():
    probe = pa.array([1, None], pa.int64())
    assert KeyIndex(pa.array([], pa.int64())).index_in(probe).null_count == 2


def test_int_keys_beyond_the_signed_range_meet_their_text_form():
    """BIGINT UNSIGNED values and their digits in a text column get one canonical key; what
    no 64 bits can hold matches nothing."""
    from auditor.checks.base import canonical_key

    numbers = pa.array([2**64 - 1, 2**63, 7, None], pa.uint64())
    texts = pa.array(
        ["18446744073709551615", "9223372036854775808", "0007", "18446744073709551616"]
    )
    assert canonical_key(numbers, "int").to_pylist() == [-1, -(2**63), 7, None]
    assert canonical_key(texts, "int").to_pylist() == [-1, -(2**63), 7, None]


def test_value_text_forms_for_numbers_and_timestamps():
    """One text form for values each database writes its own way (SQLite keeps both as text)."""
    from auditor.checks.base import number_text, timestamp_text

    numbers = pa.array(["10.50", "10.5", "0.00", "3.", "-2.500", "1e-05", "n/a", None, "100"])
    assert number_text(numbers).to_pylist() == [
        "10.5", "10.5", "0", "3", "-2.5", "1e-05", "n/a", None, "100"
    ]  # fmt: skip
    stamps = pa.array(["2024-05-06 07:08:09.000000", "2024-05-06T07:08:09Z", "2024-05-06 07:08:09.5",
                       "2024-05-06 07:08:09.1234567", "2024-05-06", None, "12:34:56.000", "08:00"])  # fmt: skip
    assert timestamp_text(stamps).to_pylist() == [
        "2024-05-06 07:08:09", "2024-05-06 07:08:09", "2024-05-06 07:08:09.500000",
        "2024-05-06 07:08:09.123456", "2024-05-06", None, "12:34:56", "08:00",
    ]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_hyphenated_uuid_fast_path_equals_the_general_path(seed):
    """Arrays of hyphenated UUIDs (any case, nulls) skip the regular expressions; the result
    is what the general path gives (forced here by one value it alone can read)."""
    import uuid

    from auditor.checks.base import canonical_key

    rng = np.random.default_rng(seed)
    values = [str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64)) for _ in range(200)]
    values = [v.upper() if i % 3 == 0 else v for i, v in enumerate(values)]
    values = [None if i % 17 == 0 else v for i, v in enumerate(values)]
    fast = canonical_key(pa.array(values, pa.string()), "uuid")
    forced = canonical_key(pa.array([*values, "{" + values[1] + "}"], pa.string()), "uuid")
    assert fast.equals(forced.slice(0, len(values)))
    assert forced[-1].as_py() == values[1].lower()


@pytest.mark.parametrize("width", [1, 8, 36, 64, 65])
def test_string_hash_paths_compute_one_function(width):
    """Short keys are hashed length by length as byte matrices, long ones by running sums:
    every path gives what the running sums give, so two sides split alike whichever path
    their keys took (one length, mixed lengths, long, empty, null, non-ASCII, sliced)."""
    from auditor.checks.base import _running_hash, _string_hash

    rng = np.random.default_rng(width)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789-", dtype=np.uint8)
    words = [rng.choice(letters, width).tobytes().decode() for _ in range(300)]
    extra = ["", None, "h\u00e9llo", "x" * 200, "y" * 64, "z" * 65, "k1", "k22"]
    for values in (words, words[:150] + extra + words[150:]):
        array = pa.array(values).cast(pa.large_string()).slice(5, len(values) - 10)
        assert np.array_equal(_string_hash(array), _running_hash(array))


def test_binary_uuids_as_text():
    """16-byte UUIDs (PostgreSQL's uuid through ADBC, BINARY(16)) in Python's text form, nulls
    and slices kept."""
    import uuid

    from auditor.checks.base import canonical_key

    values = [uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % 2**128) for i in range(1, 40)]
    raw = pa.array([None if i % 7 == 0 else v.bytes for i, v in enumerate(values)], pa.binary(16))
    expected = [None if i % 7 == 0 else str(v) for i, v in enumerate(values)]
    assert canonical_key(raw, "uuid").to_pylist() == expected
    assert canonical_key(raw.slice(3, 10), "uuid").to_pylist() == expected[3:13]
    extension = pa.ExtensionArray.from_storage(pa.uuid(), raw)
    assert canonical_key(extension, "uuid").to_pylist() == expected
    # ADBC's PostgreSQL driver 1.8: an opaque type named uuid over variable-length binary.
    opaque = pa.opaque(pa.binary(), "uuid", "PostgreSQL")
    from_driver = pa.ExtensionArray.from_storage(opaque, raw.cast(pa.binary()))
    for key_type in ("uuid", "string"):
        assert canonical_key(from_driver, key_type).to_pylist() == expected
    assert canonical_key(from_driver.slice(3, 10), "uuid").to_pylist() == expected[3:13]
