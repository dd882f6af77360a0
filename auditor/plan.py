"""A rule plus its reflected tables becomes an executable plan: columns, key types, SQL.

The scan does not depend on either database's sort order or collation: each side is streamed
unordered and partitioned locally on the canonical key (see scan.py). Indexes matter for the
point look-ups of the recheck, so that is what `check` reports about them, and a single integer
primary key's index gives its smallest and largest key at once (read_key_range).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from auditor.batch import COMPARED, DELETED, LABEL, VALUE
from auditor.config.model import PiiRule, ReferenceRule, TableSide
from auditor.db.dialects import literal_sql
from auditor.db.engines import Database, is_timeout, said_by
from auditor.db.reflect import TableInfo, category, reflect_table, unsigned_64
from auditor.errors import AuditorError, ConfigError, DatabaseError
from auditor.extract import SOURCE, Extraction
from auditor.normalize import Pipeline, compile_pipeline
from auditor.result import Finding

Rule = ReferenceRule | PiiRule
SAMPLE_ROWS = 1_000
# A key range this many times the rows is still split by ranges (see RulePlan.partition_range):
# at worst the rows fill half the range, so no partition gets more than twice its share.
DENSE_SPAN_PER_ROW = 2


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
    row_bytes: int | None = None  # estimated width of a row as read (see sample_row_bytes)
    key_range: tuple[int, int] | None = None  # smallest and largest key (see read_key_range)
    extract: Extraction | None = None  # references found inside a text column (SPEC §9)
    changed: sa.Column | None = None  # moves when a row changes (incremental runs, SPEC §11)
    # A cluster task's share of the scan (SPEC §12): a cluster.Slice of the compared keys, or
    # a cluster.RowSlice of the side's own rows (primary-key ranges or PostgreSQL pages).
    scan_slice: Any = None

    # A SQL table is read again by key in the recheck; files are not (see auditor.files).
    rereadable = True

    @property
    def label(self) -> str:
        return f"{self.role} {self.info.label}"

    def _expr(self, column: sa.Column) -> sa.ColumnElement:
        expr: sa.ColumnElement = column
        if isinstance(column.type, sa.CHAR):
            # CHAR(n) pads with spaces, and SQL compares it without them: so does auditor.
            expr = sa.func.rtrim(column)
        return self.database.dialect.selected(column, expr)

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
        compared = [(f"{COMPARED}{i}", c) for i, c in enumerate(self.compare)]
        values = [(f"{VALUE}{i}", c) for i, c in enumerate(self.values)]
        if self.extract is not None:  # the text is read; compared columns and values come out
            compared, values = [(SOURCE, self.extract.source)], []
        return compared + [(f"{LABEL}{i}", c) for i, c in enumerate(self.labels)] + values

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

    def select(self, filtered: bool = True, since: Any = None) -> sa.Select:
        """The scan query: compare keys k*, row labels r*, values v* (each column once, see
        `repeated`), soft-delete flag; `filtered=False` leaves out the side's `where`; `since`:
        only rows whose `changed` column is past it (an incremental run)."""
        repeated = self.repeated
        exprs = [self._expr(c).label(n) for n, c in self._outputs() if n not in repeated]
        if self.soft_delete:
            exprs.append(self.deleted_flag.label(DELETED))
        query = sa.select(*exprs).select_from(self.info.table)
        if self.where and filtered:
            query = query.where(sa.literal_column(f"({self.where})"))
        if since is not None:
            assert self.changed is not None
            query = query.where(self.changed >= sa.literal(since, self.changed.type))
        return query

    @property
    def deleted_flag(self) -> sa.ColumnElement:
        """1 for a soft-deleted row, else 0 (always 0 without `soft_delete`)."""
        if not self.soft_delete:
            return sa.literal_column("0")
        return sa.case((sa.literal_column(f"({self.soft_delete})"), 1), else_=0)

    def stream(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The side's rows as raw batches named as `select` names them (k*, r*, v*, ...)."""
        return self.database.stream(self.sql(), batch_rows)

    def stream_changed(self, batch_rows: int, since: Any) -> Iterator[pa.RecordBatch]:
        """As `stream`, only the rows whose `changed` column is at `since` or past it."""
        return self.database.stream(self.sql(since), batch_rows)

    @property
    def pushes(self) -> bool:
        """Whether `stream` reads ahead on its own, unbounded (see concurrency.read_ahead)."""
        return self.database.dialect.pushes

    def side_findings(self, rule: str) -> Iterator[Finding]:
        """Findings about the side itself, made after the compare (a Redis key that never
        expires); they are not re-checked."""
        return iter(())

    def ttl_sample(self) -> tuple[int, int] | None:
        """For `check`: (keys sampled, of which expire) on a store whose entries expire."""
        return None

    def exploded(self, raw: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """A raw batch with its extracted references as rows (see auditor.extract), and how
        many of its rows held none; the batch as it is on a side without `extract`."""
        return (raw, 0) if self.extract is None else self.extract.explode(raw)

    def sample_row_bytes(self, conn: Connection) -> int | None:
        """The average text length of the first SAMPLE_ROWS rows' scanned columns (plus 8 bytes
        a column for offsets): what a row weighs as it is read. Unfiltered, so a selective
        `where` cannot make the sample scan the table; None when it cannot be taken."""
        sample = self.select(filtered=False).limit(SAMPLE_ROWS).subquery()
        lengths = [sa.func.coalesce(sa.func.length(sa.cast(c, sa.Text)), 0) for c in sample.c]
        total: sa.ColumnElement = lengths[0]
        for length in lengths[1:]:
            total = total + length
        row = _optional_row(conn, sa.select(sa.func.avg(total)))
        return None if row is None or row[0] is None else int(row[0]) + 8 * len(lengths)

    def read_key_range(self, conn: Connection) -> tuple[int, int] | None:
        """The smallest and largest key, when the key is a single integer primary key: its index
        answers at once. Unfiltered (a `where` could make it scan); None otherwise."""
        if not (self.keys_unique and len(self.compare) == 1):
            return None
        column = self.compare[0]
        row = _optional_row(conn, sa.select(sa.func.min(column), sa.func.max(column)))
        if row is None or row[0] is None or row[1] is None:
            return None
        low, high = int(row[0]), int(row[1])
        return (low, high) if -(2**63) <= low <= high < 2**63 else None

    def prepare_predicates(self, conn: Connection) -> None:
        """Have the database compile `where` and `soft_delete` as the scan uses them, with
        `LIMIT 0`: no row is read. A mistake in one (a misspelt column, bad SQL) is a config
        error about that field here, in `check` and before a run reads anything (SPEC §7),
        instead of a failed read later."""
        table = self.info.table
        for name, predicate in (("soft_delete", self.soft_delete), ("where", self.where)):
            if predicate is None:
                continue
            if name == "soft_delete":
                probe = sa.select(sa.case((sa.literal_column(f"({predicate})"), 1), else_=0))
            else:
                probe = sa.select(sa.literal(1)).where(sa.literal_column(f"({predicate})"))
            try:
                with conn.begin_nested():  # a refusal must not end the snapshot's transaction
                    conn.execute(probe.select_from(table).limit(0)).fetchall()
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated or is_timeout(exc):
                    raise  # about the database, not the predicate
                refusal = ConfigError(
                    f"{self.database.name} refused this {name} on {self.info.label}: "
                    f"{self.database.reason(exc)}",
                    (self.role, name),
                )
                raise said_by(refusal, exc) from None

    def refused(self, error: DatabaseError) -> AuditorError:
        """A failed read that this side's `where`/`soft_delete` caused is a config error
        about that field (SPEC §7): a data exception (SQLSTATE class 22, e.g. a cast of a
        value that is no number, which compiling with LIMIT 0 cannot find) or a mistake in
        SQL (class 42). The rest of the statement is auditor's own, built from reflected
        columns. (The driver's message has no data value in it: see engines.without_values.)"""
        fields = [n for n, p in (("where", self.where), ("soft_delete", self.soft_delete)) if p]
        if not fields or (error.sqlstate or "")[:2] not in ("22", "42"):
            return error
        return error.carried(
            ConfigError(
                f"{self.database.name} failed reading {self.info.label} with this "
                f"{' or '.join(fields)}: {error.reason}",
                (self.role, fields[0]) if len(fields) == 1 else (self.role,),
            )
        )

    def sql(self, since: Any = None) -> str:
        """The scan query as text for the fast drivers, which run it as it is. A cluster
        slice narrows the scan only: look-ups by key (recheck, aliases) read the whole table."""
        query = self.select(since=since)
        if self.scan_slice is not None:
            query = query.where(self.scan_slice.condition(self))
        return literal_sql(query, self.database.engine.dialect)

    def lookup_index_hint(self, columns: tuple[sa.Column, ...]) -> str | None:
        """`CREATE INDEX ...` that would serve look-ups on `columns`, or None when one exists."""
        names = [c.name for c in columns]
        if self.info.has_index_on(names):
            return None
        table = self.info.table
        index = sa.Index(f"ix_{table.name}_{'_'.join(names)}"[:60], *[table.c[n] for n in names])
        return str(sa.schema.CreateIndex(index).compile(dialect=self.database.engine.dialect))


@dataclass(frozen=True)
class StoreSidePlan(SidePlan):
    """A side of a store other than SQL: values as text, rows named by the store (file and
    line, a Redis key) in r*, no SQL predicates."""

    def display_type(self, column: sa.Column) -> pa.DataType:
        return pa.int64() if isinstance(column.type, sa.Integer) else pa.string()

    @property
    def keys_unique(self) -> bool:
        return False

    @property
    def pushes(self) -> bool:
        return False

    @property
    def repeated(self) -> dict[str, str]:
        return {}

    def _wanted(self) -> list[str]:
        """The store's columns the outputs other than the row names (r*) come from."""
        return list(dict.fromkeys(c.name for n, c in self._outputs() if n[0] != LABEL))

    def _named(self, batch: pa.RecordBatch, labels: dict[str, str]) -> pa.RecordBatch:
        """A store's batch (its row names under `labels`' keys, columns by name) as the
        outputs `select` would name them; a column may stand in two outputs."""
        outputs = [(n, c.name) for n, c in self._outputs() if n[0] != LABEL]
        outputs += [(output, stored) for stored, output in labels.items()]
        return pa.RecordBatch.from_arrays(
            [batch.column(c) for _, c in outputs], names=[n for n, _ in outputs]
        )

    def read_again(self, by: str, wanted: list[tuple]) -> Iterator[pa.RecordBatch]:
        """The rows whose labels (`by="labels"`) are `wanted`, read again from the store."""
        raise NotImplementedError

    def prepare_predicates(self, conn: Connection) -> None:
        """No SQL here (a `where` on such a side is refused while planning)."""

    def lookup_index_hint(self, columns: tuple[sa.Column, ...]) -> str | None:
        return None


def _optional_row(conn: Connection, query: sa.Select) -> sa.Row | None:
    """One row of a planning query, or None when the database refuses it (the plan then does
    without); a lost connection is raised: it is no reason to plan blind."""
    try:
        with conn.begin_nested():  # a failure must not end the snapshot's transaction
            return conn.execute(query).first()
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        return None


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

    @property
    def partition_range(self) -> tuple[int, int] | None:
        """The key range to partition by ranges instead of by remainders (scan.partition_of),
        or None.

        Only for a single integer key that is the primary key of both sides (a copy keyed like
        its source), spanning at most DENSE_SPAN_PER_ROW values per row (ids from a sequence):
        ranges are then about equally full, and sides read in key order, as such tables are
        usually stored, land in their partitions in runs, without being reordered. (With only
        one side in key order the gain is small, and W3's peak grew 25-30 MB.) Keys outside
        the range go to the first or last partition; one that comes out too big is split again
        as always.
        """
        ranges = [s.key_range for s in (self.left, self.right)]
        if self.key_types != ("int",) or None in ranges:
            return None
        rows = max(s.info.estimated_rows or 0 for s in (self.left, self.right))
        low = min(r[0] for r in ranges if r)
        high = max(r[1] for r in ranges if r)
        return (low, high) if rows > 0 and high - low < DENSE_SPAN_PER_ROW * rows else None


UNTYPED = "auditor.untyped"  # column info: text whose key type is the other side's

# A side of a store other than SQL: (rule, role, side, store) -> its StoreSidePlan.
SidePlanner = Callable[[Rule, str, TableSide, Any], "SidePlan"]
_STORES: dict[type, SidePlanner] = {}


def register_store(store: type, planner: SidePlanner) -> None:
    """Plan the sides of `store`'s databases with `planner` (each store module registers
    itself; docs/architecture.md, Stores)."""
    _STORES[store] = planner


def plan_sides(
    rule: Rule, databases: dict[str, Database], check: bool = False, roles: set[str] | None = None
):
    """The rule's sides by role: reflected, planned and their row width sampled, each
    database's in one read-only snapshot, databases at once (one thread each: reflection and
    the sample wait on the servers). The first error in role order is raised, as if the sides
    had been planned one by one.

    `check` (for `auditor check`): indexes are reflected too (lookup_index_hint), and no data
    row is read, so widths are not sampled. `roles`: only these sides (auditor.verify plans
    a rule's source alone).
    """
    groups: dict[str, list[tuple[str, TableSide]]] = {}
    for role, side in rule.sides().items():
        if roles is None or role in roles:
            groups.setdefault(side.db, []).append((role, side))

    def plan_group(group: list[tuple[str, TableSide]]) -> list[SidePlan]:
        database = databases[group[0][1].db]
        planner = _STORES.get(type(database))
        if planner is not None:
            return [planner(rule, role, side, database) for role, side in group]
        for role, side in group:
            for option in ("value", "require_ttl"):
                if getattr(side, option):
                    raise ConfigError(
                        f"{option} is for Redis sides; {side.db} is SQL", (role, option)
                    )
        planned = []
        with database.snapshot() as conn:
            for role, side in group:
                try:
                    info = reflect_table(database, conn, side.table, indexes=check)
                except ConfigError as exc:
                    raise exc.at(role, "table") from None
                side_plan = _side_plan(rule, role, database, info)
                side_plan.prepare_predicates(conn)
                if not check:
                    side_plan = replace(
                        side_plan,
                        row_bytes=side_plan.sample_row_bytes(conn),
                        key_range=side_plan.read_key_range(conn),
                    )
                planned.append(side_plan)
        return planned

    if len(groups) == 1:
        done = [plan_group(group) for group in groups.values()]
    else:
        with ThreadPoolExecutor(len(groups), thread_name_prefix="plan") as pool:
            done = list(pool.map(plan_group, groups.values()))
    return {side.role: side for group in done for side in group}


def _side_plan(rule: Rule, role: str, database: Database, info: TableInfo) -> SidePlan:
    """Which columns one side reads and under which predicates, by its role in the rule.
    A column that does not exist is a ConfigError about the config field that names it."""

    def cols(names: list[str], *loc: str) -> tuple[sa.Column, ...]:
        return columns_of(info, names, *loc)

    def changed(side: TableSide, role: str) -> sa.Column | None:
        name = getattr(side, "changed", None)
        return None if name is None else cols([name], role, "changed")[0]

    def predicate(text: str | None, *loc: str) -> str | None:
        if text is None:
            return None
        from auditor import predicates  # sqlglot (~70 ms to import) only for rules with one

        names = [c.name for c in info.table.c]
        try:
            return predicates.checked(text, database.engine.dialect.name, info.table.name, names)
        except ConfigError as exc:
            raise exc.at(*loc) from None

    if isinstance(rule, ReferenceRule):
        if role == "from":
            key = rule.from_.key
            labels = cols(key, "from", "key") if key else cols(_primary_key(info, role), role)
            extracted = extraction(rule.from_, info, "from", rule)
            return SidePlan(
                role,
                database,
                info,
                side_columns(rule, info, role, extracted)[0],
                labels=labels,
                where=predicate(rule.from_.where, "from", "where"),
                extract=extracted,
                changed=changed(rule.from_, "from"),
            )
        if role == "to":
            return SidePlan(
                role,
                database,
                info,
                cols(rule.to.columns, "to", "columns"),
                where=predicate(rule.to.where, "to", "where"),
                soft_delete=predicate(rule.to.soft_delete, "to", "soft_delete"),
                changed=changed(rule.to, "to"),
            )
        assert rule.aliases is not None
        return SidePlan(
            role,
            database,
            info,
            cols(rule.aliases.old, "aliases", "old"),
            values=cols(rule.aliases.new, "aliases", "new"),
            where=predicate(rule.aliases.where, "aliases", "where"),
        )
    if role == "source":
        return SidePlan(
            role,
            database,
            info,
            cols(rule.source.key, "source", "key"),
            values=field_columns(info, rule, "source"),
            where=predicate(rule.source.where, "source", "where"),
            changed=changed(rule.source, "source"),
        )
    row_key = rule.copy_.row_key
    labels = cols(row_key, "copy", "row_key") if row_key else cols(_primary_key(info, role), role)
    extracted = extraction(rule.copy_, info, "copy", rule)
    compare, values = side_columns(rule, info, role, extracted)
    return SidePlan(
        role,
        database,
        info,
        compare,
        labels=labels,
        values=values,
        where=predicate(rule.copy_.where, "copy", "where"),
        extract=extracted,
        changed=changed(rule.copy_, "copy"),
    )


def referring_or_copying(
    rule: Rule, role: str, side: TableSide, store: tuple[str, str], named: str, refused: dict
) -> bool:
    """For a store that is read whole, never looked up by key: whether the side is a
    reference's `from` (True) or a pii `copy` (False). Any other side, or an option in
    `refused` (option -> why; `named` says why for the reference's `key` or the copy's
    `row_key`: the store names its rows), is a config error. `store`: what the database is and
    what its sides are called, e.g. ("cache is a Redis keyspace", "Redis sides")."""
    what, sides = store
    referring = isinstance(rule, ReferenceRule) and role == "from"
    if not (referring or (isinstance(rule, PiiRule) and role == "copy")):
        raise ConfigError(
            f"{what}: it can be a reference rule's `from` or a pii rule's `copy` side, not "
            "this one (a referenced or source side is looked up by key)",
            (role, "db"),
        )
    refused = {**refused, "key" if referring else "row_key": named}
    for option, why in refused.items():
        if getattr(side, option, None) not in (None, False):
            raise ConfigError(f"{option} is not for {sides} ({what}): {why}", (role, option))
    return referring


def store_side(kind, role: str, store: Any, info: TableInfo, compare, options) -> SidePlan:
    """A StoreSidePlan: `store` stands where a SidePlan holds its SQL Database, every part of
    which the subclass overrides."""
    return kind(role, store, info, compare, **options)


def extraction(side: TableSide, info: TableInfo, role: str, rule: Rule) -> Extraction | None:
    """The side's `extract`: on the side that refers or copies, whose rows are read whole (a
    side looked up by key cannot be: its keys are inside text)."""
    extract = getattr(side, "extract", None)
    if extract is None:
        return None
    source = column_of(info, extract.column, (role, "extract", "column"))
    if isinstance(rule, ReferenceRule):
        return Extraction(source, re.compile(extract.pattern), tuple(rule.from_.columns))
    fields = tuple(f.copy_ for f in rule.fields)
    return Extraction(source, re.compile(extract.pattern), tuple(rule.copy_.key), fields)


def extracted_columns(names: list[str]) -> tuple[sa.Column, ...]:
    """The columns `extract` makes: text, a key taking the other side's key type."""
    return tuple(sa.Column(name, sa.Text(), info={UNTYPED: True}) for name in names)


def side_columns(
    rule: Rule, info: TableInfo, role: str, extracted: Extraction | None
) -> tuple[tuple[sa.Column, ...], tuple[sa.Column, ...]]:
    """The compared columns and PII value columns of a reference's `from` or a pii `copy`,
    whatever its store: made by its `extract`, or the table's own."""
    if isinstance(rule, ReferenceRule):
        names = rule.from_.columns
        return (
            extracted_columns(names) if extracted else columns_of(info, names, role, "columns")
        ), ()
    if extracted:
        return extracted_columns(rule.copy_.key), extracted_columns([f.copy_ for f in rule.fields])
    return columns_of(info, rule.copy_.key, role, "key"), field_columns(info, rule, "copy")


def field_columns(info: TableInfo, rule: PiiRule, side: str) -> tuple[sa.Column, ...]:
    """A pii rule's field columns on its `source` or `copy` side."""
    names = [f.source if side == "source" else f.copy_ for f in rule.fields]
    return tuple(column_of(info, n, ("fields", i, side)) for i, n in enumerate(names))


def columns_of(info: TableInfo, names: list[str], *loc: str) -> tuple[sa.Column, ...]:
    """The named columns; a missing one is a ConfigError about `loc`[i]."""
    return tuple(column_of(info, name, (*loc, i)) for i, name in enumerate(names))


def column_of(info: TableInfo, name: str, loc: tuple[str | int, ...]) -> sa.Column:
    try:
        return info.column(name)
    except ConfigError as exc:
        raise exc.at(*loc) from None


def build_plan(rule: Rule, databases: dict[str, Database], check: bool = False) -> RulePlan:
    """Plan the rule's sides (see plan_sides) and resolve key types."""
    sides = plan_sides(rule, databases, check)
    if isinstance(rule, ReferenceRule):
        left, right = sides["from"], sides["to"]
        key_types = resolve_key_types(rule, left.compare, right.compare)
        return RulePlan(rule, left, right, key_types, aliases=sides.get("aliases"))
    left, right = sides["copy"], sides["source"]
    key_types = resolve_key_types(rule, left.compare, right.compare)
    normalizers = tuple(compile_pipeline(f.normalize) for f in rule.fields)
    return RulePlan(rule, left, right, key_types, normalizers=normalizers)


def _primary_key(table: TableInfo, role: str) -> list[str]:
    if not table.primary_key:
        option = "key" if role == "from" else "row_key"
        raise ConfigError(
            f"table {table.label} has no primary key: set {role}.{option} to the columns that "
            "name a row in findings",
            (role, "table"),
        )
    return list(table.primary_key)


def resolve_key_types(rule: Rule, left: tuple[sa.Column, ...], right: tuple[sa.Column, ...]):
    """Canonical form per key position; `auto` refuses pairs whose meaning is ambiguous."""
    if rule.key_type != "auto":
        return tuple(rule.key_type for _ in left)
    try:
        return tuple(_auto_key_type(rule, a, b) for a, b in zip(left, right, strict=True))
    except ConfigError as exc:
        compared = ("from", "columns") if isinstance(rule, ReferenceRule) else ("copy", "key")
        raise exc.at(*compared) from None


def _auto_key_type(rule: Rule, a: sa.Column, b: sa.Column) -> str:
    if a.info.get(UNTYPED) or b.info.get(UNTYPED):  # text from a file or a match: as the other
        known = b if a.info.get(UNTYPED) else a
        return {"int": "int", "uuid": "uuid"}.get(category(known), "string")
    kinds = {category(a), category(b)}
    if kinds == {"int"}:
        return "int"
    if "uuid" in kinds and kinds <= {"uuid", "string"}:
        return "uuid"
    if kinds == {"string"} or kinds == {"other"}:
        return "string"
    described = f"{a.table.name}.{a.name} ({a.type}) vs {b.table.name}.{b.name} ({b.type})"
    raise ConfigError(
        f"key types differ: {described}; set key_type: int (compare numeric "
        "values, '0042' = 42) or key_type: string (compare exact text)"
    )


def display(columns, row: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Key text back to the column's own kind: integers as numbers, the rest as text."""
    shown: dict[str, Any] = {}
    for i, column in enumerate(columns):
        value = row[f"{prefix}{i}"]
        if type(value) is str and category(column) == "int":  # read as text (MariaDB)
            with contextlib.suppress(ValueError):
                value = int(value)
        shown[column.name] = value
    return shown
