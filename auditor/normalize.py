"""One registry of normalisers (SPEC §2). Each is a small pure `str -> str` function.

A rule's `normalize:` list is validated at load time (unknown names and bad regexes are config
errors) and compiled once into a pipeline that both sides of a comparison go through.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NormalizerSpec = str | dict[str, Any]
Normalizer = Callable[[str], str]

# Invisible characters that survive copy/paste and make equal text look different.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_ZERO_WIDTH = dict.fromkeys(map(ord, _INVISIBLE))
_WHITESPACE_RUN = re.compile(r"\s+")
_EDGES = re.compile(rf"^[\s{_INVISIBLE}]+|[\s{_INVISIBLE}]+$")


def trim(value: str) -> str:
    """Strip surrounding whitespace, including non-breaking and zero-width spaces."""
    return _EDGES.sub("", value)


def collapse_spaces(value: str) -> str:
    """Drop zero-width characters and fold every whitespace run into one space."""
    return _WHITESPACE_RUN.sub(" ", value.translate(_ZERO_WIDTH))


def strip_accents(value: str) -> str:
    """NFD, then drop combining marks: `José` -> `Jose`."""
    return "".join(c for c in unicodedata.normalize("NFD", value) if not unicodedata.combining(c))


def digits(value: str) -> str:
    """Keep decimal digits only, written as ASCII."""
    return "".join(str(unicodedata.decimal(c)) for c in value if c.isdecimal())


def email(value: str) -> str:
    return trim(value).casefold()


def phone(value: str, region: str | None) -> str:
    """E.164 via phonenumbers; a leading `+` ignores the region; unparsable stays trimmed text."""
    import phonenumbers  # imported when first used: 40 ms of start-up for rules without phones

    text = trim(value)
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_DATE_FORMATS = ("%Y/%m/%d", "%Y%m%d", "%d.%m.%Y", "%b %d, %Y", "%B %d, %Y", "%d %B %Y", "%d %b %Y")


def iso_date(value: str) -> str:
    """ISO 8601 date from ISO dates/datetimes and unambiguous text forms; others stay as text.

    Slash forms such as 01/02/2024 are ambiguous (US vs. European order) and left alone.
    """
    text = trim(value)
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return text


def regex(value: str, pattern: re.Pattern[str], replace: str) -> str:
    return pattern.sub(replace, value)


SIMPLE: dict[str, Normalizer] = {
    "trim": trim,
    "lower": str.lower,
    "casefold": str.casefold,
    "nfkc": partial(unicodedata.normalize, "NFKC"),
    "collapse_spaces": collapse_spaces,
    "strip_accents": strip_accents,
    "digits": digits,
    "email": email,
    "date": iso_date,
}
PARAMETRISED = ("phone", "regex")
KNOWN = sorted([*SIMPLE, *PARAMETRISED])


def _unknown(name: object) -> ValueError:
    close = difflib.get_close_matches(str(name), KNOWN, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown normaliser {name!r}{hint}; known: {', '.join(KNOWN)}")


def validate_normalizer(spec: object) -> NormalizerSpec:
    """Check one `normalize:` item and return it in canonical form (compiles regexes once)."""
    if isinstance(spec, str):
        if spec == "phone":
            return {"phone": {"region": None}}
        if spec not in SIMPLE:
            raise _unknown(spec)
        return spec
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(
            "a normaliser is a name or a one-key mapping such as {phone: {region: US}}"
        )
    ((name, options),) = spec.items()
    options = options or {}
    if name not in PARAMETRISED:
        raise _unknown(name)
    if not isinstance(options, dict):
        raise ValueError(f"{name} takes a mapping of options")
    if name == "phone":
        _only(name, options, {"region"})
        region = options.get("region")
        import phonenumbers

        if region is not None and str(region).upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"phone region {region!r} is not a known region code (e.g. US, GB)")
        return {"phone": {"region": None if region is None else str(region).upper()}}
    _only(name, options, {"pattern", "replace"})
    if "pattern" not in options:
        raise ValueError("regex needs a pattern")
    try:
        re.compile(str(options["pattern"]))
    except re.error as exc:
        raise ValueError(f"regex pattern {options['pattern']!r} is invalid: {exc}") from None
    return {
        "regex": {"pattern": str(options["pattern"]), "replace": str(options.get("replace", ""))}
    }


def _only(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    extra = set(options) - allowed
    if extra:
        raise ValueError(
            f"{name} has unknown option(s) {sorted(extra)}; allowed: {sorted(allowed)}"
        )


def _compile_one(spec: NormalizerSpec) -> Normalizer:
    if isinstance(spec, str):
        return SIMPLE[spec]
    ((name, options),) = spec.items()
    if name == "phone":
        return partial(phone, region=options["region"])
    return partial(regex, pattern=re.compile(options["pattern"]), replace=options["replace"])


# Vectorised forms, exact for "plain" text: ASCII without the separators U+001C-U+001F (which
# Python, unlike Arrow, counts as whitespace). On such text Python's strip/lower/casefold/\s
# agree with Arrow's ASCII kernels and NFKC and accent-stripping change nothing. Other values
# take the Python path.


def text_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64) and UTF-8 bytes of a string array, without copying the bytes."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_large_string(array.type):
        array = array.cast(pa.large_string())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    data = array.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets, raw


def numpy_array(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """`pa.array(values, mask=mask)` for a 1-d numeric or boolean numpy array (mask: True =
    null), built from its buffers: pa.array first asks whether it was given a numpy masked
    array, which imports numpy.ma (50-70 ms of every run, inside the scan) and probes pandas.
    """
    values = np.ascontiguousarray(values)
    validity = None
    if mask is not None:
        validity = pa.py_buffer(np.packbits(~np.asarray(mask, dtype=bool), bitorder="little"))
    if values.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(values), [validity, data])
    kind = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(values)])


def plain_mask(array: pa.Array) -> pa.Array:
    """True where a value is plain text (see above); null where it is null.

    Arrow's ASCII test is one C++ pass; the separators are looked for in the whole data buffer
    at once and only when one occurs somewhere is the exact per-value test needed.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    ascii_only = pc.string_is_ascii(array)
    if not _has_byte_in(array, 0x1C, 0x1F):
        return ascii_only
    offsets, raw = text_buffers(array)
    separator = (raw >= 0x1C) & (raw <= 0x1F)
    counts = np.concatenate(([0], np.cumsum(separator, dtype=np.int64)))
    clean = numpy_array(counts[offsets[1:]] == counts[offsets[:-1]])
    return pc.and_(ascii_only, clean)


def _has_byte_in(array: pa.Array, low: int, high: int) -> bool:
    """Whether any byte in [low, high] occurs in the array's data buffer (cheap, conservative:
    the buffer may hold bytes of values sliced away)."""
    data = array.buffers()[2]
    if data is None:
        return False
    return bool(np.any((np.frombuffer(data, dtype=np.uint8) - np.uint8(low)) <= high - low))


def ascii_digits(array: pa.Array) -> pa.Array:
    """Keep the ASCII digits of every value, on the raw bytes (regex replace is ~100x slower)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    offsets, raw = text_buffers(array)
    window = raw[offsets[0] : offsets[-1]]
    return _rebuilt(array, offsets, window, (window >= 0x30) & (window <= 0x39))


_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20]] = True


def _collapse(array: pa.Array) -> pa.Array:
    """collapse_spaces on plain text: only values with a double space or a tab-like character
    are rewritten, on their raw bytes."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    odd = pc.fill_null(pc.match_substring(array, "  "), False)
    if _has_byte_in(array, 0x09, 0x0D):
        odd = pc.or_(odd, pc.fill_null(pc.match_substring_regex(array, "[\t\n\v\f\r]"), False))
    if not pc.any(odd).as_py():
        return array
    return pc.replace_with_mask(array, odd, _collapse_bytes(array.filter(odd)))


def _collapse_bytes(array: pa.Array) -> pa.Array:
    """Every whitespace run becomes one space, on the raw bytes of plain text."""
    offsets, raw = text_buffers(array)
    window = raw[offsets[0] : offsets[-1]]
    space = _ASCII_SPACE[window]
    follows_space = np.zeros_like(space)
    follows_space[1:] = space[:-1]
    starts = offsets[:-1] - offsets[0]
    follows_space[starts[starts < len(window)]] = False  # runs never span two values
    dropped = space & follows_space
    return _rebuilt(array, offsets, np.where(space, np.uint8(0x20), window), ~dropped)


def _rebuilt(array: pa.Array, offsets: np.ndarray, window: np.ndarray, keep: np.ndarray):
    """A string array of the kept bytes of `window` (the values' bytes), nulls preserved."""
    # Positions of the kept bytes; a value's new offset is how many of them precede its old
    # one (a search per value, where a running count would pay 8 bytes per data byte: 2.5x).
    kept = np.flatnonzero(keep)
    rebuilt = pa.LargeStringArray.from_buffers(
        len(array),
        pa.py_buffer(np.searchsorted(kept, offsets - offsets[0]).astype(np.int64)),
        pa.py_buffer(window[kept].tobytes()),
        null_count=0,
    )
    if array.null_count:
        rebuilt = pc.if_else(array.is_null(), pa.scalar(None, pa.large_string()), rebuilt)
    return rebuilt.cast(pa.string())


VECTOR: dict[str, Callable[[pa.Array], pa.Array]] = {
    "trim": pc.ascii_trim_whitespace,
    "lower": pc.ascii_lower,
    "casefold": pc.ascii_lower,
    "email": lambda a: pc.ascii_lower(pc.ascii_trim_whitespace(a)),
    "collapse_spaces": _collapse,
    "nfkc": lambda a: a,
    "strip_accents": lambda a: a,
    "digits": ascii_digits,
}
# Numbers written with 3 to 15 digits and the punctuation ( ) . - / and spaces, without a
# leading +, always parse under a region, and to the same number when their digits agree.
_SIMPLE_PHONE = r"^[ ().\-/]*([0-9][ ().\-/]*){3,15}$"


MEMO_SIZE = 100_000  # remembered results per pipeline
_UNSEEN: Any = object()


class Pipeline:
    """A compiled `normalize:` list: a Python function plus vectorised shortcuts."""

    def __init__(self, specs: list[NormalizerSpec]) -> None:
        self.steps = [_compile_one(spec) for spec in specs]
        self._memo: dict[str, str | None] = {}
        names = [spec if isinstance(spec, str) else next(iter(spec)) for spec in specs]
        self.vector = [VECTOR[n] for n in names] if all(n in VECTOR for n in names) else None
        first = specs[0] if specs else None
        self.phone_only = (
            names == ["phone"] and isinstance(first, dict) and first["phone"]["region"] is not None
        )

    def many(self, values: list[object]) -> list[str | None]:
        """Normalise distinct values, remembering recent results: a candidate's values are
        normalised again when its rows are re-read, and phone parsing is costly."""
        memo = self._memo
        if len(memo) > MEMO_SIZE:
            memo.clear()
        out = []
        for value in values:
            if not isinstance(value, str):
                out.append(self(value))
                continue
            result = memo.get(value, _UNSEEN)  # one lookup: another thread may clear the memo
            if result is _UNSEEN:
                result = memo[value] = self(value)
            out.append(result)
        return out

    def __call__(self, value: object) -> str | None:
        """Normalise one value; `None` means the value is missing."""
        if value is None:
            return None
        text = _as_text(value)
        for step in self.steps:
            text = step(text)
        return text or None

    def plain(self, array: pa.Array) -> pa.Array | None:
        """Vectorised normalisation, exact where the value is plain text, null elsewhere."""
        if self.vector is None:
            return None
        if not self.vector:  # no steps: every value is its own normal form
            return array
        out = pc.if_else(plain_mask(array), array, pa.scalar(None, pa.string()))
        for step in self.vector:
            out = step(out)
        return out

    def equal_shortcut(self, left: pa.Array, right: pa.Array) -> pa.Array | None:
        """Pairs proven equal without normalising (phones by their digits), else None."""
        if not self.phone_only:
            return None

        def key(array: pa.Array) -> pa.Array:
            simple = pc.fill_null(pc.match_substring_regex(array, _SIMPLE_PHONE), False)
            return pc.if_else(simple, ascii_digits(array), pa.scalar(None, pa.string()))

        return pc.fill_null(pc.equal(key(left), key(right)), False)


def compile_pipeline(specs: list[NormalizerSpec]) -> Pipeline:
    """The pipeline both sides of a field go through."""
    return Pipeline(specs)


def _as_text(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
