"""Incremental runs (SPEC §11): read what changed, and prove nothing else could have.

A referencing (or copy) row's outcome depends on its own values and on the state of the key
it points at. So, with the state a rule kept from its last run (the referenced/source side's
keys as groups: how many rows hold each, whether all are soft-deleted and, for pii, a hash of
their fields; the labels of the rows that were findings; a watermark on the referencing
side's `changed` column), a run reads:

- the referencing rows changed since the watermark (`changed >= watermark`; the watermark is
  the newest value seen minus `change_lag_s`, so a row committed late or stamped by a clock
  that went back within the lag is read again);
- the referenced side: whole (held in memory or into partitions, as a full run does: its
  keys are what tells deleted, soft-deleted, restored, added and edited keys from the state),
  or, where it has a `changed` column and one unique integer key, as a delta (`read_delta`):
  its rows changed since its own watermark, plus the server's key counts per key range
  against the state's, which find the deletes that move no `changed` column;
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
import sqlalchemy as sa

from auditor import log
from auditor.batch import DELETED, LABEL, VALUE, SideRows, key_names, names_of
from auditor.config.model import PiiRule
from auditor.db.reflect import unsigned_64
from auditor.hashing import fnv1a
from auditor.plan import RulePlan, StoreSidePlan
from auditor.recheck import fetched
from auditor.suggest import anchor_hashes

STATE_VERSION = 3
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
    right_since: Any = None
    next_right_watermark: Any = None
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
        if self._right_changed is not None:
            with self.plan.right.database.snapshot() as conn:
                newest = conn.execute(sa.select(sa.func.max(self._right_changed))).scalar()
            self.next_right_watermark = _minus_lag(newest, self.lag_s)

    @property
    def _right_changed(self) -> sa.Column | None:
        """The referenced/source side's `changed` column, where this run uses it."""
        right = self.plan.right
        if reads_delta(self.plan) or (
            isinstance(self.plan.rule, PiiRule) and not isinstance(right, StoreSidePlan)
        ):
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
            and "h_min" in previous.column_names
            and self._right_changed is not None
            and self.right_since is not None
        )

    def _edited_keys(self) -> pa.Table:
        side = self.plan.right
        rows_of = SideRows.of(side, self.plan.key_types)
        keys = key_names(len(self.plan.key_types))
        tables = [rows_of.empty_table().select(keys)]
        for raw in side.stream_changed(EDITED_BATCH, self.right_since):
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
            pq = _parquet()
            groups = pq.read_table(self.folder / meta["groups"])
            groups = groups.combine_chunks()  # one array a column: numpy views, no copies
            if not _sorted_integers(keys, groups) or not _ascending(groups["c0"]):
                groups = groups.sort_by([(k, "ascending") for k in keys])  # by partition
            labels = pq.read_table(self.folder / meta["findings"])
            self.since = _loaded(meta["watermark"])
            self.right_since = _loaded(meta.get("right_watermark"))
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
            self._writer = _parquet().ParquetWriter(path, groups.schema, **_compact(groups))
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
        _parquet().write_table(labels, self.folder / names["findings"], compression="zstd")
        meta = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "watermark": _stored(self.next_watermark),
            "right_watermark": _stored(self.next_right_watermark),
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


def _parquet() -> Any:
    """pyarrow.parquet, imported when a state is read or written: with it, pyarrow.fs and its
    S3 bindings, ~35 ms of every run's start that only `--incremental` uses."""
    import pyarrow.parquet

    return pyarrow.parquet


def _compact(table: pa.Table) -> dict[str, Any]:
    """Parquet options for sorted key groups: integer columns delta-encoded (a sorted id
    column of 200k keys: 2.3 bytes a key with dictionaries and zstd, 0.02 delta-encoded);
    hashes (`h_min`, `a_min`: random bits) as they are."""
    hashes = [f.name for f in table.schema if f.name in ("h_min", "a_min")]
    integers = [f.name for f in table.schema
                if pa.types.is_integer(f.type) and f.name not in hashes]  # fmt: skip
    return {
        "compression": "zstd",
        "use_dictionary": [f.name for f in table.schema if f.name not in integers + hashes],
        "column_encoding": {
            **dict.fromkeys(integers, "DELTA_BINARY_PACKED"),
            **dict.fromkeys(hashes, "PLAIN"),
        },  # fmt: skip
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
    pii = isinstance(plan.rule, PiiRule) and not reads_delta(plan)  # see Delta: no hashes
    if pii and edited is None:
        columns["h"] = _row_hashes(right)
        aggregates.append(("h", "min"))  # a duplicated key is not compared: one hash will do
    if indexes_anchors(plan):
        columns["a"] = pa.array(anchor_hashes(plan, right))
    table = pa.table(columns)
    if plan.right.keys_unique:  # an integer primary key: one row a key, nothing to count
        hashes = [name for name in ("h", "a") if name in columns]
        grouped = table.select([*keys, DELETED, *hashes])
        names = [*keys, DELETED + "_min", *(f"{name}_min" for name in hashes)]
        grouped = grouped.rename_columns(names)
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


def _ascending(column: pa.ChunkedArray) -> bool:
    keys = column.to_numpy()
    return bool(np.all(keys[1:] > keys[:-1]))


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


# A delta read (see read_delta) holds the state's keys in memory (~9 bytes each): bigger
# referenced sides are read whole, partition by partition, as before.
DELTA_MAX_KEYS = 20_000_000
# More rows changed than this share of the side (or this many): reading it whole is as cheap.
DELTA_MAX_CHANGED = 0.2
DELTA_MAX_CHANGED_ROWS = 2_000_000
BUCKET_KEYS = 1024  # keys per bucket the server first counts (a few thousand rows come back)
FANOUT = 32  # a bucket that differs is counted again in this many, down to this many keys
RANGES_PER_QUERY = 100


def reads_delta(plan: RulePlan) -> bool:
    """Whether the referenced/source side can be read as a delta: a SQL table with `changed`
    whose compared column is its integer primary key (one row a key, ordered, and what the
    server can count by range)."""
    right = plan.right
    return (
        not isinstance(right, StoreSidePlan)
        and right.changed is not None
        and plan.key_types == ("int",)
        and right.keys_unique
        and not unsigned_64(right.compare[0])
    )


def indexes_anchors(plan: RulePlan) -> bool:
    """Whether the state keeps, per source key, the hash of its anchor field: a pii rule
    read as a delta suggests keys from it (suggest.suggest_by_anchor), the source unread."""
    rule = plan.rule
    return isinstance(rule, PiiRule) and rule.suggest_keys and reads_delta(plan)


@dataclass
class Delta:
    """The referenced/source side as a delta read found it, against the state's keys."""

    groups: pa.Table  # the next state's key groups (key, count, soft-deleted)
    changed: list[tuple]  # keys whose referencing rows must be read again


def read_delta(state: RuleState, before: pa.Table, rows: dict[str, int]) -> Delta | None:
    """Read the referenced/source side as what changed since the state, in one snapshot:

    - its rows whose `changed` is at the side's own watermark or past it (new, edited,
      soft-deleted or restored rows: their `changed` moved);
    - the server's count, min and max of the keys per range of ~BUCKET_KEYS keys (an
      index-only read; a few thousand rows come back), against those the state and the
      changed rows expect: a delete moves no `changed` column, but it lowers a count. A range
      that differs is counted again in FANOUT parts, down to FANOUT keys;
    - the rows of the ranges that still differ, to tell which keys were deleted (or inserted
      without moving `changed`: these are taken as changed too).

    Returns None (read the side whole) when the state is too big to hold here or too much
    changed for this to be cheaper. (A delete and an insert that did not move `changed`, in
    the same smallest range, with the same smallest and largest key, would go unseen: an
    insert must set `changed`.)"""
    side, since, plan = state.plan.right, state.right_since, state.plan
    if since is None or before.num_rows > DELTA_MAX_KEYS or "c0" not in before.column_names:
        return None
    anchors = indexes_anchors(plan)
    if anchors and "a_min" not in before.column_names:
        return None
    try:
        return _read_delta(state, before, rows, anchors)
    except sa.exc.DBAPIError as exc:
        raise side.database.read_error(exc) from None  # its statement is in exc


def _read_delta(
    state: RuleState, before: pa.Table, rows: dict[str, int], anchors: bool
) -> Delta | None:
    side, since, plan = state.plan.right, state.right_since, state.plan
    assert side.changed is not None
    rows_of = SideRows.of(side, plan.key_types)
    column = side.compare[0]
    recent = side.changed >= sa.literal(since, side.changed.type)
    with side.database.snapshot() as conn:
        moved = conn.execute(_counted(side, recent)).scalar_one()
        if moved > max(BUCKET_KEYS, min(DELTA_MAX_CHANGED * len(before), DELTA_MAX_CHANGED_ROWS)):
            log.event("incremental_delta_skipped", rule=plan.rule.name, changed=moved)
            return None
        changed = fetched(conn, side, rows_of, side.select(since=since))
        expected = _with_keys(before["c0"].to_numpy(), changed["c0"].to_numpy())
        ranges, counted = _suspect_ranges(conn, side, column, expected)
        seen = [rows_of.empty_table()]
        for some in _chunks(ranges, RANGES_PER_QUERY):
            query = side.select().where(sa.or_(*(_in_range(column, *r) for r in some)))
            seen.append(fetched(conn, side, rows_of, query))
    suspects = pa.concat_tables(seen)
    rows[side.role] = changed.num_rows + counted + suspects.num_rows
    in_ranges = np.zeros(len(expected), dtype=bool)
    for low, high in ranges:
        in_ranges[_span(expected, low, high)] = True
    seen_keys = suspects["c0"].to_numpy()
    deleted = np.setdiff1d(expected[in_ranges], seen_keys)  # a few keys each
    unannounced = seen_keys[~_positions(expected, seen_keys)[1]]
    # The next state: the old keys less those changed, deleted or seen, plus the rows read now.
    fresh = pa.concat_tables([changed, suspects])
    fresh_groups = _delta_groups(plan, fresh, anchors)
    old_keys, fresh_keys = before["c0"].to_numpy(), fresh_groups["c0"].to_numpy()
    replaced = np.sort(np.concatenate([fresh_keys, deleted]))
    kept = ~_positions(replaced, old_keys)[1]
    at = np.searchsorted(old_keys[kept], fresh_keys)  # merged in place: one copy a column
    groups = pa.table({
        name: pa.array(np.insert(before[name].to_numpy()[kept], at, fresh_groups[name].to_numpy()))
        for name in fresh_groups.column_names
    })  # fmt: skip
    # Keys whose referencing rows are read again: gone, new, flagged or restored, and for pii
    # every changed row's (the state keeps no hash of the fields).
    flag = DELETED + "_min"
    where, found = _positions(old_keys, fresh_keys)
    same = found & (before[flag].to_numpy()[where] == fresh_groups[flag].to_numpy())
    if isinstance(plan.rule, PiiRule):
        same &= ~np.isin(fresh_keys, changed["c0"].to_numpy())
    moved_keys = np.unique(np.concatenate([deleted, unannounced, fresh_keys[~same]]))  # few
    log.event("incremental_delta", rule=plan.rule.name, changed=changed.num_rows,
              ranges=len(ranges), deleted=len(deleted), unannounced=len(unannounced))  # fmt: skip
    return Delta(groups, [(int(k),) for k in moved_keys])


def _delta_groups(plan: RulePlan, fresh: pa.Table, anchors: bool) -> pa.Table:
    """Key groups (as the state keeps them) of rows a delta read fetched, each key once."""
    keys = fresh["c0"].to_numpy()
    keys, first = np.unique(keys, return_index=True)  # a changed row seen twice: same values
    fresh = fresh.take(pa.array(first))
    if DELETED in fresh.column_names:
        flags = fresh[DELETED].combine_chunks().cast(pa.int8())
    else:
        flags = pa.array(np.zeros(len(keys), dtype=np.int8))
    columns = {"c0": pa.array(keys, pa.int64()), DELETED + "_min": flags}
    if anchors:
        columns["a_min"] = pa.array(anchor_hashes(plan, fresh))
    return pa.table(columns)


def _with_keys(keys: np.ndarray, more: np.ndarray) -> np.ndarray:
    """Sorted unique `keys` with `more` added (numpy's union1d hashes all 2M keys: 0.5 s)."""
    more = np.unique(more)
    more = more[~_positions(keys, more)[1]]
    return np.insert(keys, np.searchsorted(keys, more), more)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _span(keys: np.ndarray, low: int | None, high: int | None) -> slice:
    """The positions of sorted `keys` within [low, high] (None: unbounded)."""
    a = 0 if low is None else int(np.searchsorted(keys, low, "left"))
    b = len(keys) if high is None else int(np.searchsorted(keys, high, "right"))
    return slice(a, b)


def _counted(side: Any, *conditions: Any) -> sa.Select:
    """`count(*)` of the side's rows (its `where` applied) under `conditions`."""
    query = sa.select(sa.func.count()).select_from(side.info.table)
    return _filtered(side, query).where(*conditions)


def _filtered(side: Any, query: sa.Select) -> sa.Select:
    if side.where:
        query = query.where(sa.literal_column(f"({side.where})"))
    return query


def _in_range(column: sa.Column, low: int | None, high: int | None) -> sa.ColumnElement:
    if low is None and high is None:
        return sa.true()
    if low is None:
        return column <= sa.literal(high, column.type)
    if high is None:
        return column >= sa.literal(low, column.type)
    return column.between(sa.literal(low, column.type), sa.literal(high, column.type))


Range = tuple[int | None, int | None]


def _suspect_ranges(
    conn: Any, side: Any, column: sa.Column, expected: np.ndarray
) -> tuple[list[Range], int]:
    """Key ranges (low, high; None: unbounded) whose rows may not be what `expected` (sorted)
    says, narrowed by the server's count/min/max per bucket; and how many bucket rows came
    back. Buckets are FANOUT powers wide, so a finer one lies within one coarser bucket."""
    if not len(expected):
        present = conn.execute(_counted(side)).scalar_one()
        return ([(None, None)] if present else []), 1
    low, high = int(expected[0]), int(expected[-1])
    wanted = max(1, len(expected) // BUCKET_KEYS)
    width = FANOUT
    while (high - low) // width + 1 > wanted:
        width *= FANOUT
    ranges: list[Range] = [(low, high)]
    counted = 1
    while True:
        differing: list[Range] = []
        for some in _chunks(ranges, RANGES_PER_QUERY):
            found, rows = _differing_buckets(conn, side, column, expected, some, low, width)
            differing += found
            counted += rows
        ranges = differing
        if width <= FANOUT or not ranges:
            break
        width //= FANOUT
    outside = sa.or_(column < sa.literal(low, column.type), column > sa.literal(high, column.type))
    if conn.execute(_counted(side, outside)).scalar_one():
        ranges += [(None, low - 1), (high + 1, None)]
    return ranges, counted


def _differing_buckets(
    conn: Any,
    side: Any,
    column: sa.Column,
    expected: np.ndarray,
    ranges: list[Range],
    origin: int,
    width: int,
) -> tuple[list[Range], int]:
    """The buckets (`width` keys from `origin`) within `ranges` whose count, min or max on the
    server differs from `expected`'s."""
    bucket = (column - sa.literal(origin, column.type)) // sa.literal(width, column.type)
    query = _filtered(
        side,
        sa.select(bucket, sa.func.count(), sa.func.min(column), sa.func.max(column))
        .select_from(side.info.table)
        .where(sa.or_(*(_in_range(column, *r) for r in ranges))),
    ).group_by(bucket)
    server = {int(b): (int(n), int(lo), int(hi)) for b, n, lo, hi in conn.execute(query)}
    ours: dict[int, tuple[int, int, int]] = {}
    for low, high in ranges:
        keys = expected[_span(expected, low, high)]
        numbers = (keys - origin) // width
        starts = np.flatnonzero(np.r_[True, numbers[1:] != numbers[:-1]][: len(keys)])
        for start, end in zip(starts, [*starts[1:], len(keys)], strict=True):
            number = int(numbers[start])
            n, lo, hi = ours.get(number, (0, int(keys[start]), int(keys[end - 1])))
            ours[number] = (n + end - start, min(lo, int(keys[start])), max(hi, int(keys[end - 1])))
    found: list[Range] = [
        (origin + number * width, origin + (number + 1) * width - 1)
        for number in sorted(server.keys() | ours.keys())
        if server.get(number) != ours.get(number)
    ]
    return found, len(server)
