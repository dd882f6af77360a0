"""Access-time verification (SPEC §13): one entity's PII, as a consumer supplied it, against
the source of truth, through the rule's own normalisers.

A service that loads an order with its copy of the customer's email can ask, at request time,
whether that copy still belongs to customer 42: `Verifier(config).verify("order-customer-pii",
{"customer_id": 42}, {"customer_email": "Jane@Example.com "})`. The comparison is the one
`auditor run` makes (checks.pii.check_copies on a one-row copy), so a verdict and a nightly
report never disagree about the same values. Only the rule's source is read: by its key (one
indexed look-up) and, when the values do not match, by the first supplied field that needs no
phone parsing (the rule's `suggest_keys` anchor), to name the row they do belong to.

Values never reach a log or an exception: errors name rules, fields and columns only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import sqlalchemy as sa

from auditor.batch import COMPARED, KEY, VALUE, SideRows, text_form
from auditor.checks.base import as_text, canonical_key
from auditor.config.loader import load_config
from auditor.config.model import Config, PiiRule
from auditor.db.engines import Database, open_database
from auditor.db.reflect import category
from auditor.errors import ConfigError
from auditor.normalize import Pipeline, compile_pipeline
from auditor.plan import SidePlan, display, plan_sides
from auditor.recheck import fetched, key_condition
from auditor.suggest import anchor_order

FieldStatus = Literal["match", "mismatch", "missing"]
POOL_SIZE = 4  # connections kept per source database (a web worker's threads share them)


@dataclass(frozen=True)
class Verdict:
    """What the source of truth says of the supplied values.

    `fields`: per supplied field (named as the caller named it) `match`, `mismatch`, or
    `missing` (one side has no value after normalising, or there is no source row).
    `suggested_key`: the one other source row every supplied value matches, if any: the key
    probably points at the wrong entity. `source_rows`: rows holding the key (0: missing
    source; more than 1: a duplicated key, a `duplicate_key` finding of `run`, never ok: a
    field matches only if it matches every row)."""

    rule: str
    key: dict[str, Any]
    fields: dict[str, FieldStatus]
    source_rows: int
    suggested_key: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.source_rows == 1 and all(s == "match" for s in self.fields.values())


@dataclass
class _RulePlan:
    """A pii rule's source side, planned once, and how to read supplied values like copies."""

    rule: PiiRule
    source: SidePlan
    key_types: tuple[str, ...]
    pipelines: tuple[Pipeline, ...]
    rows_of: SideRows
    anchor_order: list[int] = field(default_factory=list)  # fields to find a suggestion by

    def field_index(self, name: str) -> int:
        for index, spec in enumerate(self.rule.fields):
            if name in (spec.copy_, spec.source):
                return index
        known = ", ".join(f.copy_ for f in self.rule.fields)
        raise ConfigError(f"rule {self.rule.name!r}: no field {name!r}; its fields: {known}")


class Verifier:
    """Keeps connections (a small read-only pool per source database) and planned rules for
    repeated `verify` calls; safe to share between threads. Close it (or use `with`)."""

    def __init__(self, config: Config | str | os.PathLike[str], pool_size: int = POOL_SIZE):
        self.config = config if isinstance(config, Config) else load_config(Path(config))
        self._pool_size = pool_size
        self._databases: dict[str, Database] = {}
        self._plans: dict[str, _RulePlan] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for database in self._databases.values():
                database.engine.dispose()
            self._databases.clear()

    def verify(self, rule: str, key: Mapping[str, Any] | Any, values: Mapping[str, Any]) -> Verdict:
        """Compare `values` (by the rule's copy or source field names; fields left out are not
        compared) with the source row of `key` (by the rule's source or copy key column names,
        or the bare value of a one-column key)."""
        plan = self._plan(rule)
        wanted = self._key(plan, key)
        supplied = {plan.field_index(name): (name, value) for name, value in values.items()}
        if not supplied:
            raise ConfigError(f"rule {rule!r}: verify needs at least one field value")
        source = plan.source
        condition = key_condition(
            source.database.dialect, source.compare, "compare", plan.key_types, [wanted]
        )
        rows = self._read(source, plan.rows_of, source.select().where(condition))
        given = self._given(plan, supplied)
        kinds: dict[int, FieldStatus] = {}
        for row in rows.to_pylist():  # several: a duplicated key, each row must match
            for index, kind in self._compare(plan, given, row).items():
                kinds.setdefault(index, kind)
        statuses: dict[str, FieldStatus] = {
            name: "missing" if rows.num_rows == 0 else kinds.get(index, "match")
            for index, (name, _) in supplied.items()
        }
        suggested = None
        mismatched = any(s != "match" for s in statuses.values())
        if plan.rule.suggest_keys and rows.num_rows <= 1 and mismatched:
            suggested = self._suggest(plan, wanted, given)
        shown_key = dict(zip([c.name for c in source.compare], wanted, strict=True))
        return Verdict(rule, shown_key, statuses, rows.num_rows, suggested)

    @staticmethod
    def _read(side: SidePlan, rows_of: SideRows, query: sa.Select) -> pa.Table:
        """One statement on a pooled connection (its own read-only transaction); a connection
        the server dropped since it was pooled is replaced once (no ping before each use: that
        would be a second round trip per call)."""
        database = side.database
        for attempt in (1, 2):
            try:
                with database.engine.connect() as conn:
                    return fetched(conn, side, rows_of, query, few=True)
            except sa.exc.DBAPIError as exc:
                if not (exc.connection_invalidated and attempt == 1):
                    raise database.read_error(exc) from None
            except OSError as exc:
                raise database.read_error(exc) from None
        raise AssertionError("unreachable")

    def _plan(self, name: str) -> _RulePlan:
        with self._lock:
            if name not in self._plans:
                self._plans[name] = self._planned(name)
            return self._plans[name]

    def _planned(self, name: str) -> _RulePlan:
        try:
            rule = self.config.rule(name)
        except KeyError:
            known = ", ".join(r.name for r in self.config.rules if isinstance(r, PiiRule))
            raise ConfigError(f"no rule {name!r}; pii rules: {known or 'none'}") from None
        if not isinstance(rule, PiiRule):
            raise ConfigError(f"rule {name!r} is a {rule.type} rule; verify takes pii rules")
        db = rule.source.db
        if db not in self._databases:
            settings = self.config.settings
            opened = open_database(
                db, self.config.databases[db], settings.statement_timeout_s, self._pool_size
            )
            self._databases[db] = opened
        try:
            source = plan_sides(rule, self._databases, check=True, roles={"source"})["source"]
        except ConfigError as exc:
            raise self.config.config_error(exc, "rules", self.config.rules.index(rule)) from None
        key_types = tuple(
            rule.key_type
            if rule.key_type != "auto"
            else {"int": "int", "uuid": "uuid"}.get(category(column), "string")
            for column in source.compare
        )
        pipelines = tuple(compile_pipeline(f.normalize) for f in rule.fields)
        order = anchor_order(rule)
        return _RulePlan(rule, source, key_types, pipelines, SideRows.of(source, key_types), order)

    def _key(self, plan: _RulePlan, key: Mapping[str, Any] | Any) -> tuple:
        """The canonical key tuple of `key`, named by source or copy key columns."""
        rule, width = plan.rule, len(plan.key_types)
        if not isinstance(key, Mapping):
            if width != 1:
                raise ConfigError(f"rule {rule.name!r}: the key has {width} columns; name them")
            key = {rule.source.key[0]: key}
        parts = []
        for position, (source_name, copy_name) in enumerate(
            zip(rule.source.key, rule.copy_.key, strict=True)
        ):
            name = source_name if source_name in key else copy_name
            if name not in key:
                raise ConfigError(f"rule {rule.name!r}: the key needs {source_name!r}")
            value = key[name]
            if value is None:
                raise ConfigError(f"rule {rule.name!r}: key {name!r} is None")
            array = (
                pa.array([value], pa.int64())
                if type(value) is int and -(2**63) <= value < 2**63
                else pa.array([str(value)], pa.string())
            )
            parts.append(canonical_key(array, plan.key_types[position])[0].as_py())
        extra = set(key) - set(rule.source.key) - set(rule.copy_.key)
        if extra:
            raise ConfigError(f"rule {rule.name!r}: not a key column: {sorted(extra)[0]!r}")
        if None in parts:
            raise ConfigError(f"rule {rule.name!r}: the key is not a valid {plan.key_types}")
        return tuple(parts)

    def _given(self, plan: _RulePlan, supplied: dict[int, tuple]) -> dict[int, str | None]:
        """The supplied values as text, each in its source column's text form (SideRows)."""
        source = plan.rows_of.schema
        given: dict[int, str | None] = {}
        for index, (_, value) in supplied.items():
            if value is None:
                given[index] = None
                continue
            text = as_text(pa.array([value], pa.string() if type(value) is str else None))
            given[index] = text_form(source.field(f"{VALUE}{index}"), text)[0].as_py()
        return given

    @staticmethod
    def _compare(
        plan: _RulePlan, given: dict[int, str | None], row: dict[str, Any]
    ) -> dict[int, FieldStatus]:
        """Each supplied field against one source row, as checks.pii compares a copy: raw
        equal (or both missing) is a match, else both sides go through the field's pipeline
        (its Python form, which the vectorised one `run` uses is tested to equal)."""
        kinds: dict[int, FieldStatus] = {}
        for index, text in given.items():
            source = row[f"{VALUE}{index}"]
            if source == text:
                continue
            pipeline = plan.pipelines[index]
            normal_source, normal_given = pipeline(source), pipeline(text)
            if (normal_source is None) != (normal_given is None):
                kinds[index] = "missing"
            elif normal_source != normal_given:
                kinds[index] = "mismatch"
        return kinds

    def _suggest(
        self, plan: _RulePlan, wanted: tuple, given: dict[int, str | None]
    ) -> dict[str, Any] | None:
        """The one other source row every supplied value matches, found by the anchor field's
        value as supplied or normalised (an indexed look-up), or None."""
        anchor = next((i for i in plan.anchor_order if given.get(i) is not None), None)
        if anchor is None:
            return None
        raw = given[anchor]
        forms = sorted({form for form in (raw, plan.pipelines[anchor](raw)) if form})
        source = plan.source
        query = source.select().where(source.values[anchor].in_(forms))
        candidates = self._read(source, plan.rows_of, query.limit(MAX_CANDIDATES + 1))
        if candidates.num_rows > MAX_CANDIDATES:
            return None
        width = len(plan.key_types)
        rows = candidates.to_pylist()
        keys = [tuple(row[f"{KEY}{i}"] for i in range(width)) for row in rows]
        matched = [
            (key, row)
            for key, row in zip(keys, rows, strict=True)
            if key != wanted and not self._compare(plan, given, row)
        ]
        if len(matched) != 1 or keys.count(matched[0][0]) > 1:  # none, several, or duplicated
            return None
        return display(source.compare, matched[0][1], COMPARED)


MAX_CANDIDATES = 50  # rows sharing the anchor value; more (a shared inbox): no suggestion


def verify(
    config: Config | str | os.PathLike[str],
    rule: str,
    key: Mapping[str, Any] | Any,
    values: Mapping[str, Any],
) -> Verdict:
    """One verification with connections opened and closed for it; a service verifying on
    every request keeps a `Verifier` instead (its pool saves a connection per call)."""
    with Verifier(config, pool_size=1) as verifier:
        return verifier.verify(rule, key, values)
