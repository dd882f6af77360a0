"""Reference checks over one partition: pure functions of Arrow tables, no I/O.

Input tables follow scan.side_schema: canonical keys c*, key text k*, row labels r*, and on
the referenced side the soft-delete flag. Output: `duplicate_key` groups and candidate rows
with their kind; candidates are confirmed (recheck, alias chains) by recheck.py.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from auditor.plan import DELETED

COUNT = "count_all"


def key_names(width: int) -> list[str]:
    return [f"c{i}" for i in range(width)]


def any_null(table: pa.Table, names: list[str]) -> pa.Array | pa.ChunkedArray:
    masks = [pc.is_null(table[name]) for name in names]
    if not masks:
        return pa.array(np.zeros(table.num_rows, dtype=bool))
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
        ones = pa.array(np.ones(present.num_rows, dtype=np.int64))
        return present.select([*keys, *flag]).append_column(COUNT, ones)
    aggregations: list[tuple] = [([], "count_all")] + [(DELETED, "min")] * len(flag)
    grouped = present.group_by(keys, use_threads=False).aggregate(aggregations)
    return grouped.rename_columns([*keys, COUNT, *flag])


def _unique(column: pa.ChunkedArray | pa.Array) -> bool:
    return len(pc.unique(column)) == len(column)


def lookup(left: pa.Table, right: pa.Table, keys: list[str]) -> pa.Table:
    """Left outer join against a right side with unique keys; keeps the left order.

    One key column: a hash look-up (`index_in`) and a `take`, far cheaper than a join plan.
    """
    if len(keys) > 1:
        return left.join(right, keys=keys, join_type="left outer", use_threads=False)
    index = pc.index_in(left[keys[0]], value_set=right[keys[0]].combine_chunks())
    taken = right.drop_columns(keys).take(index)
    for name in taken.column_names:
        left = left.append_column(name, taken[name])
    return left


def duplicates(groups: pa.Table) -> pa.Table:
    return groups.filter(pc.greater(groups[COUNT], 1))


def with_kind(table: pa.Table, kind: str) -> pa.Table:
    return table.append_column("kind", pa.array([kind] * table.num_rows, pa.string()))


def check_references(left: pa.Table, groups: pa.Table, width: int, allow_null: bool) -> pa.Table:
    """Candidates among the referencing rows: null_reference, orphan, soft_deleted."""
    keys = key_names(width)
    texts = [f"k{i}" for i in range(width)]
    is_null = any_null(left, texts)  # MATCH SIMPLE: any NULL part makes the reference NULL
    unparsable = pc.and_(pc.invert(is_null), any_null(left, keys))
    valid = keep(left, pc.invert(pc.or_(is_null, unparsable)))
    joined = lookup(valid, groups, keys)
    parts = [
        with_kind(keep(joined, pc.is_null(joined[COUNT])), "orphan"),
        with_kind(keep(left, unparsable), "orphan"),
    ]
    if DELETED in joined.column_names:
        parts.append(with_kind(keep(joined, pc.equal(joined[DELETED], 1)), "soft_deleted"))
    if not allow_null:
        parts.append(with_kind(keep(left, is_null), "null_reference"))
    columns = [*left.column_names, "kind"]
    return pa.concat_tables([p.select(columns) for p in parts], promote_options="none")
