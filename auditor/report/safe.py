"""Text from the data made safe for each output: no control character reaches a terminal,
no CSV cell starts a spreadsheet formula, Markdown shows markup as text.

Values and keys come from the audited databases, so they can hold anything: an ESC sequence
that clears the screen or retitles the window, a bidi override that reorders what is read, a
`=HYPERLINK(...)` cell, a `<script>` tag.
"""

from __future__ import annotations

import html
import re

# C0 and C1 controls (tab and newline included: a report line stays one line), DEL, and the
# invisible formatting characters that reorder text (bidi embeddings, overrides, isolates).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# OWASP's list: a cell starting with one of these is read as a formula by spreadsheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """Control and bidi characters as visible escapes (`\\x1b`, `\\u202e`)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def csv_cell(text: str) -> str:
    """A cell a spreadsheet shows as text: formula starts get a leading `'`."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def markdown(text: str) -> str:
    """Text shown as text in Markdown (GitHub, GitLab): HTML escaped, table pipes and
    emphasis, code and link characters backslashed, one line."""
    text = html.escape(printable(text), quote=False)
    return re.sub(r"([\\`*_{}\[\]|#!~])", r"\\\1", text)
