"""Reference checks over one partition: pure functions of Arrow tables, no I/O.

Input tables follow scan.side_schema: canonical keys c*, key text k*, row labels r*, and on
the referenced side the soft-delete flag. Output: `duplicate_key` groups and candidate rows
with their kind; candidates are confirmed (recheck, alias chains) by recheck.py.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from auditor.plan import DELETED

COUNT = "count_all"


def key_names(width: int) -> list[str]:
    return [f"c{i}" for i in range(width)]


def any_null(table: pa.Table, names: list[str]) -> pa.Array:
    mask = pa.array([False] * table.num_rows, pa.bool_())
    for name in names:
        mask = pc.or_(mask, pc.is_null(table[name]))
    return mask


def group_keys(right: pa.Table, width: int) -> pa.Table:
    """One row per canonical key of the referenced side: how many rows, and all deleted?"""
    keys = key_names(width)
    present = right.filter(pc.invert(any_null(right, keys)))
    aggregations: list[tuple] = [([], "count_all")]
    if DELETED in right.column_names:
        aggregations.append((DELETED, "min"))
    grouped = present.group_by(keys, use_threads=False).aggregate(aggregations)
    if DELETED in right.column_names:
        grouped = grouped.rename_columns([*keys, COUNT, DELETED])
    return grouped


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
    valid = left.filter(pc.invert(pc.or_(is_null, unparsable)))
    joined = valid.join(groups, keys=keys, join_type="left outer", use_threads=False)
    parts = [
        with_kind(joined.filter(pc.is_null(joined[COUNT])), "orphan"),
        with_kind(left.filter(unparsable), "orphan"),
    ]
    if DELETED in joined.column_names:
        deleted = pc.fill_null(pc.equal(joined[DELETED], 1), False)
        parts.append(with_kind(joined.filter(deleted), "soft_deleted"))
    if not allow_null:
        parts.append(with_kind(left.filter(is_null), "null_reference"))
    columns = [*left.column_names, "kind"]
    return pa.concat_tables([p.select(columns) for p in parts], promote_options="none")
