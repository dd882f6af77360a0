"""`extract`: references found inside text (a URL, a log line), SPEC §9.

Every match of the pattern in a value is one reference; its named groups are the side's
compared columns. A row is repeated once per match, and a value without a match is no
reference: it is counted (`rows_unmatched`), not compared.
"""

from __future__ import annotations

import functools
import re
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
        provably agrees: on ASCII text, for a pattern RE2 reads, rows with exactly one match
        are cut out by `extract_regex`; rows with several go through `finditer`. (On other
        text `\\d`, `\\w` and `\\s` differ: Python's match non-ASCII digits, letters, spaces.)"""
        texts = batch.column(SOURCE)
        if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
            texts = texts.cast(pa.string())
        counts = self._counts_in_c(texts)
        if counts is None:
            return self._explode_in_python(batch, texts, None)
        single = pc.equal(counts, 1)
        extracted = pc.extract_regex(texts.filter(single), self.pattern.pattern)
        # A group that took no part in its match is "" to Arrow and None to Python: such rows
        # go to Python, like rows with several matches.
        blanks = [pc.equal(extracted.field(group), "") for _, group in self._outputs()]
        unclear = functools.reduce(pc.or_, blanks) if blanks else None
        if unclear is not None and pc.any(unclear).as_py():
            sure = pc.invert(unclear)
            extracted = extracted.filter(sure)
            single = pc.and_(single, pc.invert(_scattered(unclear, single)))
        ones = batch.drop_columns([SOURCE]).filter(single)
        for name, group in self._outputs():
            ones = ones.append_column(name, extracted.field(group))
        in_python = pc.and_(pc.greater(counts, 0), pc.invert(single))
        rest, _ = self._explode_in_python(batch, texts, pc.indices_nonzero(in_python))
        unmatched = len(texts) - int(pc.sum(pc.greater(counts, 0)).as_py() or 0)
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

    def _counts_in_c(self, texts: pa.Array) -> pa.Array | None:
        """Matches per row by RE2, or None where RE2 might disagree with Python's re."""
        if not self._re2_reads_it:
            return None
        if not _plain_ascii(texts, self._spaces):
            return None
        return pc.fill_null(pc.count_substring_regex(texts, self.pattern.pattern), 0)

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
        """`rows` (indices; None: all) by `finditer`: one row per match."""
        if rows is None:
            rows = pa.array(range(len(texts)), pa.int64())
        taken: list[int] = []
        outputs = self._outputs()
        found: list[list[str | None]] = [[] for _ in outputs]
        for row, text in zip(rows.to_pylist(), texts.take(rows).to_pylist(), strict=True):
            if text is None:
                continue
            for match in self.pattern.finditer(text):
                taken.append(row)
                for column, (_, group) in zip(found, outputs, strict=True):
                    column.append(match.group(group))
        rest = batch.drop_columns([SOURCE]).take(pa.array(taken, pa.int64()))
        for column, (name, _) in zip(found, outputs, strict=True):
            rest = rest.append_column(name, pa.array(column, pa.string()))
        return rest, batch.num_rows - len(set(taken))


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


def _scattered(values: pa.Array, where: pa.Array) -> pa.Array:
    """`values` (one per true row of the mask `where`) put back at those rows; false elsewhere."""
    positions = pc.indices_nonzero(where).to_numpy()
    full = np.zeros(len(where), dtype=bool)
    full[positions] = values.to_numpy(zero_copy_only=False)
    return pa.array(full)
