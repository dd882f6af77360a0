"""Incremental runs (SPEC §11): read what changed, and prove nothing else could have.

A referencing (or copy) row's outcome depends on its own values and on the state of the key
it points at. So, with the state a rule kept from its last run (the referenced/source side's
keys as groups: how many rows hold each, whether all are soft-deleted and, for pii, a hash of
their fields; the labels of the rows that were findings; a watermark on the referencing
side's `changed` column), a run reads:

- the referencing rows changed since the watermark (`changed >= watermark`; the watermark is
  the newest value seen minus `change_lag_s`, so a row committed late or stamped by a clock
  that went back within the lag is read again);
- the referenced side whole (held in memory or into partitions, as a full run does: its keys
  are what tells deleted, soft-deleted, restored, added and edited keys from the state);
- by key, the referencing rows pointing at any key whose group changed, and the rows of the
  last run's findings;

and checks exactly those against the referenced side. Every other row is unchanged and points
at an unchanged key that was fine: it is still fine. The result equals a full run's. A state
that is missing, unreadable or made under another rule or store is discarded (said once) and
the run is full; any run that ends without error stores the next state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from auditor import log
from auditor.batch import DELETED, LABEL, VALUE, SideRows, key_names, names_of
from auditor.config.model import PiiRule
from auditor.plan import RulePlan, StoreSidePlan

STATE_VERSION = 2
EDITED_BATCH = 50_000  # rows of a source changed since, read to hash again
META = "state.json"  # names the current generation's files: keys-<g>.parquet, findings-<g>...


@dataclass
class Incremental:
    """What `run --incremental` needs for a run: where states live and how far back to read."""

    folder: Path  # state_dir/<config name>/
    lag_s: int
    full: bool = False  # --full: read everything, then store the state

    def for_rule(self, plan: RulePlan) -> RuleState:
        return RuleState(self.folder / plan.rule.name, plan, self.lag_s, self.full)


@dataclass
class RuleState:
    """One rule's state on disk, and what this run learns for the next."""

    folder: Path
    plan: RulePlan
    lag_s: int
    full: bool
    reason: str | None = None  # why this run is full
    since: Any = None  # the watermark read from (incremental runs)
    next_watermark: Any = None
    # A pii source with its own `changed`: only its rows changed since are hashed again.
    source_since: Any = None
    next_source_watermark: Any = None
    labels: list[pa.Table] = field(default_factory=list)
    _edited: pa.Table | None = None  # keys of source rows changed since (see `groups`)
    _writer: Any = None  # the next state's key groups file, while it is written
    _generation: str = ""

    @property
    def supported(self) -> str | None:
        """Why the rule cannot run incrementally, or None."""
        left = self.plan.left
        if isinstance(left, StoreSidePlan):
            return f"{left.label} is not a SQL table"
        if left.changed is None:
            return f"{left.role} has no `changed` column: read in full"
        return None

    def fingerprint(self) -> str:
        """The rule and the stores it reads: a state made under others is not used."""
        plan = self.plan
        sides = [(s.role, s.database.redacted, s.info.label) for s in plan.sides]
        text = json.dumps([STATE_VERSION, plan.rule.fingerprint(), sides, plan.key_types])
        return hashlib.sha256(text.encode()).hexdigest()

    def read_watermark(self) -> None:
        """The newest `changed` value now, before anything is read (a row changed while the
        run reads is read again next time), minus the lag."""
        left = self.plan.left
        assert left.changed is not None
        with left.database.snapshot() as conn:
            newest = conn.execute(sa.select(sa.func.max(left.changed))).scalar()
        self.next_watermark = _minus_lag(newest, self.lag_s)
        if self._source_changed is not None:
            with self.plan.right.database.snapshot() as conn:
                newest = conn.execute(sa.select(sa.func.max(self._source_changed))).scalar()
            self.next_source_watermark = _minus_lag(newest, self.lag_s)

    @property
    def _source_changed(self) -> sa.Column | None:
        right = self.plan.right
        if isinstance(self.plan.rule, PiiRule) and not isinstance(right, StoreSidePlan):
            return right.changed
        return None

    def groups(self, right: pa.Table, previous: pa.Table | None) -> pa.Table:
        """The key groups of (a partition of) the referenced side now; `merged` completes
        them. A pii source with its own `changed` and a state: only the rows of keys changed
        since are hashed again (the keys are read after the side itself, so an edit made while
        it was read is seen next time); the other keys keep the state's hash."""
        if not self._reuses_hashes(previous):
            return key_groups(self.plan, right)
        if self._edited is None:
            self._edited = self._edited_keys()
        return key_groups(self.plan, right, self._edited)

    def merged(self, groups: pa.Table, previous: pa.Table | None) -> pa.Table:
        """All partitions' groups, sorted, their hashes completed from the state's."""
        keys = key_names(len(self.plan.key_types))
        groups = groups.sort_by([(k, "ascending") for k in keys])
        if not self._reuses_hashes(previous):
            return groups
        assert previous is not None
        if _sorted_integers(keys, groups, previous):
            rows, found = _positions(previous["c0"].to_numpy(), groups["c0"].to_numpy())
            earlier = previous["h_min"].combine_chunks().take(pa.array(rows))
            earlier = pc.if_else(pa.array(found), earlier, pa.nulls(len(found), pa.int64()))
        else:
            kept = previous.select([*keys, "h_min"]).rename_columns([*keys, "h_old"])
            earlier = groups.select(keys).join(kept, keys, join_type="left outer")
            earlier = earlier.sort_by([(k, "ascending") for k in keys])["h_old"]
        hashes = pc.coalesce(groups["h_new"], earlier)
        return groups.drop_columns(["h_new"]).append_column("h_min", hashes)

    def _reuses_hashes(self, previous: pa.Table | None) -> bool:
        return (
            previous is not None
            and self._source_changed is not None
            and self.source_since is not None
        )

    def _edited_keys(self) -> pa.Table:
        side = self.plan.right
        rows_of = SideRows.of(side, self.plan.key_types)
        keys = key_names(len(self.plan.key_types))
        tables = [rows_of.empty_table().select(keys)]
        for raw in side.stream_changed(EDITED_BATCH, self.source_since):
            tables.append(pa.Table.from_batches([rows_of.prepare(raw, side.repeated)]).select(keys))
        return pa.concat_tables(tables).group_by(keys).aggregate([])

    def load(self) -> tuple[pa.Table, pa.Table] | None:
        """(key groups, finding labels) of the last run, or None (said why) for a full run."""
        if self.full:
            self.reason = "--full"
            return None
        meta_path = self.folder / META
        if not meta_path.exists():
            self.reason = "no state yet"
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") != self.fingerprint():
                self.reason = "the rule or its stores changed since the state was stored"
                return None
            keys = key_names(len(self.plan.key_types))
            groups = pq.read_table(self.folder / meta["groups"])
            groups = groups.sort_by([(k, "ascending") for k in keys])  # by partition on disk
            labels = pq.read_table(self.folder / meta["findings"])
            self.since = _loaded(meta["watermark"])
            self.source_since = _loaded(meta.get("source_watermark"))
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            self.reason = f"the state could not be read ({type(exc).__name__})"
            return None
        return groups, labels

    def record(self, candidates: pa.Table) -> None:
        """The row labels of candidates: the rows the next run reads again by key."""
        names = names_of(candidates, LABEL)
        if candidates.num_rows:
            self.labels.append(candidates.select(names))

    def write_groups(self, groups: pa.Table) -> None:
        """Add (a partition's) key groups to the next state's file, written as they come."""
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._generation = uuid.uuid4().hex[:12]
            path = self.folder / f"keys-{self._generation}.parquet"
            self._writer = pq.ParquetWriter(path, groups.schema, **_compact(groups))
        self._writer.write_table(groups)

    def save(self, groups: pa.Table | None = None) -> None:
        """Store the next state: new files first (`groups`, or those `write_groups` wrote),
        then `state.json` naming them, atomically replaced; a crash in between leaves the
        last state whole."""
        if groups is not None:
            self.write_groups(groups)
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        generation = self._generation
        names = {
            "groups": f"keys-{generation}.parquet",
            "findings": f"findings-{generation}.parquet",
        }
        schema = _label_schema(self.plan)
        labels = pa.concat_tables([t.cast(schema) for t in self.labels] or [schema.empty_table()])
        pq.write_table(labels, self.folder / names["findings"], compression="zstd")
        meta = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "watermark": _stored(self.next_watermark),
            "source_watermark": _stored(self.next_source_watermark),
            "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **names,
        }
        temporary = self.folder / f"{META}.{generation}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(meta, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.folder / META)
        for old in self.folder.iterdir():
            if old.suffix == ".parquet" and generation not in old.name:
                with contextlib.suppress(OSError):
                    old.unlink()


def _compact(table: pa.Table) -> dict[str, Any]:
    """Parquet options for sorted key groups: integer columns delta-encoded (a sorted id
    column of 200k keys: 2.3 bytes a key with dictionaries and zstd, 0.02 delta-encoded)."""
    integers = [f.name for f in table.schema if pa.types.is_integer(f.type)]
    return {
        "compression": "zstd",
        "use_dictionary": [f.name for f in table.schema if f.name not in integers],
        "column_encoding": dict.fromkeys(integers, "DELTA_BINARY_PACKED"),
    }


def key_groups(plan: RulePlan, right: pa.Table, edited: pa.Table | None = None) -> pa.Table:
    """The referenced/source side as its state keeps it: per canonical key, how many rows hold
    it, whether all of them are soft-deleted and (pii) a hash of their compared values; given
    the `edited` keys, only their rows are hashed (`h_new`; RuleState.merged completes it)."""
    keys = key_names(len(plan.key_types))
    right = right.filter(_all_valid(right, keys))
    columns = {name: right[name] for name in keys}
    if DELETED in right.column_names:
        columns[DELETED] = right[DELETED]
    else:
        columns[DELETED] = pa.array(np.zeros(right.num_rows, dtype=np.int8))
    aggregates: list[tuple[str, str]] = [(keys[0], "count"), (DELETED, "min")]
    pii = isinstance(plan.rule, PiiRule)
    if pii and edited is None:
        columns["h"] = _row_hashes(right)
        aggregates.append(("h", "min"))  # a duplicated key is not compared: one hash will do
    table = pa.table(columns)
    if plan.right.keys_unique:  # an integer primary key: one row a key, nothing to count
        grouped = table.select([*keys, DELETED, *(["h"] if "h" in columns else [])])
        names = [*keys, DELETED + "_min", *(["h_min"] if "h" in columns else [])]
        grouped = grouped.rename_columns(names)
        ones = pa.array(np.ones(grouped.num_rows, dtype=np.int64))
        grouped = grouped.add_column(len(keys), f"{keys[0]}_count", ones)
    else:
        grouped = table.group_by(keys).aggregate(aggregates)
    if pii and edited is not None:
        if len(keys) == 1:  # a membership test: an Acero join costs ~6 ms to start
            changed = right.filter(pc.is_in(right[keys[0]], value_set=edited[keys[0]]))
        else:
            changed = right.join(edited, keys, join_type="left semi")
        hashed = pa.table({**{k: changed[k] for k in keys}, "h": _row_hashes(changed)})
        fresh = hashed.group_by(keys).aggregate([("h", "min")]).rename_columns([*keys, "h_new"])
        grouped = grouped.join(fresh, keys, join_type="left outer")
    return grouped


def _all_valid(table: pa.Table, keys: list[str]) -> pa.Array:
    """Rows whose canonical key has no NULL part (others reference nothing)."""
    valid = pc.is_valid(table[keys[0]])
    for name in keys[1:]:
        valid = pc.and_(valid, pc.is_valid(table[name]))
    return valid


def changed_keys(plan: RulePlan, before: pa.Table, now: pa.Table) -> list[tuple]:
    """Canonical keys whose group differs between the state and now (deleted, added,
    soft-deleted, restored, duplicated or no longer, fields edited)."""
    keys = key_names(len(plan.key_types))
    if before.schema != now.schema:
        before = before.cast(now.schema)
    if _sorted_integers(keys, before, now):
        return _changed_integer_keys(before, now)
    joined = before.join(now, keys, join_type="full outer", left_suffix="_a", right_suffix="_b")
    differs = None
    for name in now.column_names:
        if name in keys:
            continue
        a, b = joined[f"{name}_a"], joined[f"{name}_b"]
        unequal = pc.or_kleene(
            pc.invert(pc.equal(pc.is_null(a), pc.is_null(b))),
            pc.fill_null(pc.not_equal(a, b), False),
        )
        differs = unequal if differs is None else pc.or_(differs, unequal)
    if differs is None:
        return []
    picked = joined.filter(differs)
    return list(zip(*(picked[k].to_pylist() for k in keys), strict=True))


def _sorted_integers(keys: list[str], *tables: pa.Table) -> bool:
    """One integer key column without NULLs: groups are sorted on it (key_groups, merged), so
    they are aligned by binary search instead of hash joins (2M keys: 1.0 -> 0.1 s)."""
    return len(keys) == 1 and all(
        pa.types.is_integer(t.schema.field("c0").type) and t["c0"].null_count == 0 for t in tables
    )


def _positions(sorted_keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted key: its row in `sorted_keys`, and whether it is there at all."""
    rows = np.searchsorted(sorted_keys, wanted)
    clipped = np.minimum(rows, max(len(sorted_keys) - 1, 0))
    found = (
        (rows < len(sorted_keys)) & (sorted_keys[clipped] == wanted)
        if len(sorted_keys)
        else (np.zeros(len(wanted), dtype=bool))
    )
    return clipped, found


def _changed_integer_keys(before: pa.Table, now: pa.Table) -> list[tuple]:
    old, new = (t["c0"].to_numpy() for t in (before, now))
    rows, found = _positions(old, new)
    differs = ~found
    for name in now.column_names:
        if name == "c0":
            continue
        current = now[name].combine_chunks()
        earlier = before[name].combine_chunks().take(pa.array(rows)) if len(old) else current
        same = pc.fill_null(pc.equal(current, earlier), False).to_numpy(zero_copy_only=False)
        both_null = (pc.is_null(current).to_numpy(zero_copy_only=False)
                     & pc.is_null(earlier).to_numpy(zero_copy_only=False))  # fmt: skip
        differs |= ~(same | both_null)
    gone = ~_positions(new, old)[1]
    keys = np.concatenate([new[differs], old[gone]])
    return [(int(key),) for key in keys]


def _row_hashes(right: pa.Table) -> pa.Array:
    """A hash of each row's compared values: joined in Arrow as `length:value|` (NULL as
    `-:`), so no two different rows join alike, then FNV-1a (64-bit) in numpy."""
    parts: list[pa.Array | str] = []
    for name in names_of(right, VALUE):
        values = right[name].combine_chunks()
        length = pc.cast(pc.utf8_length(values), pa.string())
        parts += [pc.fill_null(length, "-"), ":", pc.fill_null(values, ""), "|"]
    if not parts:
        return pa.array(np.zeros(right.num_rows, dtype=np.int64))
    joined = pc.binary_join_element_wise(*parts, "")
    return pa.array(fnv1a(joined).view(np.int64))


FNV_OFFSET, FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
FNV_ROWS = 65_536  # rows hashed together, shortest to longest (a byte position per step)


def fnv1a(texts: pa.Array) -> np.ndarray:
    """FNV-1a of each text's UTF-8 bytes, vectorised over rows: one numpy step per byte
    position (2M rows of ~40 bytes: 0.6 s; BLAKE2b in a Python loop took 1.5 s). Not for
    secrets: it tells a changed row from an unchanged one."""
    binary = texts.cast(pa.large_binary())
    count = len(binary)
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[
        binary.offset : binary.offset + count + 1
    ]
    data = binary.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    hashes = np.full(count, FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, count, FNV_ROWS):
            rows = np.arange(start, min(start + FNV_ROWS, count))
            sizes, base = lengths[rows], offsets[rows]
            state = hashes[rows]
            for position in range(int(sizes.max(initial=0))):
                live = np.flatnonzero(sizes > position)
                byte = data[base[live] + position].astype(np.uint64)
                state[live] = (state[live] ^ byte) * FNV_PRIME
            hashes[rows] = state
    return hashes


def _minus_lag(value: Any, lag_s: int) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value - dt.timedelta(seconds=lag_s)
    return value  # an increasing version: rows committed late are what the lag cannot cover


def _stored(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    return {"type": "text", "value": str(value)}


def _loaded(stored: dict[str, Any] | None) -> Any:
    if stored is None:
        return None
    kind, value = stored["type"], stored["value"]
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "int":
        return int(value)
    return value


def shown(value: Any) -> Any:
    """A watermark as the report shows it."""
    stored = _stored(value)
    return None if stored is None else stored["value"]


def left_rows(plan: RulePlan, lookups: Any, keys: list[tuple], labels: pa.Table) -> pa.Table:
    """The referencing rows read again by key (each once): those pointing at changed keys and
    those that were findings."""
    tables = [SideRows.of(plan.left, plan.key_types).empty_table()]
    if keys:
        tables.append(lookups.fetch(plan.left, "compare", [k for k in keys if None not in k]))
    if labels.num_rows:
        wanted = list(dict.fromkeys(zip(*(c.to_pylist() for c in labels.columns), strict=True)))
        tables.append(lookups.fetch(plan.left, "labels", wanted))
    table = pa.concat_tables(tables)
    seen: set[tuple] = set()
    keep = []
    for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
        keep.append(row not in seen)
        seen.add(row)
    return table.filter(pa.array(keep, pa.bool_()))


def _label_schema(plan: RulePlan) -> pa.Schema:
    schema = SideRows.of(plan.left, plan.key_types).schema
    return pa.schema([schema.field(n) for n in names_of(schema, LABEL)])


def without(batches: Iterator[pa.RecordBatch], read: pa.Table) -> Iterator[pa.RecordBatch]:
    """`batches` without the rows whose labels are in `read` (already read by key)."""
    names = names_of(read, LABEL)
    if not read.num_rows:
        yield from batches
        return
    taken = set(zip(*(read[n].to_pylist() for n in names), strict=True))
    for batch in batches:
        labels = zip(*(batch.column(n).to_pylist() for n in names), strict=True)
        keep = pa.array([row not in taken for row in labels], pa.bool_())
        yield batch.filter(keep)


def say(rule: str, reason: str) -> None:
    log.event("incremental_full", rule=rule, reason=reason)
