"""Changes to a Redis keyspace: guarded scripts, as `redis-cli` lines and applied alike.

Each change is one `EVAL` of a short Lua script that checks the key still holds what the
re-check read, then changes it, atomically (Redis runs a script alone): `DEL` of a cache entry
that refers to a dead id, `HSET` of a hash field (a retired id, a drifted PII copy). A script
that finds the key changed does nothing and says so (0), so running a plan twice changes
nothing the second time. What a `DEL` removed is kept for the undo as `DUMP` + `PTTL`, put
back by `RESTORE` (which refuses a key written again since: left alone).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from auditor.db.engines import redact, scrub
from auditor.errors import ConfigError, DatabaseError
from auditor.fix.changes import Change
from auditor.plan import SidePlan

# Delete the key if every (field, value) pair in ARGV still holds (an odd ARGV[n] "\0nil\0"
# stands for an absent field); returns {dump, pttl} of what was deleted, or 0.
DELETE = (
    "for i = 1, #ARGV, 2 do local v = redis.call('HGET', KEYS[1], ARGV[i]) "
    "if v ~= ARGV[i + 1] and not (v == false and ARGV[i + 1] == '\\0nil\\0') then return 0 end "
    "end if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    "local d = redis.call('DUMP', KEYS[1]) local t = redis.call('PTTL', KEYS[1]) "
    "redis.call('DEL', KEYS[1]) return {d, t}"
)
# Set each field ARGV[i] from ARGV[i+1] to ARGV[i+2] if it still holds ARGV[i+1]; a new value
# "\0nil\0" removes the field (the undo of filling a missing one). Returns 1, or 0.
SET = (
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    "for i = 1, #ARGV, 3 do local v = redis.call('HGET', KEYS[1], ARGV[i]) "
    "if v ~= ARGV[i + 1] and not (v == false and ARGV[i + 1] == '\\0nil\\0') then return 0 end "
    "end for i = 1, #ARGV, 3 do if ARGV[i + 2] == '\\0nil\\0' then "
    "redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2]) "
    "end end return 1"
)
NIL = "\0nil\0"


def refusal(side: SidePlan, action: str) -> str | None:
    """Why `action` cannot be done on this Redis side, or None."""
    captured = set(side.pattern.captures) if side.pattern is not None else set()  # type: ignore[attr-defined]
    if action == "delete":
        return None
    if action == "nullify":
        return "a Redis entry has no NULL: use delete (the cache refills) or none"
    if side.value != "hash":  # type: ignore[attr-defined]
        return (
            f"the entries are value: {side.value}; auditor fix sets hash fields only "  # type: ignore[attr-defined]
            "(delete the entry instead, or none)"
        )
    columns = side.compare if action in ("rewrite", "rekey") else ()
    named = [c.name for c in columns if c.name in captured]
    if named:
        return f"{named[0]} is part of the key pattern: auditor fix does not rename keys"
    return None


@dataclass(frozen=True)
class Command:
    """One guarded EVAL: its script, key and arguments."""

    script: str
    key: str
    args: tuple[str, ...]

    def line(self) -> str:
        """As `redis-cli` reads it from a file: each argument quoted, bytes escaped."""
        parts = ["EVAL", self.script, "1", self.key, *self.args]
        return " ".join(quoted(part) for part in parts)


def commands(side: SidePlan, changes: list[Change]) -> Iterator[Command]:
    captured = set(side.pattern.captures) if side.pattern is not None else set()  # type: ignore[attr-defined]
    for change in changes:
        key = str(change.key[0])
        fields = [
            (name, old, None if change.new is None else change.new[i])
            for i, (name, old) in enumerate(zip(change.columns, change.old, strict=True))
            if name not in captured
        ]
        if change.new is None:
            args = [part for name, old, _ in fields for part in (name, _text(old))]
            yield Command(DELETE, key, tuple(args))
        else:
            args = [p for name, old, new in fields for p in (name, _text(old), _text(new))]
            yield Command(SET, key, tuple(args))


def undo(command: Command, reply: Any) -> str | None:
    """The redis-cli line that puts back what `command` changed (`reply`: what it returned)."""
    if command.script == DELETE:
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        dump, ttl = reply
        return " ".join(
            [
                "RESTORE",
                quoted(command.key),
                str(max(int(ttl), 0)),
                quoted(dump if isinstance(dump, bytes) else str(dump).encode()),
            ]
        )
    args = command.args
    reverse = [p for i in range(0, len(args), 3) for p in (args[i], args[i + 2], args[i + 1])]
    return Command(SET, command.key, tuple(reverse)).line()


def quoted(value: str | bytes) -> str:
    """A double-quoted redis-cli argument: printable ASCII as it is, `"` and `\\` escaped,
    every other byte as \\xHH (so any bytes, UTF-8 text and DUMP payloads, round-trip)."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    out = []
    for byte in data:
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _text(value: Any) -> str:
    return NIL if value is None else str(value)


@dataclass
class RedisWriter:
    """A client on `fix_url` (a login that may write); the audit's own URL stays as it is."""

    name: str
    url: str
    client: Any = None

    def connect(self) -> Any:
        import redis

        if self.client is None:
            self.client = redis.Redis.from_url(self.url, socket_connect_timeout=10)
        return self.client

    def run(self, command: Command) -> Any:
        import redis

        try:
            return self.connect().eval(command.script, 1, command.key, *command.args)
        except redis.RedisError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reason = scrub(first, make_url(self.url))
            raise DatabaseError(
                f"cannot write database {self.name!r} with its fix_url ({redact(self.url)}): "
                f"{reason}"
            ) from None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def writer(name: str, fix_url: str | None) -> RedisWriter:
    from auditor.redis_store import is_redis_url

    if not fix_url:
        raise ConfigError(
            f"databases.{name}.fix_url is needed to apply changes to {name!r} (a Redis login "
            "that may write; the audit's url stays as it is)"
        )
    if not is_redis_url(fix_url):
        raise ConfigError(f"databases.{name}.fix_url must be a redis:// URL, as its url is")
    return RedisWriter(name, fix_url)
