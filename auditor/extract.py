"""`extract`: references found inside text (a URL, a log line), SPEC §9.

Every match of the pattern in a value is one reference; its named groups are the side's
compared columns. A row is repeated once per match, and a value without a match is no
reference: it is counted (`rows_unmatched`), not compared.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

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
            return self._explode_in_python(batch, texts, range(len(texts)))
        single = pc.equal(counts, 1)
        extracted = pc.extract_regex(texts.filter(single), self.pattern.pattern)
        ones = batch.drop_columns([SOURCE]).filter(single)
        for name, group in self._outputs():
            ones = ones.append_column(name, extracted.field(group))
        several = pc.indices_nonzero(pc.greater(counts, 1)).to_pylist()
        rest, _ = self._explode_in_python(batch, texts, several)
        unmatched = len(texts) - int(pc.sum(pc.greater(counts, 0)).as_py() or 0)
        joined = pa.Table.from_batches([ones, rest]).combine_chunks().to_batches()
        return (joined[0] if joined else ones), unmatched

    @functools.cached_property
    def _re2_reads_it(self) -> bool:
        """Whether RE2 reads the pattern as Python does on ASCII text: not verbose, multi-line
        or dot-all, no `$` (Python's also matches before a final newline), no empty match, no
        lookaround or backreference (RE2 refuses those)."""
        if self.pattern.flags & ~(re.UNICODE | re.IGNORECASE) or "$" in self.pattern.pattern:
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
        ascii_only = pc.all(pc.fill_null(pc.string_is_ascii(texts), True)).as_py()
        control = pc.any(pc.fill_null(pc.match_substring_regex(texts, "[\x0b\x1c-\x1f]"), False))
        if ascii_only is False or control.as_py():  # \s: Python also matches \v and \x1c-\x1f
            return None
        return pc.fill_null(pc.count_substring_regex(texts, self.pattern.pattern), 0)

    def _outputs(self) -> list[tuple[str, str]]:
        """(output column, named group) of every column the matches make."""
        return [(f"{COMPARED}{i}", g) for i, g in enumerate(self.groups)] + [
            (f"{VALUE}{i}", g) for i, g in enumerate(self.values)
        ]

    def _explode_in_python(self, batch: pa.RecordBatch, texts: pa.Array, rows) -> tuple:
        taken: list[int] = []
        outputs = self._outputs()
        found: list[list[str | None]] = [[] for _ in outputs]
        values = texts.to_pylist()
        for row in rows:
            text = values[row]
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
