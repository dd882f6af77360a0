"""Stale ids in files (exports, logs): a redirects CSV, old text -> new text.

auditor never rewrites a user's files. What a retired id in an exported URL needs is a
redirect (`/products/9004` -> `/products/42`) or a search-and-replace the owner runs: each row
of `<db>-redirects.csv` is the text the pattern matched, and the same text with the retired
id replaced by the current one (only the group's span changes), with how many lines hold it.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

from auditor.batch import LABEL
from auditor.extract import SOURCE
from auditor.fix.changes import Change
from auditor.plan import SidePlan


def refusal(side: SidePlan, action: str) -> str | None:
    """Why `action` cannot be done on a files side, or None."""
    if action == "rewrite":
        return None
    return "auditor fix does not change files; only stale_alias: rewrite (a redirects CSV)"


def redirects(side: SidePlan, changes: list[Change]) -> Counter[tuple[str, str]]:
    """(old text, new text) -> lines holding it, for stale-alias rewrites on a files side."""
    found: Counter[tuple[str, str]] = Counter()
    if side.extract is None:  # the id is the whole value of a column
        for change in changes:
            for old, new in zip(change.old, change.new or (), strict=True):
                found[(str(old), str(new))] += 1
        return found
    texts = _texts(side, [tuple(change.key) for change in changes])
    pattern, groups = side.extract.pattern, side.extract.groups
    for change in changes:
        text = texts.get(tuple(change.key))
        if text is None:
            continue
        wanted = tuple(str(part) for part in change.old)
        for match in pattern.finditer(text):
            if tuple(match.group(g) for g in groups) != wanted:
                continue
            matched = match.group(0)
            spans = sorted(
                (match.span(g), str(new)) for g, new in zip(groups, change.new or (), strict=True)
            )
            rewritten, last = [], match.start()
            for (start, end), new in spans:
                rewritten += [text[last:start], new]
                last = end
            rewritten.append(text[last : match.end()])
            found[(matched, "".join(rewritten))] += 1
    return found


def _texts(side: SidePlan, keys: list[tuple]) -> dict[tuple, Any]:
    """The text of each (file, line), read again."""
    texts: dict[tuple, Any] = {}
    for batch in side.read_again("labels", keys):  # type: ignore[attr-defined]
        files = batch.column(f"{LABEL}0").to_pylist()
        lines = batch.column(f"{LABEL}1").to_pylist()
        for file, line, text in zip(files, lines, batch.column(SOURCE).to_pylist(), strict=True):
            texts[(file, line)] = text
    return texts


def write(path: Path, rows: Counter[tuple[str, str]], opener) -> None:  # type: ignore[no-untyped-def]
    """The CSV, most frequent first; written by `opener` (a private file)."""
    with opener(path) as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["old", "new", "lines"])
        for (old, new), count in sorted(rows.items(), key=lambda item: (-item[1], item[0])):
            out.writerow([old, new, count])
