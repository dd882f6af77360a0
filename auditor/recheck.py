"""Point look-ups in fresh read-only transactions: the recheck and alias-chain resolution.

Candidates come from the scan; before one is reported, the referencing row and the rows it
points at are read again by key, and the same pure check runs on what comes back. A row
written while the scan ran therefore cannot produce a false finding (SPEC §8).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Sequence
from itertools import product
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from auditor.batch import DELETED, VALUE, SideRows, key_names, tuples
from auditor.checks.base import canonical_key
from auditor.concurrency import Stop, retrying
from auditor.db.reflect import category, unsigned_64
from auditor.errors import Interrupted
from auditor.plan import RulePlan, SidePlan, StoreSidePlan

CHUNK = 500
FETCHED_ROWS = 50_000
MAX_HOPS = 32


class Lookups:
    """Batched look-ups for one rule, each database read in its own fresh snapshot.

    A look-up whose connection is lost (killed, server restarted) is made again on a new
    snapshot, like a lost scan (concurrency.retrying): look-ups only read, so a retry is safe.
    """

    def __init__(self, plan: RulePlan, stack: contextlib.ExitStack, stop: Stop) -> None:
        self.plan = plan
        self.stop = stop
        self._open: dict[str, tuple[contextlib.ExitStack, Connection]] = {}
        stack.callback(self.close)

    def _conn(self, side: SidePlan) -> Connection:
        name = side.database.name
        if name not in self._open:
            opened = contextlib.ExitStack()
            self._open[name] = (opened, opened.enter_context(side.database.snapshot()))
        return self._open[name][1]

    def _drop(self, side: SidePlan) -> None:
        """Forget a database's snapshot (its connection died); the next look-up opens one."""
        opened = self._open.pop(side.database.name, None)
        if opened is not None:
            with contextlib.suppress(Exception):
                opened[0].close()

    def close(self) -> None:
        """End every snapshot; ending one whose connection died is no error of the run."""
        while self._open:
            _, (opened, _conn) = self._open.popitem()
            with contextlib.suppress(Exception):
                opened.close()

    def fetch(self, side: SidePlan, by: str, values: Iterable[tuple]) -> pa.Table:
        """Rows of `side` whose labels (`by="labels"`) or canonical keys match `values`."""
        wanted = list(dict.fromkeys(values))
        return retrying(
            lambda: self._fetch(side, by, wanted),
            self.plan.rule.name,
            "recheck_retry",
            self.stop,
            reset=lambda: self._drop(side),
        )

    def _fetch(self, side: SidePlan, by: str, wanted: list[tuple]) -> pa.Table:
        try:
            return self._read(side, by, wanted)
        except sa.exc.DBAPIError as exc:
            raise side.database.read_error(exc) from None  # its statement is in exc

    def _read(self, side: SidePlan, by: str, wanted: list[tuple]) -> pa.Table:
        columns = side.labels if by == "labels" else side.compare
        key_types = self.plan.key_types
        rows_of = SideRows.of(side, key_types)
        if isinstance(side, StoreSidePlan):  # read again by the store, not by SQL
            batches = side.read_again(by, wanted)
            prepared = [rows_of.prepare(side.exploded(raw)[0], side.repeated) for raw in batches]
            return pa.Table.from_batches(prepared, schema=rows_of.schema)
        tables = [rows_of.empty_table()]
        dialect = side.database.dialect
        chunk_size = dialect.lookup_chunk if len(columns) == 1 else CHUNK
        for start in range(0, len(wanted), chunk_size):
            if self.stop.is_set():
                raise Interrupted("interrupted while confirming candidates")
            chunk = wanted[start : start + chunk_size]
            condition = key_condition(dialect, columns, by, key_types, chunk)
            tables.append(fetched(self._conn(side), side, rows_of, side.select().where(condition)))
        return pa.concat_tables(tables)

    def follow_aliases(
        self, starts: Sequence[tuple]
    ) -> dict[tuple, tuple[str, tuple | None, str | None]]:
        """For each retired key: ('stale_alias', current key, note) or ('orphan', None, note)."""
        assert self.plan.aliases is not None
        current = {start: start for start in starts}
        seen = {start: [start] for start in starts}
        outcome: dict[tuple, tuple[str, tuple | None, str | None]] = {}
        pending = list(starts)
        for _ in range(MAX_HOPS):
            if not pending:
                return outcome
            mapping = self._alias_map([current[s] for s in pending])
            moved = []
            for start in pending:
                target = mapping.get(current[start])
                if target is None:
                    note = _chain_note(
                        seen[start], "at a value that neither exists nor has an alias"
                    )
                    outcome[start] = ("orphan", None, note if len(seen[start]) > 1 else None)
                elif target in seen[start]:
                    outcome[start] = (
                        "orphan",
                        None,
                        _chain_note([*seen[start], target], "in a cycle"),
                    )
                else:
                    seen[start].append(target)
                    current[start] = target
                    moved.append(start)
            status = self.key_status([current[s] for s in moved])
            pending = []
            for start in moved:
                if current[start] in status:
                    deleted = status[current[start]]
                    outcome[start] = (
                        "stale_alias",
                        current[start],
                        "the current id is soft-deleted" if deleted else None,
                    )
                else:
                    pending.append(start)
        for start in pending:
            outcome[start] = ("orphan", None, f"alias chain longer than {MAX_HOPS} hops")
        return outcome

    def _alias_map(self, keys: list[tuple]) -> dict[tuple, tuple]:
        assert self.plan.aliases is not None
        rows = self.fetch(self.plan.aliases, "compare", keys)
        width = len(self.plan.key_types)
        new = [canonical_key(rows[f"{VALUE}{i}"], self.plan.key_types[i]) for i in range(width)]
        old = [rows[name] for name in key_names(width)]
        mapping: dict[tuple, tuple] = {}
        for old_key, new_key in zip(tuples(old), tuples(new), strict=True):
            if None not in new_key:
                mapping.setdefault(old_key, new_key)
        return mapping

    def key_status(self, keys: list[tuple]) -> dict[tuple, bool]:
        """Which canonical keys exist on the referenced side, and whether all are deleted."""
        if not keys:
            return {}
        rows = self.fetch(self.plan.right, "compare", keys)
        width = len(self.plan.key_types)
        flags = rows[DELETED].to_pylist() if DELETED in rows.column_names else None
        status: dict[tuple, bool] = {}
        for index, key in enumerate(tuples([rows[name] for name in key_names(width)])):
            deleted = bool(flags[index]) if flags else False
            status[key] = status.get(key, True) and deleted
        return status


def fetched(
    conn: Connection, side: SidePlan, rows_of: SideRows, query: sa.Select, few: bool = False
) -> pa.Table:
    """The rows of one query on `side` (a few, through SQLAlchemy: FETCHED_ROWS at a time),
    as `rows_of`. `few`: a handful of rows at most (auditor.verify), fetched at once with no
    server-side cursor, whose extra round trips would double a one-row look-up's time."""
    if few:
        result = conn.execute(query)
    else:
        result = conn.execution_options(yield_per=FETCHED_ROWS).execute(query)
    names = list(result.keys())
    tables = [rows_of.empty_table()]
    for rows in result.partitions(FETCHED_ROWS):
        arrays = [
            pa.array(values, type=_arrow_type(rows_of.schema, name, values))
            for name, values in zip(names, zip(*rows, strict=True), strict=True)
        ]
        raw, _ = side.exploded(pa.RecordBatch.from_arrays(arrays, names=names))
        tables.append(pa.Table.from_batches([rows_of.prepare(raw, side.repeated)]))
    return pa.concat_tables(tables)


def _arrow_type(schema: pa.Schema, name: str, values: Sequence[Any]) -> pa.DataType | None:
    """The declared type of an integer output (BIGINT UNSIGNED needs uint64), string for text,
    else inferred (pyarrow's inference tries to import dateutil on every call: 20x slower)."""
    index = schema.get_field_index(name)
    kind = schema.field(index).type if index >= 0 else None
    if kind is not None and pa.types.is_integer(kind):
        return kind
    return pa.string() if all(type(v) is str or v is None for v in values) else None


def _chain_note(chain: list[tuple], end: str) -> str:
    text = " -> ".join(_show(key) for key in chain)
    return f"alias chain {text} ends {end}"


def _show(key: tuple) -> str:
    return ",".join(str(part) for part in key)


def key_condition(dialect, columns: Sequence[sa.Column], by: str, key_types, chunk: list[tuple]):
    """Rows whose `columns` (labels, or compared keys by `key_types`) hold a value of `chunk`,
    in every form the columns may store it (stored_forms)."""
    if len(columns) == 1:
        column, kind = columns[0], category(columns[0])  # classified once per chunk
        key_type = key_types[0] if by == "compare" else "label"
        if kind == "int" and not unsigned_64(column):  # the usual keys: bound as they are
            bound = [part for (part,) in chunk if type(part) is int]
            others = [part for (part,) in chunk if type(part) is not int]
        else:
            bound, others = [], [part for (part,) in chunk]
        bound += [v for part in others for v in stored_forms(column, kind, key_type, part)]
        return dialect.in_values(column, bound) if bound else sa.false()
    return sa.or_(*(_match(columns, by, key_types, value) for value in chunk))


def _match(columns: Sequence[sa.Column], by: str, key_types: Sequence[str], value: tuple):
    variants = [
        stored_forms(column, category(column), key_types[i] if by == "compare" else "label", part)
        for i, (column, part) in enumerate(zip(columns, value, strict=True))
    ]
    options = [
        sa.and_(*(column == bound for column, bound in zip(columns, combo, strict=True)))
        for combo in product(*variants)
    ]
    return sa.or_(*options) if options else sa.false()


def stored_forms(column: sa.Column, kind: str, key_type: str, value: Any) -> list[Any]:
    """The stored forms a canonical value may have in this column (`kind`: its category)."""
    if kind == "int" and type(value) is int:
        return [value + 2**64 if value < 0 and unsigned_64(column) else value]
    text = str(value)
    if kind == "int":
        try:
            return [int(text)]
        except ValueError:
            return []
    if kind == "uuid":
        try:
            return [uuid.UUID(text)]
        except ValueError:
            return []
    if key_type == "uuid":
        return list(dict.fromkeys([text, text.upper(), text.replace("-", "")]))
    if kind == "other":
        return [_typed(column, text)]
    return [text]


def _typed(column: sa.Column, text: str) -> Any:
    """Text back to the column's Python type (dates, decimals...) so drivers bind it as such."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return text
    try:
        if python_type is dt.datetime:
            return dt.datetime.fromisoformat(text)
        if python_type is dt.date:
            return dt.date.fromisoformat(text)
        if python_type is dt.time:
            return dt.time.fromisoformat(text)
        if python_type is decimal.Decimal:
            return decimal.Decimal(text)
        if python_type is float:
            return float(text)
        if python_type is bool:
            return text.lower() in ("true", "1", "t")
    except (ValueError, decimal.InvalidOperation):
        return text
    return text
