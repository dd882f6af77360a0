"""Masking of PII values, applied before any renderer sees them (SPEC §4).

`partial` keeps the shape of a value, not its content; `hash` keeps equality (equal values
show equal hashes under one key) without the content; `none` is only reachable with
`--show-pii`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass

_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{7,}$")


@dataclass(frozen=True)
class Masker:
    mode: str  # partial | hash | none
    key: bytes

    @classmethod
    def create(cls, mode: str) -> Masker:
        env = os.environ.get("AUDITOR_HASH_KEY")
        key = env.encode() if env else secrets.token_bytes(32)
        return cls(mode, key)

    def __call__(self, value: str | None) -> str | None:
        if value is None or self.mode == "none":
            return value
        if self.mode == "hash":
            digest = hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).hexdigest()
            return f"h:{digest[:12]}"
        return partial(value)


def partial(value: str) -> str:
    text = value.strip()
    if not text:
        return "*" * len(value)
    if "@" in text:
        return _email(text)
    if _PHONE_LIKE.match(text):
        return _phone(text)
    return " ".join(_word(word) for word in text.split())


def _word(word: str) -> str:
    """First character and `***`; a first character that is not printable (an ESC, a bidi
    override) is masked too, or it would reach a terminal."""
    first = word[0]
    return (first if first.isprintable() else "*") + "***"


def _email(text: str) -> str:
    local, _, domain = text.rpartition("@")
    name, dot, tld = domain.rpartition(".")
    masked_domain = f"{_word(name)}.{tld}" if dot and name else _word(domain) if domain else ""
    return f"{_word(local) if local else ''}@{masked_domain}"


def _phone(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    prefix = "+" if text.startswith("+") else ""
    head = digits[:1] if prefix else ""
    tail = digits[-4:] if len(digits) > 6 else ""
    return prefix + head + "*" * (len(digits) - len(head) - len(tail)) + tail
