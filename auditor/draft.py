"""`auditor init` (SPEC §13): a draft config from the schemas of two or more databases.

Nothing in a schema says that `reviews.product_id` in one database holds ids of `products` in
another; names and values do. A candidate reference is a column whose name points at a table
of another database (`product_id`, `productId`, `product` or `product_ref` at `products`'s
primary key; `product_uid` at its `uid` column; a key-like column of the same name, such as
`sku` or `account_no`; all columns of a composite primary key), with compatible types. Each
candidate is then measured the way the inclusion-dependency literature (SPIDER, BINDER) does
it, on a sample: up to `--sample` distinct values among the column's first rows,
canonicalised as a run would (`checks.base.canonical_key`), looked up by key in the
candidate's table (`recheck`'s look-up), plus those an alias table maps. A column keeps its
best candidate: a name that points at a primary key needs one sampled value found (audited
data is expected to hold orphans), a weaker one 30%.

A reference whose two tables also hold the same kind of personal data (email, phone, a
person's name: by column name, emails by value shape too) becomes a pii rule instead: its
`missing_source` findings are the reference's orphans. Soft-delete columns (`deleted`,
`is_deleted`, `deleted_at`) and alias tables (`<entity>*aliases` with old/new id columns) of
the referenced side are recognised. Every rule carries its evidence as a comment; sample
values are never written, only counts. Passwords in URLs become `${NAME_PASSWORD}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
import yaml
from sqlalchemy.exc import ArgumentError

from auditor.batch import KEY, SideRows
from auditor.checks.base import canonical_key
from auditor.config.model import DatabaseConfig
from auditor.db.engines import Database, open_database
from auditor.db.reflect import TableInfo, category, reflect_table
from auditor.errors import ConfigError
from auditor.plan import SidePlan
from auditor.recheck import fetched, key_condition

SAMPLE = 1000
SAMPLE_ROWS_PER_VALUE = 10  # rows read per distinct value wanted, at most
STRONG, MEDIUM = 2, 1  # how much a name says: at a primary key, or at a key-like column
MEDIUM_SHARE = 0.3  # sampled values found that a MEDIUM candidate needs
ID_SUFFIXES = ("", "id", "ref", "key", "pk", "fk")
KEY_LIKE = re.compile(r"(^|_)(sku|uid|uuid|code|no|number|key|ref|slug|isbn|ean|gtin)$")
SOFT_DELETE_FLAGS = ("deleted", "is_deleted", "removed", "is_removed", "archived")
SOFT_DELETE_TIMES = ("deleted_at", "removed_at", "deleted_on")
OLD_COLUMNS = ("old_id", "old", "from_id", "retired_id", "previous_id", "source_id")
NEW_COLUMNS = ("new_id", "new", "to_id", "current_id", "target_id")
NAME_RULE = ["nfkc", "trim", "collapse_spaces", "casefold"]
EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+$")
UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def snake(name: str) -> str:
    """`productId` -> `product_id`, `Product-ID` -> `product_id`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def singular(name: str) -> str:
    """The entity a table holds: `products` -> `product`, `categories` -> `category`."""
    word = snake(name)
    for plural, one in (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"), ("shes", "sh")):
        if word.endswith(plural):
            return word[: -len(plural)] + one
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


@dataclass
class Table:
    database: Database
    info: TableInfo

    @property
    def name(self) -> str:
        return self.info.table.name

    @property
    def columns(self) -> list[sa.Column]:
        return list(self.info.table.c)

    def column(self, name: str) -> sa.Column | None:
        return next((c for c in self.columns if snake(c.name) == snake(name)), None)

    def key_like(self, column: sa.Column) -> bool:
        """Part of the primary key, indexed, or named like a key (sku, *_no, uid...)."""
        return (
            column.name in self.info.primary_key
            or self.info.has_index_on([column.name])
            or bool(KEY_LIKE.search(snake(column.name)))
        )


@dataclass
class Candidate:
    """`source` columns of `referencing` that may hold keys of `target` columns of `referenced`."""

    referencing: Table
    source: tuple[sa.Column, ...]
    referenced: Table
    target: tuple[sa.Column, ...]
    strength: int
    why: str
    key_types: tuple[str, ...] = ()
    sampled: int = 0
    found: int = 0
    via_alias: int = 0
    aliases: Table | None = None
    alias_columns: tuple[str, str] | None = None

    @property
    def share(self) -> float:
        return (self.found + self.via_alias) / self.sampled if self.sampled else 0.0

    @property
    def accepted(self) -> bool:
        if self.sampled == 0:
            return self.strength == STRONG
        if self.strength == STRONG:
            return self.found + self.via_alias > 0
        return self.share >= MEDIUM_SHARE


@dataclass
class Draft:
    databases: dict[str, Database]
    urls: dict[str, str]
    rules: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (evidence, rule)

    def yaml(self) -> str:
        """The draft as commented YAML that `auditor check` accepts."""
        lines = [
            "# Drafted by `auditor init`: review every rule before relying on it.",
            "# Each rule's comment says why it was proposed (names, types, sampled overlap).",
            "version: 1",
            "databases:",
        ]
        for name, url in self.urls.items():
            lines.append(f"  {name}: {{url: {yaml.safe_dump(url, default_style=chr(34)).strip()}}}")
        lines += ["settings: {max_findings: 1000}", "rules:"]
        if not self.rules:
            lines[-1] = "rules: []  # nothing looked like a reference across these databases"
        for evidence, rule in self.rules:
            lines += [f"  # {line}" for line in evidence.splitlines()]
            plain = json.loads(json.dumps(rule))  # reflected names are str subclasses
            body = yaml.safe_dump([plain], sort_keys=False, allow_unicode=True, width=100)
            lines += [f"  {line}" if line else line for line in body.rstrip().splitlines()]
        return "\n".join(lines) + "\n"


def draft_config(
    urls: Sequence[str], sample: int = SAMPLE, phone_region: str = "US", timeout_s: int = 60
) -> Draft:
    """Reflect every database, find and measure candidate references, propose rules."""
    if len(urls) < 2:
        raise ConfigError("init needs the URLs of two or more databases")
    databases: dict[str, Database] = {}
    shown: dict[str, str] = {}
    try:
        for position, url in enumerate(urls, 1):
            try:
                name = _unique(_database_name(url), databases)
            except ArgumentError:
                raise ConfigError(f"URL {position}: not a database URL") from None
            databases[name] = open_database(name, DatabaseConfig(url=url), timeout_s)
            shown[name] = shown_url(url, name)
        tables = {name: _tables(database) for name, database in databases.items()}
        draft = Draft(databases, shown)
        used: set[str] = set()
        for candidate in _references(tables, sample):
            evidence, rule = _rule(candidate, phone_region)
            rule["name"] = _unique(rule["name"], used)
            used.add(rule["name"])
            draft.rules.append((evidence, rule))
        return draft
    finally:
        for database in databases.values():
            database.engine.dispose()


def _database_name(url: str) -> str:
    parsed = sa.make_url(url)
    raw = parsed.database or parsed.host or "db"
    stem = raw.rsplit("/", 1)[-1].split(".")[0]
    return snake(stem) or "db"


def _unique(name: str, taken: Any) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def shown_url(url: str, name: str) -> str:
    """The URL as the draft writes it: a password becomes `${NAME_PASSWORD}`."""
    parsed = sa.make_url(url)
    if parsed.password is None:
        return url
    variable = f"${{{name.upper()}_PASSWORD}}"
    return parsed.set(password="PASSWORD").render_as_string(False).replace("PASSWORD", variable, 1)


def _tables(database: Database) -> list[Table]:
    with database.snapshot() as conn:
        names = sa.inspect(conn).get_table_names(schema=database.schema)
        return [Table(database, reflect_table(database, conn, n, indexes=True)) for n in names]


def _references(tables: dict[str, list[Table]], sample: int) -> list[Candidate]:
    """The accepted candidates: per referencing column set, the best one."""
    best: dict[tuple, Candidate] = {}
    for db, own in tables.items():
        others = [t for other, ts in tables.items() if other != db for t in ts]
        for table in own:
            if _alias_columns(table):
                continue  # an alias table refers by design; it is attached to rules instead
            for candidate in _candidates(table, others):
                _measure(candidate, tables, sample)
                if not candidate.accepted:
                    continue
                where = (table.database.name, table.name, *(c.name for c in candidate.source))
                held = best.get(where)
                rank = (candidate.strength, candidate.share)
                if held is None or rank > (held.strength, held.share):
                    best[where] = candidate
    return _one_direction(list(best.values()))


def _one_direction(candidates: list[Candidate]) -> list[Candidate]:
    """Of two candidates that are each other's reverse (`sku` in two tables), the one whose
    values are found more often; on a tie, the one whose column name starts with the target's
    entity (`account_no` -> accounts), then the one pointing at a table other references point
    at by its primary key (the hub: products, not wishlist_items), then at an index."""
    hubs = {id(c.referenced.info) for c in candidates if c.strength == STRONG}

    def rank(c: Candidate) -> tuple:
        indexed = c.referenced.info.has_index_on([col.name for col in c.target])
        named = snake(c.source[0].name).startswith(singular(c.referenced.name) + "_")
        return round(c.share, 2), named, id(c.referenced.info) in hubs, indexed

    def ends(c: Candidate) -> tuple:
        return (id(c.referencing.info), tuple(x.name for x in c.source)), (
            id(c.referenced.info),
            tuple(x.name for x in c.target),
        )

    by_ends = {ends(c): c for c in candidates}
    kept = []
    for candidate in candidates:
        start, end = ends(candidate)
        reverse = by_ends.get((end, start))
        if reverse is None or rank(candidate) > rank(reverse):
            kept.append(candidate)
        elif rank(candidate) == rank(reverse) and id(candidate) < id(reverse):
            kept.append(candidate)  # nothing tells them apart: keep one, its comment says so
    return kept


def _candidates(table: Table, others: list[Table]) -> list[Candidate]:
    found: list[Candidate] = []
    for other in others:
        if _alias_columns(other):
            continue
        primary = other.info.primary_key
        if len(primary) > 1:
            found += _composite(table, other)
        for column in table.columns:
            named = _named_target(column, other)
            if named is None:
                continue
            target, strength, why = named
            key_type = _key_type(column, target)
            if key_type is not None:
                found.append(
                    Candidate(table, (column,), other, (target,), strength, why, (key_type,))
                )
    return found


def _composite(table: Table, other: Table) -> list[Candidate]:
    """`other`'s composite primary key, when `table` holds all its columns (not as its own)."""
    primary = other.info.primary_key
    source = [table.column(name) for name in primary]
    columns = tuple(c for c in source if c is not None)
    if len(columns) != len(primary) or tuple(c.name for c in columns) == table.info.primary_key:
        return []
    target = tuple(other.info.table.c[n] for n in primary)
    types = [_key_type(a, b) for a, b in zip(columns, target, strict=True)]
    if None in types:
        return []
    why = f"holds every column of {other.name}'s primary key"
    key_types = tuple(t or "string" for t in types)
    return [Candidate(table, columns, other, target, MEDIUM, why, key_types)]


def _named_target(column: sa.Column, other: Table) -> tuple[sa.Column, int, str] | None:
    """The column of `other` that `column`'s name points at, how strongly, and why."""
    name, entity = snake(column.name), singular(other.name)
    primary = other.info.primary_key
    if name == "id" or _pii_kind(column):  # personal data is compared as fields, not keys
        return None
    if name == entity or name.startswith(entity + "_"):
        rest = name[len(entity) + 1 :]
        if rest in ID_SUFFIXES and len(primary) == 1:
            why = f"`{column.name}` names {other.name} (primary key {primary[0]})"
            return other.info.table.c[primary[0]], STRONG, why
        named = other.column(rest) if rest else None
        if named is not None:
            return named, MEDIUM, f"`{column.name}` names {other.name}.{named.name}"
    same = other.column(column.name)
    if same is None or snake(same.name) == "id" or not other.key_like(same):
        return None
    single_key = len(primary) == 1 and same.name in primary
    if single_key or (not _pii_kind(same) and KEY_LIKE.search(name)):
        return same, MEDIUM, f"same key-like name as {other.name}.{same.name}"
    return None


def _key_type(column: sa.Column, target: sa.Column) -> str | None:
    kinds = {category(column), category(target)}
    if len(kinds) == 1:
        kind = kinds.pop()
        return kind if kind in ("int", "uuid") else "string"
    if kinds in ({"int", "string"}, {"uuid", "string"}):
        return (kinds - {"string"}).pop()
    return None


def _measure(candidate: Candidate, tables: dict[str, list[Table]], sample: int) -> None:
    """Sample distinct values of the referencing columns; count those found in the target
    (and, for a primary key, those an alias table of its database maps)."""
    table, source = candidate.referencing, candidate.source
    present = sa.and_(*(c.isnot(None) for c in source))
    # No DISTINCT: on a big table without an index it reads every row before the first comes
    # back. The first SAMPLE_ROWS_PER_VALUE * sample rows, made distinct here, stop early.
    query = sa.select(*source).where(present).limit(SAMPLE_ROWS_PER_VALUE * sample)
    with table.database.snapshot() as conn:
        rows = list(dict.fromkeys(tuple(row) for row in conn.execute(query)))[:sample]
    if not rows:
        return
    if candidate.key_types == ("string",) and _looks_like_uuids([r[0] for r in rows]):
        candidate.key_types = ("uuid",)
    keys = _canonical(rows, candidate.key_types)
    candidate.sampled = len(rows)
    if not keys:
        return
    found = _look_up(candidate.referenced, candidate.target, candidate.key_types, keys)
    candidate.found = len(found)
    referenced = candidate.referenced
    if len(candidate.target) == 1 and candidate.target[0].name in referenced.info.primary_key:
        for other in tables[referenced.database.name]:
            names = _alias_columns(other)
            if names and singular(referenced.name) in snake(other.name):
                candidate.aliases, candidate.alias_columns = other, names
                old = (other.info.table.c[names[0]],)
                mapped = _look_up(other, old, candidate.key_types, keys - found)
                candidate.via_alias = len(mapped)
                break


def _looks_like_uuids(values: list[Any]) -> bool:
    texts = [str(v).strip() for v in values]
    return sum(bool(UUID_SHAPE.match(t)) for t in texts) >= 0.8 * len(texts)


def _canonical(rows: Sequence[Any], key_types: tuple[str, ...]) -> set[tuple]:
    columns = []
    for i, key_type in enumerate(key_types):
        values = [r[i] for r in rows]
        ints = all(type(v) is int for v in values)
        array = pa.array(values if ints else [str(v) for v in values])
        columns.append(canonical_key(array, key_type).to_pylist())
    return {key for key in zip(*columns, strict=True) if None not in key}


def _look_up(
    table: Table, columns: tuple[sa.Column, ...], key_types: tuple[str, ...], keys: set[tuple]
) -> set[tuple]:
    """The keys of `keys` that `columns` of `table` hold (the recheck's look-up)."""
    side = SidePlan("draft", table.database, table.info, columns)
    rows_of = SideRows.of(side, key_types)
    dialect = table.database.dialect
    condition = key_condition(dialect, columns, "compare", key_types, sorted(keys, key=str))
    with table.database.snapshot() as conn:
        held = fetched(conn, side, rows_of, side.select().where(condition))
    names = [f"{KEY}{i}" for i in range(len(columns))]
    held = held.filter(pc.invert(pc.is_null(held[names[0]])))
    return {key for key in zip(*(held[n].to_pylist() for n in names), strict=True)} & keys


def _alias_columns(table: Table) -> tuple[str, str] | None:
    """(old, new) columns when the table looks like an alias table (`*aliases`)."""
    if "alias" not in snake(table.name):
        return None
    old = next((c.name for c in table.columns if snake(c.name) in OLD_COLUMNS), None)
    new = next((c.name for c in table.columns if snake(c.name) in NEW_COLUMNS), None)
    return (old, new) if old and new else None


def _soft_delete(table: Table) -> str | None:
    for column in table.columns:
        name = snake(column.name)
        if name in SOFT_DELETE_FLAGS and isinstance(column.type, sa.Boolean | sa.Integer):
            return f"{column.name} = TRUE"
        if name in SOFT_DELETE_TIMES:
            return f"{column.name} IS NOT NULL"
    return None


def _pii_kind(column: sa.Column) -> str | None:
    if not isinstance(column.type, sa.String):
        return None
    name = snake(column.name)
    if "email" in name or name.endswith("mail"):
        return "email"
    if any(word in name.split("_") for word in ("phone", "tel", "mobile", "telephone")):
        return "phone"
    parts = name.split("_")
    if parts[-1] == "name" and not set(parts) & {"user", "product", "file", "table", "company"}:
        return "name:" + ("first" if "first" in parts else "last" if "last" in parts else "full")
    return None


def _pii_pairs(candidate: Candidate) -> list[tuple[str, sa.Column, sa.Column]]:
    """(kind, source column, copy column) for personal data both tables hold, one per kind."""
    used = {c.name for c in candidate.source}
    copies = {}
    for column in candidate.referencing.columns:
        kind = _pii_kind(column)
        if kind and column.name not in used and kind not in copies:
            copies[kind] = column
    pairs: list[tuple[str, sa.Column, sa.Column]] = []
    for column in candidate.referenced.columns:
        kind = _pii_kind(column)
        if kind in copies and not any(k == kind for k, _, _ in pairs):
            pairs.append((kind, column, copies[kind]))
    return pairs


def _email_shaped(table: Table, column: sa.Column) -> bool:
    query = sa.select(column).where(column.isnot(None)).limit(100)
    with table.database.snapshot() as conn:
        values = [str(v).strip() for (v,) in conn.execute(query) if str(v).strip()]
    return not values or sum(bool(EMAIL_SHAPE.match(v)) for v in values) >= 0.8 * len(values)


def _rule(candidate: Candidate, phone_region: str) -> tuple[str, dict[str, Any]]:
    referencing, referenced = candidate.referencing, candidate.referenced
    source_names = [c.name for c in candidate.source]
    target_names = [c.name for c in candidate.target]
    arrow = (
        f"{referencing.database.name}.{referencing.name}({', '.join(source_names)}) -> "
        f"{referenced.database.name}.{referenced.name}({', '.join(target_names)})"
    )
    types = ", ".join(
        f"{a.type}/{b.type}" for a, b in zip(candidate.source, candidate.target, strict=True)
    )
    measured = (
        f"{candidate.found:,} of {candidate.sampled:,} sampled distinct values found "
        f"({candidate.share:.0%})"
        if candidate.sampled
        else "no values to sample (empty table)"
    )
    if candidate.via_alias:
        aliases = candidate.aliases.name if candidate.aliases else "aliases"
        measured += f", {candidate.via_alias:,} of them through {aliases}"
    evidence = f"{arrow}\n{candidate.why}; types {types}; {measured}"
    name = f"{referencing.name}-{referenced.name}".replace("_", "-")
    # `auto` refuses integer against text, and takes text holding UUIDs as text: say which.
    pairs_of = list(zip(candidate.source, candidate.target, strict=True))
    declared = tuple(_key_type(a, b) for a, b in pairs_of)
    mixed = any({category(a), category(b)} == {"int", "string"} for a, b in pairs_of)
    extra: dict[str, Any] = {}
    if len(set(candidate.key_types)) == 1 and (mixed or candidate.key_types != declared):
        extra["key_type"] = candidate.key_types[0]
    pairs = [
        p for p in _pii_pairs(candidate)
        if p[0] != "email" or (_email_shaped(referenced, p[1]) and _email_shaped(referencing, p[2]))
    ]  # fmt: skip
    if pairs:
        fields = []
        for kind, source, copy in pairs:
            normalize: list[Any] = ["email"] if kind == "email" else list(NAME_RULE)
            if kind == "phone":
                normalize = [{"phone": {"region": phone_region}}]
            fields.append({"source": source.name, "copy": copy.name, "normalize": normalize})
        kinds = ", ".join(f"{k.split(':')[0]} ({c.name} ~ {s.name})" for k, s, c in pairs)
        evidence += f"\ncopies of {kinds}: a pii rule (its missing_source findings are orphans)"
        if any(k == "phone" for k, _, _ in pairs):
            evidence += f"\nphone numbers are read in region {phone_region}: set yours"
        return evidence, {
            "name": f"{name}-pii",
            "type": "pii",
            **extra,
            "source": {
                "db": referenced.database.name,
                "table": referenced.name,
                "key": target_names,
            },
            "copy": {
                "db": referencing.database.name,
                "table": referencing.name,
                "key": source_names,
            },
            "fields": fields,
        }
    to: dict[str, Any] = {
        "db": referenced.database.name,
        "table": referenced.name,
        "columns": target_names,
    }
    soft = _soft_delete(referenced)
    if soft:
        to["soft_delete"] = soft
        evidence += f"\n{referenced.name} soft-deletes rows: {soft}"
    rule: dict[str, Any] = {
        "name": name,
        "type": "reference",
        **extra,
        "from": {
            "db": referencing.database.name,
            "table": referencing.name,
            "columns": source_names,
        },
        "to": to,
    }
    if candidate.aliases is not None and candidate.alias_columns is not None:
        old, new = candidate.alias_columns
        rule["aliases"] = {
            "db": referenced.database.name,
            "table": candidate.aliases.name,
            "old": [old],
            "new": [new],
        }
        evidence += f"\n{candidate.aliases.name} maps retired ids ({old} -> {new})"
    return evidence, rule
