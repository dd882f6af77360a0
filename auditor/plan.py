"""A rule plus its reflected tables becomes an executable plan: columns, key types, SQL.

The scan does not depend on either database's sort order or collation: each side is streamed
unordered and hash-partitioned locally on the canonical key (see scan.py). Indexes matter only
for the point look-ups of the recheck, so that is what `check` reports about them.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from auditor.config.model import PiiRule, ReferenceRule, TableSide
from auditor.db.engines import Database
from auditor.db.reflect import TableInfo, category, reflect_table, unsigned_64
from auditor.errors import ConfigError
from auditor.normalize import Pipeline, compile_pipeline

Rule = ReferenceRule | PiiRule
DELETED = "__deleted"
SAMPLE_ROWS = 1_000


@dataclass(frozen=True)
class SidePlan:
    """One table side of a rule: which columns to read, under which predicates."""

    role: str
    database: Database
    info: TableInfo
    compare: tuple[sa.Column, ...]
    labels: tuple[sa.Column, ...] = ()
    values: tuple[sa.Column, ...] = ()
    where: str | None = None
    soft_delete: str | None = None
    row_bytes: int | None = None  # estimated width of a row as read (see measure_widths)

    @property
    def label(self) -> str:
        return f"{self.role} {self.info.label}"

    def _expr(self, column: sa.Column) -> sa.ColumnElement:
        expr: sa.ColumnElement = column
        if isinstance(column.type, sa.CHAR):
            # CHAR(n) pads with spaces, and SQL compares it without them: so does auditor.
            expr = sa.func.rtrim(column)
        if self.database.dialect.cast_values_to_text:
            expr = sa.cast(expr, sa.Text)
        return expr

    @property
    def keys_unique(self) -> bool:
        """The compare columns are the integer primary key: no two rows can share a key, so
        counting rows per key (the duplicate_key check) can be skipped."""
        key = self.info.primary_key
        return (
            bool(key)
            and {c.name for c in self.compare} == set(key)
            and all(isinstance(c.type, sa.Integer) for c in self.compare)
        )

    def display_type(self, column: sa.Column) -> pa.DataType:
        """How a key or label column travels: integers stay integers where types are strict
        (BIGINT UNSIGNED as uint64); other types, NUMERIC(n, 0) too, as text."""
        if self.database.dialect.cast_values_to_text or not isinstance(column.type, sa.Integer):
            return pa.string()
        return pa.uint64() if unsigned_64(column) else pa.int64()

    def _outputs(self) -> list[tuple[str, sa.Column]]:
        return (
            [(f"k{i}", c) for i, c in enumerate(self.compare)]
            + [(f"r{i}", c) for i, c in enumerate(self.labels)]
            + [(f"v{i}", c) for i, c in enumerate(self.values)]
        )

    @property
    def repeated(self) -> dict[str, str]:
        """Outputs whose column is already selected under an earlier name, e.g. r0 -> k0 when
        a copy's key is its primary key: the column is read once and used twice (a second id
        column was 18% of the read of a 1:1 copy of (id, email))."""
        first: dict[str, str] = {}  # by column name: all outputs come from one table
        repeated = {}
        for name, column in self._outputs():
            if column.name in first:
                repeated[name] = first[column.name]
            else:
                first[column.name] = name
        return repeated

    def select(self, filtered: bool = True) -> sa.Select:
        """The scan query: compare keys k*, row labels r*, values v* (each column once, see
        `repeated`), soft-delete flag; `filtered=False` leaves out the side's `where`."""
        repeated = self.repeated
        exprs = [self._expr(c).label(n) for n, c in self._outputs() if n not in repeated]
        if self.soft_delete:
            flag = sa.case((sa.text(f"({self.soft_delete})"), 1), else_=0)
            exprs.append(flag.label(DELETED))
        query = sa.select(*exprs).select_from(self.info.table)
        if self.where and filtered:
            query = query.where(sa.text(f"({self.where})"))
        return query

    def sample_row_bytes(self, conn: Connection) -> int | None:
        """The average text length of the first SAMPLE_ROWS rows' scanned columns (plus 8 bytes
        a column for offsets): what a row weighs as it is read. Unfiltered, so a selective
        `where` cannot make the sample scan the table; None when it cannot be taken."""
        sample = self.select(filtered=False).limit(SAMPLE_ROWS).subquery()
        lengths = [sa.func.coalesce(sa.func.length(sa.cast(c, sa.Text)), 0) for c in sample.c]
        total: sa.ColumnElement = lengths[0]
        for length in lengths[1:]:
            total = total + length
        try:
            with conn.begin_nested():  # a failure must not end the snapshot's transaction
                value = conn.execute(sa.select(sa.func.avg(total))).scalar()
        except sa.exc.DBAPIError:
            return None
        return None if value is None else int(value) + 8 * len(lengths)

    def sql(self) -> str:
        dialect = self.database.engine.dialect
        return str(self.select().compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    def lookup_index_hint(self, columns: tuple[sa.Column, ...]) -> str | None:
        """`CREATE INDEX ...` that would serve look-ups on `columns`, or None when one exists."""
        names = [c.name for c in columns]
        if self.info.has_index_on(names):
            return None
        table = self.info.table
        index = sa.Index(f"ix_{table.name}_{'_'.join(names)}"[:60], *[table.c[n] for n in names])
        return str(sa.schema.CreateIndex(index).compile(dialect=self.database.engine.dialect))


@dataclass(frozen=True)
class RulePlan:
    """Everything the engine needs to run one rule; built once, read by every stage."""

    rule: Rule
    left: SidePlan  # the referencing rows: `from` or `copy`
    right: SidePlan  # the referenced rows: `to` or `source`
    key_types: tuple[str, ...]
    aliases: SidePlan | None = None
    normalizers: tuple[Pipeline, ...] = field(default=())

    @property
    def sides(self) -> list[SidePlan]:
        return [side for side in (self.left, self.right, self.aliases) if side is not None]


def reflect_sides(
    rule: Rule, databases: dict[str, Database], indexes: bool = False
) -> dict[str, TableInfo]:
    """The rule's tables by role, each database's in one read-only snapshot.

    Databases are reflected at once, one thread each (reflection waits on catalog queries).
    The first error in role order is raised, as if they had been reflected one by one.
    """
    groups: dict[str, list[tuple[str, TableSide]]] = {}
    for role, side in rule.sides().items():
        groups.setdefault(side.db, []).append((role, side))

    def reflect_group(group: list[tuple[str, TableSide]]) -> list[tuple[str, TableInfo]]:
        database = databases[group[0][1].db]
        with database.snapshot() as conn:
            return [
                (role, reflect_table(database, conn, side.table, indexes)) for role, side in group
            ]

    if len(groups) == 1:
        done = [reflect_group(group) for group in groups.values()]
    else:
        with ThreadPoolExecutor(len(groups), thread_name_prefix="reflect") as pool:
            done = list(pool.map(reflect_group, groups.values()))
    return {role: info for group in done for role, info in group}


def build_plan(rule: Rule, databases: dict[str, Database], check: bool = False) -> RulePlan:
    """Reflect the rule's tables, resolve key types and sample row widths.

    `check` (for `auditor check`): indexes are reflected too (lookup_index_hint), and no data
    row is read, so widths are not sampled.
    """
    infos = reflect_sides(rule, databases, indexes=check)
    measured = (lambda plan: plan) if check else measure_widths

    def cols(table: TableInfo, names: list[str]) -> tuple[sa.Column, ...]:
        return tuple(table.column(n) for n in names)

    if isinstance(rule, ReferenceRule):
        left_info, right_info = infos["from"], infos["to"]
        left = SidePlan(
            "from",
            databases[rule.from_.db],
            left_info,
            compare=cols(left_info, rule.from_.columns),
            labels=cols(left_info, rule.from_.key or _primary_key(left_info, "from")),
            where=rule.from_.where,
        )
        right = SidePlan(
            "to",
            databases[rule.to.db],
            right_info,
            compare=cols(right_info, rule.to.columns),
            where=rule.to.where,
            soft_delete=rule.to.soft_delete,
        )
        aliases = None
        if rule.aliases:
            alias_info = infos["aliases"]
            aliases = SidePlan(
                "aliases",
                databases[rule.aliases.db],
                alias_info,
                compare=cols(alias_info, rule.aliases.old),
                values=cols(alias_info, rule.aliases.new),
                where=rule.aliases.where,
            )
        key_types = resolve_key_types(rule, left.compare, right.compare)
        return measured(RulePlan(rule, left, right, key_types, aliases=aliases))

    source_info, copy_info = infos["source"], infos["copy"]
    right = SidePlan(
        "source",
        databases[rule.source.db],
        source_info,
        compare=cols(source_info, rule.source.key),
        values=cols(source_info, [f.source for f in rule.fields]),
        where=rule.source.where,
    )
    left = SidePlan(
        "copy",
        databases[rule.copy_.db],
        copy_info,
        compare=cols(copy_info, rule.copy_.key),
        labels=cols(copy_info, rule.copy_.row_key or _primary_key(copy_info, "copy")),
        values=cols(copy_info, [f.copy_ for f in rule.fields]),
        where=rule.copy_.where,
    )
    key_types = resolve_key_types(rule, left.compare, right.compare)
    normalizers = tuple(compile_pipeline(f.normalize) for f in rule.fields)
    return measured(RulePlan(rule, left, right, key_types, normalizers=normalizers))


def measure_widths(plan: RulePlan) -> RulePlan:
    """The plan with each side's row width sampled, one snapshot per database, at once.

    Batches, partitions and the held side have byte budgets that these widths turn into rows
    (see engine.py), so a side of long texts is not read 50,000 rows at a time.
    """
    by_database: dict[str, list[SidePlan]] = {}
    for side in plan.sides:
        by_database.setdefault(side.database.name, []).append(side)

    def sample(sides: list[SidePlan]) -> list[SidePlan]:
        with sides[0].database.snapshot() as conn:
            return [replace(side, row_bytes=side.sample_row_bytes(conn)) for side in sides]

    if len(by_database) == 1:
        measured = [sample(sides) for sides in by_database.values()]
    else:
        with ThreadPoolExecutor(len(by_database), thread_name_prefix="sample") as pool:
            measured = list(pool.map(sample, by_database.values()))
    widths = {side.role: side for sides in measured for side in sides}
    aliases = widths.get("aliases") if plan.aliases else None
    return replace(
        plan, left=widths[plan.left.role], right=widths[plan.right.role], aliases=aliases
    )


def _primary_key(table: TableInfo, role: str) -> list[str]:
    if not table.primary_key:
        option = "key" if role == "from" else "row_key"
        raise ConfigError(
            f"table {table.label} has no primary key: set {role}.{option} to the columns that "
            "name a row in findings"
        )
    return list(table.primary_key)


def resolve_key_types(rule: Rule, left: tuple[sa.Column, ...], right: tuple[sa.Column, ...]):
    """Canonical form per key position; `auto` refuses pairs whose meaning is ambiguous."""
    if rule.key_type != "auto":
        return tuple(rule.key_type for _ in left)
    return tuple(_auto_key_type(rule, a, b) for a, b in zip(left, right, strict=True))


def _auto_key_type(rule: Rule, a: sa.Column, b: sa.Column) -> str:
    kinds = {category(a), category(b)}
    if kinds == {"int"}:
        return "int"
    if "uuid" in kinds and kinds <= {"uuid", "string"}:
        return "uuid"
    if kinds == {"string"} or kinds == {"other"}:
        return "string"
    described = f"{a.table.name}.{a.name} ({a.type}) vs {b.table.name}.{b.name} ({b.type})"
    raise ConfigError(
        f"rules.{rule.name}: key types differ: {described}; set key_type: int (compare numeric "
        "values, '0042' = 42) or key_type: string (compare exact text)"
    )


def display(columns, row: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Key text back to the column's own kind: integers as numbers, the rest as text."""
    shown: dict[str, Any] = {}
    for i, column in enumerate(columns):
        value = row[f"{prefix}{i}"]
        if value is not None and category(column) == "int":
            with contextlib.suppress(ValueError):
                value = int(value)
        shown[column.name] = value
    return shown
