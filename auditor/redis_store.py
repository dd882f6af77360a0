"""A Redis keyspace as a store (SPEC §9): cache entries that refer or hold copies.

A side's `table` is a key pattern matched against the whole key: `{name}` captures one part
(up to the next literal character of the pattern, never across `:`), `*` matches anything.
Keys are found with SCAN (never KEYS) and matched again here, values read in pipelined
batches: `value: none` (keys only), `hash` (fields are columns), `json` (a string holding a
JSON object; dotted paths are columns) or `string` (the column `value`). Only SCAN, GET, HMGET,
EXISTS and (`require_ttl`) PTTL are sent: the store never writes. A key is read again by
the recheck, as a row is.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from auditor.batch import LABEL
from auditor.concurrency import read_ahead
from auditor.config.model import ReferenceRule, Rule, TableSide
from auditor.db.engines import redact, scrub
from auditor.db.reflect import TableInfo
from auditor.errors import ConfigError, DatabaseError
from auditor.files import dotted
from auditor.plan import (
    UNTYPED,
    SidePlan,
    StoreSidePlan,
    referring_or_copying,
    register_store,
    side_columns,
    store_side,
)
from auditor.result import Finding

REDIS_KEY = "redis_key"  # the key of a finding on a Redis side
KEY_COLUMN = "__key"  # how the key travels in a batch
SCAN_COUNT = 10_000
VALUES = ("none", "hash", "json", "string")


@dataclass(frozen=True)
class KeyPattern:
    """`product:{id}:*` as a SCAN glob and an anchored regex with one group per capture."""

    text: str
    glob: str
    regex: re.Pattern[str]
    captures: tuple[str, ...]
    re2: str  # the same regex as Arrow's extract_regex reads it

    @classmethod
    def parse(cls, text: str) -> KeyPattern:
        parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_.]*\}|\*)", text)
        glob, regex = "", ""
        captures: list[str] = []
        for index, part in enumerate(parts):
            if part == "*":
                glob, regex = glob + "*", regex + ".*"
            elif part.startswith("{") and part.endswith("}") and len(part) > 2:
                name = part[1:-1]
                if name in captures:
                    raise ConfigError(f"{{{name}}} appears twice in the key pattern")
                following = parts[index + 1] if index + 1 < len(parts) else ""
                stop = re.escape(following[0]) if following else ""
                group = f"g{len(captures)}"
                glob, regex = glob + "*", regex + f"(?P<{group}>[^:{stop}]+)"
                captures.append(name)
            else:
                glob += re.sub(r"([\[\]?*\\])", r"\\\1", part)
                regex += re.escape(part)
        if not captures and "*" not in text:
            raise ConfigError(
                "a key pattern needs a {capture} (the column compared), e.g. product:{id}"
            )
        return cls(
            text, glob, re.compile(f"^{regex}$", re.DOTALL), tuple(captures), f"(?s)^{regex}$"
        )

    def matches(self, key: bytes) -> bool:
        """Whether the whole key fits the pattern (SCAN's glob lets `*` cross `:`)."""
        return self.regex.match(key.decode("utf-8", "replace")) is not None


@dataclass
class RedisStore:
    """A `redis://` database: one connection (redis-py with hiredis) opened when first used."""

    name: str
    url: str
    unavailable: DatabaseError | None = None
    _client: Any = field(default=None, repr=False)

    @property
    def redacted(self) -> str:
        return redact(self.url)

    @property
    def client(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self.url, socket_connect_timeout=10, socket_timeout=60, decode_responses=False
            )
        return self._client

    def failure(self, exc: BaseException) -> DatabaseError:
        reason = scrub(
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, make_url(self.url)
        )
        return DatabaseError(f"cannot read database {self.name!r} ({self.redacted}): {reason}")

    def ping(self) -> None:
        import redis

        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise self.failure(exc) from None

    def warm_up(self) -> None:
        """Connected on first use."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def reflect(
        self, pattern: str, value: str, wanted: Iterable[str]
    ) -> tuple[TableInfo, KeyPattern]:
        """The side's columns: its captures, and (values other than `none`) the fields the
        rule names."""
        parsed = KeyPattern.parse(pattern)
        names = list(parsed.captures)
        if value != "none":
            names += [name for name in wanted if name not in names]
        elif unknown := [name for name in wanted if name not in names]:
            raise ConfigError(
                f"{unknown[0]!r} is no capture of {pattern!r} and value is none "
                f"(captures: {', '.join(parsed.captures) or 'none'})"
            )
        columns = (sa.Column(n, sa.Text(), info={UNTYPED: True}) for n in names)
        table = sa.Table(pattern, sa.MetaData(), *columns)
        return TableInfo(self.name, table, (), None, None), parsed

    def _pages(self, pattern: KeyPattern) -> Iterator[list[bytes]]:
        """The keys SCAN returns for the pattern's glob, page by page (COUNT 10000)."""
        cursor = 0
        while True:
            cursor, page = self.client.scan(cursor, match=pattern.glob, count=SCAN_COUNT)
            yield page
            if cursor == 0:
                return

    def stream(self, pattern: KeyPattern, value: str, columns: list[str], batch_rows: int):
        """Batches of (key, *columns) as text for every key the pattern matches, each key
        once (SCAN may return a key twice while the keyspace is rehashed): the set of keys
        seen is what grows with the keyspace (~60 bytes a key of 15 characters), kept by set
        operations in C (a Python loop per key was 1.2 s of 1M keys)."""
        import redis

        seen: set[bytes] = set()
        pending: list[bytes] = []
        try:
            # The next page is asked for while this one is made into a batch: SCAN waits on
            # the server (1M keys: scan 3.1 -> 2.4 s).
            for page in read_ahead(self._pages(pattern), threading.Event()):
                fresh = set(page)
                fresh.difference_update(seen)
                seen.update(fresh)
                pending.extend(fresh)
                while len(pending) >= batch_rows:
                    batch, pending = pending[:batch_rows], pending[batch_rows:]
                    yield self._batch(pattern, value, columns, batch)
            if pending:
                yield self._batch(pattern, value, columns, pending)
        except redis.RedisError as exc:
            raise self.failure(exc) from None

    def _pipelined(self, command: bytes, keys: list[bytes], args: list[bytes]) -> list[Any]:
        """`command key *args` for every key, sent as one packed write on one connection, the
        replies parsed in C by a hiredis reader of its own fed straight from the socket:
        redis-py's pipeline objects cost 12 us a command, its connection's read_response 3,
        this under 1. An error reply (WRONGTYPE: a key of another type) is returned, not
        raised."""
        import hiredis
        import redis

        tail = b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        head = b"*%d\r\n$%d\r\n%s\r\n" % (2 + len(args), len(command), command)
        packed = b"".join(head + b"$%d\r\n%s\r\n" % (len(k), k) + tail for k in keys)
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([packed])
            reader, chunk = hiredis.Reader(), bytearray(1 << 18)
            replies: list[Any] = []
            while len(replies) < len(keys):
                reply = reader.gets()
                if reply is not False:
                    replies.append(reply)
                    continue
                received = connection._sock.recv_into(chunk)  # connected by send_packed_command
                if not received:
                    raise redis.ConnectionError("Connection closed by server.")
                reader.feed(chunk, 0, received)  # type: ignore[arg-type]  # any buffer
            return replies
        except OSError as exc:  # the socket's own errors (a timeout, a reset)
            connection.disconnect()
            raise redis.ConnectionError(str(exc)) from None
        except BaseException:
            connection.disconnect()  # replies may be left unread on it
            raise
        finally:
            pool.release(connection)

    def keys_without_ttl(self, pattern: KeyPattern) -> Iterator[str]:
        """Every key the pattern matches that never expires (PTTL -1), read as it is now."""
        import redis

        try:
            for page in self._pages(pattern):
                raw = [key for key in page if pattern.matches(key)]
                for key, ttl in zip(raw, self._pipelined(b"PTTL", raw, []), strict=True):
                    if ttl == -1:
                        yield key.decode("utf-8", "replace")
        except redis.RedisError as exc:
            raise self.failure(exc) from None

    def ttl_sample(self, pattern: KeyPattern, size: int = 1000) -> tuple[int, int]:
        """(keys sampled, of which expire): the first `size` keys SCAN finds, for `check`."""
        import redis

        sampled: list[bytes] = []
        try:
            for page in self._pages(pattern):
                sampled += [key for key in page if pattern.matches(key)]
                if len(sampled) >= size:
                    break
            sampled = sampled[:size]
            ttls = self._pipelined(b"PTTL", sampled, [])
            expiring = sum(1 for ttl in ttls if isinstance(ttl, int) and ttl >= 0)
        except redis.RedisError as exc:
            raise self.failure(exc) from None
        return len(sampled), expiring

    def read_again(self, pattern: KeyPattern, value: str, columns: list[str], keys: list[str]):
        """The keys that still exist, as `stream` reads them (the recheck)."""
        import redis

        try:
            raw = [key.encode("utf-8", "surrogateescape") for key in keys]
            exists = self._pipelined(b"EXISTS", raw, [])
            alive = [key for key, found in zip(raw, exists, strict=True) if found == 1]
            return self._batch(pattern, value, columns, alive)
        except redis.RedisError as exc:
            raise self.failure(exc) from None

    def _batch(self, pattern: KeyPattern, value: str, columns: list[str], raw: list[bytes]):
        """The keys of one batch that match the whole pattern, their captures cut out in C
        (Arrow's RE2 reads the pattern's simple regex), and their values where wanted."""
        try:
            keys = pa.array(raw, pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:  # a key that is no UTF-8: shown with replacement characters
            keys = pa.array([k.decode("utf-8", "replace") for k in raw], pa.string())
        found = pc.extract_regex(keys, pattern.re2)
        matched = pc.is_valid(found)
        keys, found = keys.filter(matched), found.filter(matched)
        captured = {name: f"g{i}" for i, name in enumerate(pattern.captures)}
        fields = [c for c in columns if c not in captured]
        wanted = [key for key, ok in zip(raw, matched.to_pylist(), strict=True) if ok]
        values = self._values(value, fields, wanted) if fields and value != "none" else {}
        arrays: dict[str, pa.Array] = {KEY_COLUMN: keys}
        for name in columns:
            if name in captured:
                arrays[name] = found.field(captured[name])
            else:
                arrays[name] = values.get(name, pa.nulls(len(keys), pa.string()))
        return pa.RecordBatch.from_pydict(arrays)

    def _values(self, value: str, fields: list[str], keys: list[bytes]) -> dict[str, pa.Array]:
        """Each field's values for `keys` as text (None where absent, or where the key holds
        another type), decoded in C."""
        if value == "hash":
            replies = self._pipelined(b"HMGET", keys, [f.encode("utf-8") for f in fields])
            rows = [reply if isinstance(reply, list) else [None] * len(fields) for reply in replies]
            columns = list(zip(*rows, strict=True)) if rows else [()] * len(fields)
            return {f: _texts(list(c)) for f, c in zip(fields, columns, strict=True)}
        replies = self._pipelined(b"GET", keys, [])
        raw = [None if isinstance(reply, Exception) else reply for reply in replies]
        if value == "string":
            return {"value": _texts(raw)}
        documents = [_json_fields(reply, fields) for reply in raw]
        return {f: pa.array([d.get(f) for d in documents], pa.string()) for f in fields}


def _texts(raw: list[bytes | None]) -> pa.Array:
    """Bytes as text (UTF-8 checked in C); invalid UTF-8 shown with replacement characters."""
    try:
        return pa.array(raw, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in raw])


def _json_fields(raw: bytes | None, fields: list[str]) -> dict[str, Any]:
    try:
        document = json.loads(raw) if raw is not None else None
    except ValueError:
        return {}
    found: dict[str, Any] = {}
    for name in fields:
        item = dotted(document, name)
        if item is not None:
            found[name] = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
    return found


def is_redis_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisSidePlan(StoreSidePlan):
    """A side read from a Redis keyspace (auditor.redis_store): rows named by their key,
    read again by key in the recheck."""

    pattern: KeyPattern | None = None
    value: str = "none"
    require_ttl: bool = False

    def stream(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        store: RedisStore = self.database  # type: ignore[assignment]
        assert self.pattern is not None
        for batch in store.stream(self.pattern, self.value, self._wanted(), batch_rows):
            yield self._named(batch, {KEY_COLUMN: f"{LABEL}0"})

    def side_findings(self, rule: str) -> Iterator[Finding]:
        """`require_ttl`: a `no_ttl` warning per matched key that never expires, as the keys
        are now (nothing to re-check)."""
        if self.require_ttl:
            store: RedisStore = self.database  # type: ignore[assignment]
            assert self.pattern is not None
            for key in store.keys_without_ttl(self.pattern):
                yield Finding(rule, "no_ttl", "warning", {REDIS_KEY: key})

    def ttl_sample(self) -> tuple[int, int]:
        """(keys sampled, of which expire), for `check`; (0, 0): the pattern matches no key."""
        store: RedisStore = self.database  # type: ignore[assignment]
        assert self.pattern is not None
        return store.ttl_sample(self.pattern)

    def read_again(self, by: str, wanted: list[tuple]) -> Iterator[pa.RecordBatch]:
        """The rows of these keys (`by="labels"`: the key is the only label) as they are now."""
        assert by == "labels" and self.pattern is not None
        store: RedisStore = self.database  # type: ignore[assignment]
        keys = [str(labels[0]) for labels in wanted]
        batch = store.read_again(self.pattern, self.value, self._wanted(), keys)
        yield self._named(batch, {KEY_COLUMN: f"{LABEL}0"})


def plan_side(rule: Rule, role: str, side: TableSide, store: RedisStore) -> SidePlan:
    """A Redis side: a reference's `from` (cache entries that refer) or a PII `copy` (cached
    copies), rows named by their key."""
    refused = {
        "where": "it is SQL",
        "extract": "values are read as they are",
        "changed": "it is for SQL tables (a keyspace is read whole)",
    }
    what = (f"{store.name} is a Redis keyspace", "Redis sides")
    referring_or_copying(rule, role, side, what, "entries are named by their key", refused)
    value = side.value or "none"
    if isinstance(rule, ReferenceRule):
        names = list(rule.from_.columns)
    else:
        names = [*rule.copy_.key, *(f.copy_ for f in rule.fields)]
    try:
        info, pattern = store.reflect(side.table, value, names)
    except ConfigError as exc:
        raise exc.at(role, "table") from None

    labels = (sa.Column(REDIS_KEY, sa.Text()),)
    compare, values = side_columns(rule, info, role, None)
    options = {"labels": labels, "values": values, "pattern": pattern, "value": value,
               "require_ttl": side.require_ttl}  # fmt: skip
    return store_side(RedisSidePlan, role, store, info, compare, options)


register_store(RedisStore, plan_side)
