"""Vectorised building blocks shared by the checks: canonical keys, text values, hashing.

Both sides of a comparison pass through `canonical_key`, so the two databases' own types and
collations never decide equality: `key_type` does (SPEC §2). Everything here is pure and
works on whole Arrow arrays; no Python loop runs per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from auditor.normalize import Pipeline, numpy_array, text_buffers

_INTEGRAL_TEXT = r"^[+-]?\d+(\.0*)?$"
_UUID_HEX = r"^[0-9a-f]{32}$"


def _unwrap(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if isinstance(array, pa.DictionaryArray):
        array = array.dictionary_decode()
    return array


def as_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any column as UTF-8 text: the form values are compared and shown in."""
    array = _unwrap(array)
    kind = array.type
    if _is_uuid_type(kind):
        return _binary_uuid(array.storage)
    if isinstance(kind, pa.ExtensionType):
        return as_text(array.storage)
    if pa.types.is_string(kind):
        return array
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return array.cast(pa.string())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return _decode(array)
    if pa.types.is_fixed_size_binary(kind):
        return _decode(array.cast(pa.binary()))
    if pa.types.is_boolean(kind):
        # 1/0: how MariaDB (BOOLEAN is TINYINT(1)) and SQLite store booleans, so a PostgreSQL
        # boolean and its copy there compare equal.
        return pc.if_else(array, "1", "0")
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_time(kind):  # as timestamps below: microseconds, zero fraction dropped
        text = pc.cast(array.cast(pa.time64("us"), safe=False), pa.string())
        return pc.replace_substring_regex(text, r"\.0{6}$", "")
    if pa.types.is_timestamp(kind):
        # One text form whatever the driver's precision: microseconds, zero fraction dropped.
        text = pc.cast(array.cast(pa.timestamp("us", kind.tz), safe=False), pa.string())
        return pc.replace_substring_regex(text, r"(\.0{6})?Z?$", "")
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # lists, structs, maps...
        return pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())


def number_text(text: pa.Array) -> pa.Array:
    """Decimal text without trailing fractional zeros: '10.50' and SQLite's REAL '10.5' are one
    number, as are '3.00' and '3'. Other forms (exponents, text) are left as they are."""
    trimmed = pc.replace_substring_regex(text, r"^([+-]?\d+)\.(\d*?)0+$", r"\1.\2")
    return pc.replace_substring_regex(trimmed, r"^([+-]?\d+)\.$", r"\1")


_TIMESTAMP_TEXT = (
    r"^(?:(?P<day>\d{4}-\d{2}-\d{2})[T ])?(?P<time>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d+)?Z?$"
)


def timestamp_text(text: pa.Array) -> pa.Array:
    """ISO timestamps and times stored as text (SQLite) in the form Arrow's take in `as_text`:
    a space between date and time, microseconds, no zero fraction, no UTC 'Z'."""
    parts = pc.extract_regex(text, _TIMESTAMP_TEXT)
    fraction = parts.field("fraction")  # "" where the text has none, as "day"
    fraction = pc.if_else(pc.equal(fraction, ""), ".", fraction)
    fraction = pc.utf8_slice_codeunits(pc.utf8_rpad(fraction, 7, "0"), 0, 7)
    fraction = pc.if_else(pc.equal(fraction, ".000000"), "", fraction)
    day = parts.field("day")
    day = pc.if_else(pc.equal(day, ""), day, pc.binary_join_element_wise(day, " ", ""))
    canonical = pc.binary_join_element_wise(day, parts.field("time"), fraction, "")
    return pc.if_else(pc.is_valid(parts), canonical, text)


def _is_uuid_type(kind: pa.DataType) -> bool:
    """Arrow's UUID type, or PostgreSQL's uuid as ADBC's driver before 1.9 hands it over: an
    opaque type over the 16 bytes (as text they would be mojibake, and no key would match)."""
    if getattr(kind, "extension_name", None) == "arrow.opaque":
        return getattr(kind, "type_name", None) == "uuid" and _is_binary(kind.storage_type)
    return isinstance(kind, pa.UuidType) or (
        isinstance(kind, pa.ExtensionType) and kind.extension_name == "arrow.uuid"
    )


def _decode(array: pa.Array) -> pa.Array:
    """Bytes as text; invalid UTF-8 (e.g. a latin1 column) is decoded with replacement."""
    try:
        return array.cast(pa.string())
    except pa.ArrowInvalid:
        values = [None if v is None else v.decode("utf-8", "replace") for v in array.to_pylist()]
        return pa.array(values, pa.string())


def _uuid_text(storage: pa.Array) -> pa.Array:
    """16-byte UUIDs as lower-case hyphenated text, laid out byte by byte in numpy (0.07 s
    per million; formatting 32 hex digits and hyphenating with Arrow kernels took 0.24 s)."""
    raw = np.frombuffer(storage.buffers()[1], dtype=np.uint8)
    raw = raw[storage.offset * 16 : (storage.offset + len(storage)) * 16].reshape(-1, 16)
    digits = np.empty((len(storage), 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX_DIGITS[raw >> 4]
    digits[:, 1::2] = _HEX_DIGITS[raw & 15]
    chars = np.full((len(storage), 36), ord("-"), dtype=np.uint8)
    chars[:, _UUID_DIGIT_POSITIONS] = digits
    return _grid_text(chars, storage)


def _grid_text(grid: np.ndarray, nulls_from: pa.Array) -> pa.Array:
    """A string array whose i-th value is the bytes of row i of `grid`, null where
    `nulls_from` is null."""
    rows, width = grid.shape
    text = pa.LargeStringArray.from_buffers(
        rows,
        pa.py_buffer(np.arange(rows + 1, dtype=np.int64) * width),
        pa.py_buffer(grid.tobytes()),
    ).cast(pa.string())
    if nulls_from.null_count:
        return pc.if_else(nulls_from.is_valid(), text, pa.scalar(None, pa.string()))
    return text


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DIGIT_POSITIONS = [i for i in range(36) if i not in (8, 13, 18, 23)]


def _hyphenate(hex32: pa.Array, valid: pa.Array) -> pa.Array:
    parts = [
        pc.utf8_slice_codeunits(hex32, a, b)
        for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
    ]
    joined = pc.binary_join_element_wise(*parts, "-")
    return pc.if_else(valid, joined, pa.scalar(None, pa.string()))


def canonical_key(array: pa.Array | pa.ChunkedArray, key_type: str) -> pa.Array:
    """The canonical form compared for `key_type`; null where the value is null or unparsable."""
    array = _unwrap(array)
    if key_type == "int":
        return _canonical_int(array)
    if key_type == "uuid" and _is_binary(array.type):
        return _binary_uuid(array)
    text = as_text(array)
    if key_type == "uuid" and _is_uuid_type(array.type):
        return text  # as_text wrote it in canonical form
    if key_type == "uuid":
        canonical = _hyphenated_uuids(text)
        if canonical is not None:
            return canonical
        compact = pc.replace_substring_regex(
            pc.utf8_lower(pc.utf8_trim_whitespace(text)), r"[-{}]", ""
        )
        ok = pc.fill_null(pc.match_substring_regex(compact, _UUID_HEX), False)
        return _hyphenate(compact, ok)
    return text


_HEX = np.zeros(256, dtype=bool)
_HEX[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = True
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[np.frombuffer(b"ABCDEF", dtype=np.uint8)] += 32
_HYPHENS = [8, 13, 18, 23]


def _hyphenated_uuids(text: pa.Array) -> pa.Array | None:
    """Every value already a hyphenated UUID (36 characters, any case): lower-cased on the
    raw bytes, or None so the caller takes the general path (braces, 32-hex, spaces, junk).

    The general path's regular expressions cost 0.6 s per million UUIDs; this one 0.03 s.
    """
    filled = pc.fill_null(text, "00000000-0000-0000-0000-000000000000")
    offsets, raw = text_buffers(filled)
    if len(filled) == 0 or not np.all(np.diff(offsets) == 36):
        return None
    grid = raw[offsets[0] : offsets[-1]].reshape(len(filled), 36)
    digits = np.delete(grid, _HYPHENS, axis=1)
    if not (np.all(grid[:, _HYPHENS] == ord("-")) and np.all(_HEX[digits])):
        return None
    return _grid_text(_LOWER[grid], text)


def _is_binary(kind: pa.DataType) -> bool:
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


def _binary_uuid(array: pa.Array) -> pa.Array:
    """UUIDs stored as 16 raw bytes (MySQL BINARY(16)); other lengths match nothing."""
    if not pa.types.is_fixed_size_binary(array.type):
        sixteen = pc.fill_null(pc.equal(pc.binary_length(array), 16), False)
        filler = pa.scalar(b"\0" * 16, array.type)
        array = pc.if_else(sixteen, array, filler).cast(pa.binary(16))
        return pc.if_else(sixteen, _uuid_text(array), pa.scalar(None, pa.string()))
    if array.type.byte_width != 16:
        return pa.nulls(len(array), pa.string())
    return _uuid_text(array)


def _canonical_int(array: pa.Array) -> pa.Array:
    """Integers as their 64 bits in an int64: values from 2**63 to 2**64 - 1 (BIGINT UNSIGNED)
    wrap to negative numbers, so they match each other exactly; one could only meet a negative
    signed key with the same bits."""
    kind = array.type
    if kind == pa.uint64():
        return array.view(pa.int64())
    if pa.types.is_integer(kind):
        return array.cast(pa.int64())
    if pa.types.is_floating(kind):
        integral = pc.fill_null(pc.equal(pc.floor(array), array), False)
        return pc.if_else(integral, array, None).cast(pa.int64(), safe=False)
    if pa.types.is_decimal(kind):
        array = pc.cast(array, pa.string())
    text = pc.utf8_trim_whitespace(as_text(array))
    ok = pc.fill_null(pc.match_substring_regex(text, _INTEGRAL_TEXT), False)
    digits = pc.replace_substring_regex(pc.if_else(ok, text, None), r"\.0*$", "")
    try:
        return pc.cast(digits, pa.int64())
    except pa.ArrowInvalid:  # beyond 64 bits: no int key can equal it
        return pa.array([_int_or_none(v) for v in digits.to_pylist()], pa.int64())


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if 2**63 <= value < 2**64:
        return value - 2**64  # the same 64 bits as in _canonical_int
    return value if -(2**63) <= value < 2**63 else None


# --- partitioning -------------------------------------------------------------------------

_MIX = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(0x100000001B3)


def partition_of(
    columns: Sequence[pa.Array],
    partitions: int,
    seed: int = 0,
    key_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Partition number per row from the canonical key columns (same on both sides).

    A single integer key is split by `key_range` (RulePlan.partition_range) into equal ranges
    when one is given: rows read in key order then come out grouped by partition already, and
    keys outside the range go to the first or last partition. Without a range it is taken
    modulo `partitions` (a prime, see scan.partition_count): ids from a sequence spread evenly,
    and the keys of one partition then lie `partitions` apart, which KeyIndex turns into a direct
    table. Other keys are hashed. A different `seed` gives an independent hashed split, used to
    divide an oversized partition (keys that share one remainder or one range land there).
    """
    if partitions <= 1:
        return np.zeros(len(columns[0]), dtype=np.int64)
    if seed == 0 and len(columns) == 1 and pa.types.is_integer(columns[0].type):
        values = columns[0].fill_null(0).to_numpy(zero_copy_only=False)
        if key_range is None:
            return np.mod(values, partitions).astype(np.int64)
        low, high = key_range
        width = (high - low) // partitions + 1  # every key of the range lands below `partitions`
        return (np.clip(values, low, high) - low) // width
    combined = np.full(len(columns[0]), seed, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            combined = combined * _PRIME + _hash(column)
        combined ^= combined >> np.uint64(31)
        combined *= _MIX
        combined ^= combined >> np.uint64(29)
    return (combined % np.uint64(partitions)).astype(np.int64)


def _hash(column: pa.Array) -> np.ndarray:
    if pa.types.is_integer(column.type):
        values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
        with np.errstate(over="ignore"):
            return values * _MIX
    return _string_hash(column.cast(pa.large_string()))


def _string_hash(column: pa.Array) -> np.ndarray:
    """Polynomial hash of every string at once: each byte weighed by a power of the prime
    for its position in its string (Σ byte × P^(position + 1)), plus the length.

    Strings of up to 64 bytes are hashed length by length, as a matrix of their bytes times
    the powers (0.07 s per million e-mail addresses; a UUID column, all one length, 0.06 s);
    longer ones by running sums over the data buffer (0.27 s per million). Both compute the
    same function, so two sides split alike whichever way each was hashed.
    """
    offsets, data = text_buffers(column)
    lengths = np.diff(offsets)
    hashes = np.zeros(len(column), dtype=np.uint64)  # an empty string hashes to 0
    if len(column) == 0:
        return hashes
    with np.errstate(over="ignore"):
        width = int(lengths[0])
        if 0 < width <= FIXED_HASH_WIDTH and np.all(lengths == width):  # no gather needed
            grid = data[offsets[0] : offsets[-1]].reshape(len(column), width).astype(np.uint64)
            return grid @ _FIXED_POWERS[:width] + np.uint64(width) * _MIX
        long = np.flatnonzero(lengths > FIXED_HASH_WIDTH)
        if len(long):
            hashes[long] = _running_hash(column.take(numpy_array(long)))
        short = np.flatnonzero((lengths > 0) & (lengths <= FIXED_HASH_WIDTH))
        order = short[np.argsort(lengths[short], kind="stable")]
        for rows in np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1):
            if len(rows) == 0:
                continue
            width = int(lengths[rows[0]])
            grid = data[offsets[rows][:, None] + np.arange(width)].astype(np.uint64)
            hashes[rows] = grid @ _FIXED_POWERS[:width] + np.uint64(width) * _MIX
    return hashes


FIXED_HASH_WIDTH = 64


def _running_hash(column: pa.Array) -> np.ndarray:
    """_string_hash for long strings: prefix sums over the data buffer."""
    offsets, raw = text_buffers(column)
    data = raw[offsets[0] : offsets[-1]]
    starts, ends = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(len(data), _PRIME, dtype=np.uint64), dtype=np.uint64)
        prefix = np.concatenate(
            ([np.uint64(0)], np.cumsum(data.astype(np.uint64) * powers, dtype=np.uint64))
        )
        inverse = np.uint64(pow(int(_PRIME), -1, 2**64))
        inv_powers = np.concatenate(
            (
                [np.uint64(1)],
                np.cumprod(np.full(len(data), inverse, dtype=np.uint64), dtype=np.uint64),
            )
        )
        body = (prefix[ends] - prefix[starts]) * inv_powers[starts]
        return body + (ends - starts).astype(np.uint64) * _MIX


with np.errstate(over="ignore"):  # P^(position + 1), as _running_hash weighs each byte
    _FIXED_POWERS = np.cumprod(np.full(FIXED_HASH_WIDTH, _PRIME, dtype=np.uint64), dtype=np.uint64)


# --- normalising ---------------------------------------------------------------------------


def normalise(array: pa.Array, pipeline: Pipeline) -> pa.Array:
    """Normalise a column: vectorised where exact, else once per distinct value in Python.

    Empty results become null (missing), as in the Python pipeline.
    """
    array = _unwrap(array)
    fast = pipeline.plain(array)
    if fast is None:
        return _per_distinct(array, pipeline)
    slow = pc.and_(pc.is_valid(array), pc.is_null(fast))
    if pc.any(slow).as_py():
        fallback = _per_distinct(array.filter(slow), pipeline)
        fast = pc.replace_with_mask(fast, slow, fallback)
    empty = pa.scalar("", fast.type)  # typed: pyarrow infers a Python value's type slowly
    return pc.if_else(pc.equal(fast, empty), pa.scalar(None, pa.string()), fast)


def _per_distinct(array: pa.Array, pipeline: Pipeline) -> pa.Array:
    distinct = pc.unique(array)
    mapped = pa.array(pipeline.many(distinct.to_pylist()), pa.string())
    return mapped.take(pc.index_in(array, value_set=distinct))
