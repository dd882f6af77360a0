"""The one schema a side's rows take after the store, for the scan and the recheck alike.

Whatever the store (a SQL table, a Redis keyspace, files), a driver's batch becomes rows of
fixed, typed columns named by role, so the checks never ask where a row came from:

- `c{i}`: canonical key part i (int64, or text in one form): equal across databases;
- `k{i}`: compared column i as the side stores it (shown as a finding's `ref`);
- `r{i}`: row label i (what names the row: its primary key, a Redis key, file + line);
- `v{i}`: PII field i as text, numbers and timestamps in one form (`TEXT_FORM`);
- `__deleted`: the soft-delete flag, on a side that has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import sqlalchemy as sa

from auditor.checks.base import as_text, canonical_key, number_text, timestamp_text

if TYPE_CHECKING:
    from auditor.plan import SidePlan

KEY, COMPARED, LABEL, VALUE = "c", "k", "r", "v"
DELETED = "__deleted"
TEXT_FORM = "auditor.text_form"
_TEXT_FORMS = {b"timestamp": timestamp_text, b"number": number_text}


def key_names(width: int) -> list[str]:
    """The canonical key columns of a key `width` parts wide."""
    return [f"{KEY}{i}" for i in range(width)]


def names_of(table: pa.Table | pa.Schema, role: str) -> list[str]:
    """The columns of one role (KEY, COMPARED, LABEL or VALUE), in order."""
    names = table.names if isinstance(table, pa.Schema) else table.column_names
    return [n for n in names if n[:1] == role and n[1:].isdigit()]


def tuples(columns: Sequence[pa.Array | pa.ChunkedArray]) -> list[tuple]:
    """Rows of the given columns as Python tuples (what look-ups and identities compare)."""
    return list(zip(*(c.to_pylist() for c in columns), strict=True)) if columns else []


def label_tuples(table: pa.Table) -> list[tuple]:
    """The row labels of each row: what names a row in findings and look-ups."""
    return tuples([table[n] for n in names_of(table, LABEL)])


@dataclass(frozen=True)
class SideRows:
    """One side's row schema: built once per side and rule, used by every batch of it."""

    schema: pa.Schema
    key_types: tuple[str, ...]

    @classmethod
    def of(cls, side: SidePlan, key_types: tuple[str, ...]) -> SideRows:
        fields = [
            pa.field(f"{KEY}{i}", pa.int64() if t == "int" else pa.string())
            for i, t in enumerate(key_types)
        ]
        fields += [
            pa.field(f"{COMPARED}{i}", side.display_type(c)) for i, c in enumerate(side.compare)
        ]
        fields += [pa.field(f"{LABEL}{i}", side.display_type(c)) for i, c in enumerate(side.labels)]
        fields += [
            pa.field(f"{VALUE}{i}", pa.string(), metadata=_text_form(c))
            for i, c in enumerate(side.values)
        ]
        if side.soft_delete:
            fields.append(pa.field(DELETED, pa.int8()))
        return cls(pa.schema(fields), key_types)

    @property
    def names(self) -> list[str]:
        return self.schema.names

    def empty_table(self) -> pa.Table:
        return self.schema.empty_table()

    def prepare(self, batch: pa.RecordBatch, repeated: dict[str, str]) -> pa.RecordBatch:
        """A raw batch from the store -> this schema (canonical keys computed once).

        `repeated`: outputs the query selected once under another name (SidePlan.repeated).
        """

        def raw(name: str) -> pa.Array:
            return batch.column(repeated.get(name, name))

        columns: list[pa.Array] = []
        for field in self.schema:
            name = field.name
            if name[0] == KEY:
                index = int(name[1:])
                columns.append(canonical_key(raw(f"{COMPARED}{index}"), self.key_types[index]))
            elif name == DELETED:
                columns.append(raw(DELETED).cast(pa.int8()))
            elif pa.types.is_integer(field.type):
                columns.append(raw(name).cast(field.type))
            else:
                columns.append(text_form(field, as_text(raw(name))))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def text_form(field: pa.Field, text: pa.Array) -> pa.Array:
    """`text` in the one form `field` (a value column of SideRows.of) keeps its values in."""
    form = (field.metadata or {}).get(TEXT_FORM.encode())
    return _TEXT_FORMS[form](text) if form else text


def _text_form(column: sa.Column) -> dict[str, str] | None:
    """Which one text form a value column's values take (see SideRows.prepare): numbers and
    timestamps are written differently by each database, SQLite keeping both as text."""
    if isinstance(column.type, sa.DateTime | sa.Time):
        return {TEXT_FORM: "timestamp"}
    if isinstance(column.type, sa.Numeric | sa.Float):  # in SQLAlchemy 2.1 Float is no Numeric
        return {TEXT_FORM: "number"}
    return None
