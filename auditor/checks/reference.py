"""Reference checks over one partition: pure functions of Arrow tables, no I/O.

Input tables follow batch.SideRows: canonical keys c*, key text k*, row labels r*, and on
the referenced side the soft-delete flag. Output: `duplicate_key` groups and candidate rows
with their kind; candidates are confirmed (recheck, alias chains) by recheck.py.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from auditor.batch import DELETED, key_names
from auditor.normalize import numpy_array

COUNT = "count_all"
# Typed scalars for the comparisons below: a bare Python value makes pyarrow infer its type, which
# costs 35-135 us a call on this kind of machine (it tries to import pandas and dateutil each time).
ONE_ROW = pa.scalar(1, pa.int64())
_DELETED_FLAG = pa.scalar(1, pa.int8())


def any_null(table: pa.Table, names: list[str]) -> pa.Array | pa.ChunkedArray:
    masks = [pc.is_null(table[name]) for name in names]
    if not masks:
        return numpy_array(np.zeros(table.num_rows, dtype=bool))
    mask = masks[0]
    for other in masks[1:]:
        mask = pc.or_(mask, other)
    return mask


def keep(table: pa.Table, mask: pa.Array | pa.ChunkedArray) -> pa.Table:
    """`table.filter(mask)` that copies nothing when the mask keeps all or no rows."""
    mask = pc.fill_null(mask, False)
    if table.num_rows == 0 or not pc.any(mask).as_py():
        return table.schema.empty_table()  # not a slice: it must not pin the input's buffers
    if pc.all(mask).as_py():
        return table
    return table.filter(mask)


def group_keys(right: pa.Table, width: int, unique: bool = False) -> pa.Table:
    """One row per canonical key of the referenced side: how many rows, and all deleted?

    `unique`: the keys are known to be unique (an integer primary key), so they are not counted.
    """
    keys = key_names(width)
    present = keep(right, pc.invert(any_null(right, keys)))
    flag = [DELETED] if DELETED in right.column_names else []
    if unique or (width == 1 and _unique(present["c0"])):  # no aggregation needed
        ones = numpy_array(np.ones(present.num_rows, dtype=np.int64))
        return present.select([*keys, *flag]).append_column(COUNT, ones)
    aggregations: list[tuple] = [([], "count_all")] + [(DELETED, "min")] * len(flag)
    grouped = present.group_by(keys, use_threads=False).aggregate(aggregations)
    return grouped.rename_columns([*keys, COUNT, *flag])


def _unique(column: pa.ChunkedArray | pa.Array) -> bool:
    return len(pc.unique(column)) == len(column)


class KeyIndex:
    """One integer key column indexed once, for a side held in memory and probed chunk after
    chunk, where `index_in` would hash it again every time, or for one partition's keys.

    Keys spanning a compact range (ids from a sequence, the usual case) go in a table indexed
    by `(key - smallest) / stride`: one gather per probe. The stride is what all keys share
    apart from the smallest (1 for a sequence; the partition count within one partition, as
    partition_of takes integer keys modulo it). Sparse keys are sorted and binary-searched
    (W1: 5M probes into 200k keys took 0.6 CPU-s by binary search).
    """

    DENSE_SLOTS_PER_KEY = 4  # at most 4 table slots per key: 16 bytes of int32 per held row

    def __init__(self, keys: pa.Array | pa.ChunkedArray, dense_only: bool = False) -> None:
        """`dense_only`: leave sparse keys unindexed (`dense` is False): for keys probed only
        once, hashing them (pc.index_in) is cheaper than sorting them."""
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        present: np.ndarray | None = None  # the row of each value; None: row i holds value i
        if keys.null_count:
            present = np.flatnonzero(pc.is_valid(keys).to_numpy(zero_copy_only=False))
            values = keys.fill_null(0).to_numpy(zero_copy_only=False)[present]
        else:  # the usual case: no mask to build, and the values are not copied
            values = keys.to_numpy(zero_copy_only=False)
        self.table: np.ndarray | None = None
        self.sorted, self.rows = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        self.stride = 1
        if len(values) == 0:
            self.dense = True  # nothing to find: every probe is absent
            return
        self.low, self.high = int(values.min()), int(values.max())
        # Offsets as uint64: exact however far apart the keys are (their span is < 2**64).
        # Worked in place: fresh temporaries cost page faults (~4 us each on a VM).
        offsets = values.astype(np.uint64)
        offsets -= np.uint64(self.low & 0xFFFFFFFFFFFFFFFF)
        most = self.DENSE_SLOTS_PER_KEY * len(values) + 1024
        if self.high - self.low + 1 > most:  # sparse as a sequence: maybe dense by a stride
            self.stride = max(1, int(np.gcd.reduce(offsets)))
        slots = (self.high - self.low) // self.stride + 1
        self.dense = slots <= most
        if self.dense:
            if self.stride > 1:
                offsets //= np.uint64(self.stride)
            rows = np.arange(len(values), dtype=np.int32) if present is None else present
            self.table = np.full(slots, -1, dtype=np.int32)
            # Written last to first, so a duplicated key keeps its first row, as index_in.
            self.table[offsets[::-1].view(np.int64)] = rows[::-1]
        elif not dense_only:
            order = np.argsort(values, kind="stable")  # equal keys: the first row first
            self.sorted = values[order]
            self.rows = (order if present is None else present[order]).astype(np.int32)

    def index_in(self, probe: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Like `pc.index_in(probe, value_set=keys)`: the row of each value (int32, as there),
        null if absent."""
        if isinstance(probe, pa.ChunkedArray):
            probe = probe.combine_chunks()
        valid: np.ndarray | bool = True
        if probe.null_count:
            valid = pc.is_valid(probe).to_numpy(zero_copy_only=False)
            probe = probe.fill_null(0)
        values = probe.to_numpy(zero_copy_only=False)
        if self.table is not None:
            # As uint64, keys below the smallest wrap past the span: one comparison bounds both.
            # One temporary, then worked in place (fresh memory costs page faults).
            offsets = values.view(np.uint64) - np.uint64(self.low & 0xFFFFFFFFFFFFFFFF)
            inside = offsets <= np.uint64(self.high - self.low)
            if self.stride > 1:
                inside &= offsets % np.uint64(self.stride) == 0
                offsets //= np.uint64(self.stride)
            np.copyto(offsets, np.uint64(0), where=~inside)
            rows = self.table[offsets.view(np.int64)]  # int32, as pc.index_in gives
            return numpy_array(rows, mask=~(inside & valid & (rows >= 0)))
        if len(self.sorted) == 0:
            return pa.nulls(len(values), pa.int32())
        at = np.minimum(np.searchsorted(self.sorted, values), len(self.sorted) - 1)
        hit = (self.sorted[at] == values) & valid
        return numpy_array(self.rows[at], mask=~hit)


def lookup(
    left: pa.Table, right: pa.Table, keys: list[str], index: KeyIndex | None = None
) -> pa.Table:
    """Left outer join against a right side with unique keys; keeps the left order.

    One key column: a hash look-up (`index_in`), or a prebuilt `index` of right's keys, and a
    `take`, far cheaper than a join plan.
    """
    if len(keys) > 1:
        return left.join(right, keys=keys, join_type="left outer", use_threads=False)
    if left.num_rows == 0:  # e.g. a held side's own item: no hash table of its keys for nothing
        position = pa.nulls(0, pa.int64())
    elif index is not None:
        position = index.index_in(left[keys[0]])
    else:
        position = pc.index_in(left[keys[0]], value_set=right[keys[0]].combine_chunks())
    taken = right.drop_columns(keys).take(position)
    for name in taken.column_names:
        left = left.append_column(name, taken[name])
    return left


def duplicates(groups: pa.Table) -> pa.Table:
    return groups.filter(pc.greater(groups[COUNT], ONE_ROW))


def with_kind(table: pa.Table, kind: str) -> pa.Table:
    return table.append_column("kind", pa.array([kind] * table.num_rows, pa.string()))


def check_references(
    left: pa.Table,
    groups: pa.Table,
    width: int,
    allow_null: bool,
    index: KeyIndex | None = None,
) -> pa.Table:
    """Candidates among the referencing rows: null_reference, orphan, soft_deleted.

    `index`: the KeyIndex of `groups`, when the same groups are checked again and again."""
    keys = key_names(width)
    texts = [f"k{i}" for i in range(width)]
    is_null = any_null(left, texts)  # MATCH SIMPLE: any NULL part makes the reference NULL
    unparsable = pc.and_(pc.invert(is_null), any_null(left, keys))
    valid = keep(left, pc.invert(pc.or_(is_null, unparsable)))
    joined = lookup(valid, groups, keys, index)
    parts = [
        with_kind(keep(joined, pc.is_null(joined[COUNT])), "orphan"),
        with_kind(keep(left, unparsable), "orphan"),
    ]
    if DELETED in joined.column_names:
        deleted = pc.equal(joined[DELETED], _DELETED_FLAG)
        parts.append(with_kind(keep(joined, deleted), "soft_deleted"))
    if not allow_null:
        parts.append(with_kind(keep(left, is_null), "null_reference"))
    columns = [*left.column_names, "kind"]
    return pa.concat_tables([p.select(columns) for p in parts], promote_options="none")
