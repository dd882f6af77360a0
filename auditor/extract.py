"""`extract`: references found inside text (a URL, a log line), SPEC §9.

Every match of the pattern in a value is one reference; its named groups are the side's
compared columns. A row is repeated once per match, and a value without a match is no
reference: it is counted (`rows_unmatched`), not compared.
"""

from __future__ import annotations

import functools
import re
import re._constants as sre_constants  # the parser of re: the literal a pattern starts with
import re._parser as sre_parse
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from auditor.batch import COMPARED, VALUE

SOURCE = "x0"  # the output name the scanned text travels under
UNMATCHED = "rows_unmatched"  # its count in rows_scanned


@dataclass(frozen=True)
class Extraction:
    source: sa.Column  # the text column read
    pattern: re.Pattern[str]
    groups: tuple[str, ...]  # the named groups, in the order of the side's compared columns
    values: tuple[str, ...] = ()  # the named groups that are a copy's PII fields, in order

    def explode(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """One row per match, the groups as k0, k1, ... (and v0, v1, ... for `values`); and
        how many rows matched nothing.

        Python's `re` decides what matches. Arrow's RE2 does the same work in C where it
        provably agrees: on ASCII text, for a pattern RE2 reads, rows with one match are cut
        out by `extract_regex`; rows with several go through `finditer`. (On other
        text `\\d`, `\\w` and `\\s` differ: Python's match non-ASCII digits, letters, spaces.)"""
        texts = batch.column(SOURCE)
        if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
            texts = texts.cast(pa.string())
        counts = self._counts_in_c(texts)
        if counts is None:
            rest, matched = self._explode_in_python(batch, texts, None)
            return rest, len(texts) - matched
        # Rows counted once: cut out in C. A count of 1 from the literal prefilter may be a row
        # without a match (null here); a group that took no part in its match is "" to Arrow and
        # None to Python: such rows go to Python, like rows with several matches.
        single = counts == 1
        extracted = pc.extract_regex(texts.filter(pa.array(single)), self.pattern.pattern)
        found = pc.is_valid(extracted).to_numpy(zero_copy_only=False)
        unclear = np.zeros(len(found), dtype=bool)
        for _, group in self._outputs():
            unclear |= pc.equal(extracted.field(group), "").to_numpy(zero_copy_only=False)
        unclear &= found
        kept = found & ~unclear
        if not kept.all():
            extracted = extracted.filter(pa.array(kept))
        in_python = counts > 1
        in_python[single] = unclear
        single[single] = kept
        ones = batch.drop_columns([SOURCE]).filter(pa.array(single))
        for name, group in self._outputs():
            ones = ones.append_column(name, extracted.field(group))
        rest, matched = self._explode_in_python(batch, texts, pa.array(np.flatnonzero(in_python)))
        unmatched = len(texts) - int(kept.sum()) - matched
        joined = pa.Table.from_batches([ones, rest]).combine_chunks().to_batches()
        return (joined[0] if joined else ones), unmatched

    @functools.cached_property
    def _re2_reads_it(self) -> bool:
        """Whether RE2 reads the pattern as Python does on ASCII text: not verbose, multi-line
        or dot-all, no `$` (Python's also matches before a final newline), no `[:` (RE2 reads
        `[[:space:]]` as a class, Python as a set of characters), no empty match, no
        lookaround or backreference (RE2 refuses those)."""
        text = self.pattern.pattern
        if self.pattern.flags & ~(re.UNICODE | re.IGNORECASE) or "$" in text or "[:" in text:
            return False
        if self.pattern.search("") is not None:  # empty matches: counted differently
            return False
        try:
            pc.count_substring_regex(pa.array([""]), self.pattern.pattern)
        except pa.ArrowInvalid:
            return False
        return True

    def _counts_in_c(self, texts: pa.Array) -> np.ndarray | None:
        """Matches per row (int64), in C; None where RE2 might disagree with Python's re.

        A pattern that starts with a literal (`GET /products/`) is counted by that literal
        (numpy over the text buffer, ~4x cheaper than RE2): a row holding it once has at most
        one match, which extract_regex then finds or not; rows holding it twice or more are
        counted by RE2."""
        if not self._re2_reads_it or not _plain_ascii(texts, self._spaces):
            return None
        if self._literal is None:
            counts = pc.count_substring_regex(texts, self.pattern.pattern)
            return pc.fill_null(counts, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        occurrences = _occurrences(texts, self._literal)
        counts = np.minimum(occurrences, 1)
        several = np.flatnonzero(occurrences > 1)
        if several.size:
            exact = pc.count_substring_regex(texts.take(pa.array(several)), self.pattern.pattern)
            counts[several] = pc.fill_null(exact, 0).to_numpy(zero_copy_only=False)
        return counts

    @functools.cached_property
    def _literal(self) -> bytes | None:
        """The literal every match starts with (2+ ASCII characters, case-sensitive), or None."""
        if self.pattern.flags & re.IGNORECASE:
            return None
        try:
            parsed = sre_parse.parse(self.pattern.pattern, self.pattern.flags)
        except Exception:  # a private module of re: if it changes, do without the prefilter
            return None
        leading = []
        for op, value in parsed:
            if op is not sre_constants.LITERAL or not 0 < value < 128:
                break
            leading.append(value)
        return bytes(leading) if len(leading) >= 2 else None

    @functools.cached_property
    def _spaces(self) -> bool:
        """Whether the pattern may say `\\s` (Python's also matches \\v and \\x1c-\\x1f)."""
        return "\\s" in self.pattern.pattern or "\\S" in self.pattern.pattern

    def _outputs(self) -> list[tuple[str, str]]:
        """(output column, named group) of every column the matches make."""
        return [(f"{COMPARED}{i}", g) for i, g in enumerate(self.groups)] + [
            (f"{VALUE}{i}", g) for i, g in enumerate(self.values)
        ]

    def _explode_in_python(self, batch: pa.RecordBatch, texts: pa.Array, rows) -> tuple:
        """`rows` (indices; None: all) by `finditer`: one row per match; and how many of the
        rows matched."""
        indices = range(len(texts)) if rows is None else rows.to_pylist()
        values = texts.to_pylist() if rows is None else texts.take(rows).to_pylist()
        taken: list[int] = []
        outputs = self._outputs()
        found: list[list[str | None]] = [[] for _ in outputs]
        for row, text in zip(indices, values, strict=True):
            if text is None:
                continue
            for match in self.pattern.finditer(text):
                taken.append(row)
                for column, (_, group) in zip(found, outputs, strict=True):
                    column.append(match.group(group))
        rest = batch.drop_columns([SOURCE]).take(pa.array(taken, pa.int64()))
        for column, (name, _) in zip(found, outputs, strict=True):
            rest = rest.append_column(name, pa.array(column, pa.string()))
        return rest, len(set(taken))


def _plain_ascii(texts: pa.Array, spaces: bool) -> bool:
    """Whether every byte of the texts is ASCII (and, when `spaces`, none of \\v, \\x1c-\\x1f):
    one numpy pass over the data buffer (a sliced array's whole buffer: a byte outside the
    slice can only send it to Python, never give a wrong answer), 10x cheaper than Arrow's
    per-string kernels."""
    data = texts.buffers()[2]
    if data is None:
        return True
    raw = np.frombuffer(data, np.uint8)
    if raw.size and int(raw.max()) > 127:
        return False
    if spaces:
        return not bool(np.any((raw == 0x0B) | ((raw >= 0x1C) & (raw <= 0x1F))))
    return True


def _occurrences(texts: pa.Array, literal: bytes) -> np.ndarray:
    """How often `literal` occurs in each text (overlapping occurrences each count), by numpy
    over the data buffer."""
    width = 8 if pa.types.is_large_string(texts.type) else 4
    offsets = np.frombuffer(texts.buffers()[1], f"<i{width}")
    offsets = offsets[texts.offset : texts.offset + len(texts) + 1].astype(np.int64)
    data = texts.buffers()[2]
    if data is None or len(texts) == 0:
        return np.zeros(len(texts), dtype=np.int64)
    first, last = int(offsets[0]), int(offsets[-1])
    region = np.frombuffer(data, np.uint8)[first:last]
    places = np.flatnonzero(region[: max(0, len(region) - len(literal) + 1)] == literal[0])
    for index in range(1, len(literal)):
        places = places[region[places + index] == literal[index]]
    places += first
    rows = np.searchsorted(offsets, places, side="right") - 1
    inside = places + len(literal) <= offsets[rows + 1]  # not across two texts
    return np.bincount(rows[inside], minlength=len(texts)).astype(np.int64)
