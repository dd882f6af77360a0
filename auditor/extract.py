"""`extract`: references found inside text (a URL, a log line), SPEC §9.

Every match of the pattern in a value is one reference; its named groups are the side's
compared columns. A row is repeated once per match, and a value without a match is no
reference: it is counted (`rows_unmatched`), not compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa

SOURCE = "x0"  # the output name the scanned text travels under
UNMATCHED = "rows_unmatched"  # its count in rows_scanned


@dataclass(frozen=True)
class Extraction:
    source: sa.Column  # the text column read
    pattern: re.Pattern[str]
    groups: tuple[str, ...]  # the named groups, in the order of the side's compared columns

    def explode(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """One row per match, the groups as k0, k1, ...; and how many rows matched nothing."""
        texts = batch.column(SOURCE)
        if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
            texts = texts.cast(pa.string())
        # Python's re, not Arrow's RE2: `\d` and `\w` match non-ASCII digits and letters there
        # (a prefilter in RE2 would drop such rows), and finditer finds every match.
        taken: list[int] = []
        found: list[list[str | None]] = [[] for _ in self.groups]
        for row, text in enumerate(texts.to_pylist()):
            if text is None:
                continue
            for match in self.pattern.finditer(text):
                taken.append(row)
                for column, group in zip(found, self.groups, strict=True):
                    column.append(match.group(group))
        matched_rows = len(set(taken))
        rest = batch.drop_columns([SOURCE]).take(pa.array(taken, pa.int64()))
        for index, column in enumerate(found):
            rest = rest.append_column(f"k{index}", pa.array(column, pa.string()))
        return rest, batch.num_rows - matched_rows
