"""PII checks over one partition: copies against their source rows, field by field.

Raw-equal values are never normalised (normalisers are deterministic, so equal in means equal
out); only differing pairs go through the pipeline, once per distinct value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from auditor.batch import KEY, VALUE, key_names, names_of
from auditor.checks.base import normalise
from auditor.checks.reference import COUNT, ONE_ROW, KeyIndex, any_null, keep, lookup
from auditor.normalize import Pipeline, numpy_array

MATCHED = "__matched"
CANDIDATE_EXTRA = [
    pa.field("kind", pa.string()),
    pa.field("field", pa.int32()),
    pa.field("source_value", pa.string()),
    pa.field("copy_value", pa.string()),
]


def _source_columns(right: pa.Table, fields: int) -> pa.Table:
    names = names_of(right, KEY)
    renamed = right.select(names + [f"v{i}" for i in range(fields)])
    return renamed.rename_columns(names + [f"s{i}" for i in range(fields)])


def _candidates(rows: pa.Table, base: list[str], kind: str, field=None, source=None, copy=None):
    n = rows.num_rows
    columns = [rows[name] for name in base]
    columns += [
        pa.array([kind] * n, pa.string()),
        pa.array([field] * n, pa.int32()),
        source if source is not None else pa.nulls(n, pa.string()),
        copy if copy is not None else pa.nulls(n, pa.string()),
    ]
    return pa.Table.from_arrays(columns, names=base + [f.name for f in CANDIDATE_EXTRA])


def check_copies(
    left: pa.Table,
    right: pa.Table,
    groups: pa.Table,
    width: int,
    pipelines: Sequence[Pipeline],
    report_missing_source: bool,
    index: KeyIndex | None = None,
    keep_values: bool = False,
) -> pa.Table:
    """Candidates: missing_source, missing_value and mismatch (with raw values).

    `index`: the KeyIndex of `right`'s keys, when the same rows are checked again and again.
    `keep_values`: candidates keep every value of their copy row (v*), for copies the recheck
    does not read again (files)."""
    keys = key_names(width)
    values = set(names_of(left, VALUE))
    base = [n for n in left.column_names if keep_values or n not in values]
    is_null = any_null(left, [f"k{i}" for i in range(width)])
    unparsable = pc.and_(pc.invert(is_null), any_null(left, keys))
    valid = keep(left, pc.invert(pc.or_(is_null, unparsable)))
    parts = []
    if report_missing_source:
        parts.append(_candidates(keep(left, unparsable), base, "missing_source"))
    source = _source_columns(right, len(pipelines))
    if groups.num_rows != right.num_rows:  # some key is held by several source rows
        counted = lookup(valid, groups.select([*keys, COUNT]), keys)
        if report_missing_source:
            orphans = counted.filter(pc.is_null(counted[COUNT]))
            parts.append(_candidates(orphans, base, "missing_source"))
        valid = counted.filter(pc.fill_null(pc.equal(counted[COUNT], ONE_ROW), False)).drop([COUNT])
        pairs = valid.join(source, keys=keys, join_type="inner")
    else:
        marked = source.append_column(MATCHED, numpy_array(np.ones(source.num_rows, dtype=bool)))
        pairs = lookup(valid, marked, keys, index)
        if report_missing_source:
            orphans = keep(pairs.select(base), pc.is_null(pairs[MATCHED]))
            parts.append(_candidates(orphans, base, "missing_source"))
        # Unmatched rows stay in `pairs` (filtering every column would copy them all); their
        # source values are null and _compare_field skips them by the MATCHED column.
    for position, pipeline in enumerate(pipelines):
        parts += _compare_field(pairs, base, position, pipeline)
    if not parts:
        parts.append(_candidates(left.slice(0, 0), base, "mismatch"))
    return pa.concat_tables(parts)


def _compare_field(pairs: pa.Table, base: list[str], index: int, pipeline: Pipeline):
    source, copy = pairs[f"s{index}"], pairs[f"v{index}"]
    same = pc.or_(
        pc.fill_null(pc.equal(source, copy), False),
        pc.and_(pc.is_null(source), pc.is_null(copy)),
    )
    if MATCHED in pairs.column_names:
        same = pc.or_(same, pc.is_null(pairs[MATCHED]))
    differ = keep(
        pairs.select(list(dict.fromkeys([*base, f"s{index}", f"v{index}"]))), pc.invert(same)
    )
    if differ.num_rows:
        shortcut = pipeline.equal_shortcut(differ[f"s{index}"], differ[f"v{index}"])
        if shortcut is not None:
            differ = keep(differ, pc.invert(shortcut))
    if differ.num_rows == 0:
        return []
    source, copy = differ[f"s{index}"].combine_chunks(), differ[f"v{index}"].combine_chunks()
    left_norm, right_norm = normalise(source, pipeline), normalise(copy, pipeline)
    source_missing, copy_missing = pc.is_null(left_norm), pc.is_null(right_norm)
    one_missing = pc.xor(source_missing, copy_missing)
    mismatch = pc.fill_null(pc.not_equal(left_norm, right_norm), False)
    results = []
    for kind, mask in (("missing_value", one_missing), ("mismatch", mismatch)):
        rows = keep(differ, mask)
        if rows.num_rows:
            results.append(
                _candidates(rows, base, kind, index, rows[f"s{index}"], rows[f"v{index}"])
            )
    return results
