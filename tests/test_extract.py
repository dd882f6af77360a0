"""`extract` finds what Python's `re` finds, every match, whether a batch goes through Arrow's
RE2 (ASCII text, a pattern RE2 reads) or through `finditer`."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.extract import SOURCE, Extraction, _occurrences

PATTERNS = [
    r"/products/(?P<id>\d+)",
    r"(?i)SKU-(?P<id>[a-z0-9]+)",
    r"id=(?P<id>\w+)\s",
    r"(?P<id>\d+)(?=px)",  # a lookahead: RE2 cannot read it
    r"ref=(?P<id>\d+)$",  # `$`: Python's also matches before a final newline
    r"x(?P<id>\d*)",  # an empty group
    r"p(?P<id>[[:space:]]+)",  # RE2: a POSIX class; Python: the characters [:space and ]
    r"r(?P<id>\S+)\s",  # Python's \s also matches \x0b and \x1c-\x1f, RE2's does not
    r"r(?:(?P<id>\d+)|ef)",  # a group that takes no part: None to Python, "" to Arrow
]


def _python(extraction: Extraction, texts: list[str | None]) -> tuple[list, int]:
    found, matched = [], 0
    for row, text in enumerate(texts):
        matches = list(extraction.pattern.finditer(text)) if text is not None else []
        matched += bool(matches)
        found += [(row, m.group("id")) for m in matches]
    return sorted(found), len(texts) - matched


def _explode(extraction: Extraction, texts: list[str | None]) -> tuple[list, int]:
    batch = pa.record_batch(
        [pa.array(texts, pa.string()), pa.array(range(len(texts)), pa.int64())],
        names=[SOURCE, "r0"],
    )
    rows, unmatched = extraction.explode(batch)
    return sorted(zip(rows["r0"].to_pylist(), rows["k0"].to_pylist(), strict=True)), unmatched


TEXTS = st.lists(
    st.one_of(
        st.none(),
        st.text(
            alphabet="/produts0123456789?=&ref pxSKU-abc\n\x0b\x1d[:]\u0663\u00e9", max_size=40
        ),
    ),
    max_size=30,
)


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # [[:space:]]
@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=150, deadline=None)
@given(texts=TEXTS)
def test_arrow_and_python_find_the_same_references(pattern, texts):
    extraction = Extraction(sa.Column("line", sa.Text()), re.compile(pattern), ("id",))
    assert _explode(extraction, texts) == _python(extraction, texts)


def test_several_references_in_one_row_and_rows_without_any():
    extraction = Extraction(sa.Column("line", sa.Text()), re.compile(PATTERNS[0]), ("id",))
    texts = [
        "GET /products/7 ref=/products/8",
        "GET /",
        None,
        "/products/1",
        "\u0663 /products/\u0663",
    ]
    assert _explode(extraction, texts) == (
        [(0, "7"), (0, "8"), (3, "1"), (4, "\u0663")],  # Arabic-Indic 3 is a digit to Python
        2,
    )


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
def test_patterns_that_re2_reads_otherwise_stay_with_python():
    """`[[:space:]]` is a POSIX class to RE2 and a set of characters to Python; `\\s` matches
    \\x1d in Python only; a group that takes no part is None to Python, "" to Arrow."""
    for pattern, texts, expected in [
        (r"p(?P<id>[[:space:]]+)", ["p ", "ps]x"], [(1, "s]")]),
        (r"r(?P<id>\S+)\s", ["r1\x1d", "r2 "], [(0, "1"), (1, "2")]),
        (r"r(?:(?P<id>\d+)|ef)", ["ref", "r1"], [(0, None), (1, "1")]),
    ]:
        extraction = Extraction(sa.Column("line", sa.Text()), re.compile(pattern), ("id",))
        assert _explode(extraction, texts)[0] == expected


def _overlapping(text: str, literal: str) -> int:
    return sum(text.startswith(literal, i) for i in range(len(text)))


@settings(max_examples=200, deadline=None)
@given(texts=TEXTS, start=st.integers(0, 5), large=st.booleans())
def test_literal_occurrences_stay_within_each_text(texts, start, large):
    """The literal prefilter counts in the text buffer: never across two texts, also in a
    slice of an array (its offsets do not start at 0)."""
    array = pa.array(texts, pa.large_string() if large else pa.string())[start:]
    for literal in ("/products/", "re", "pp"):
        expected = [0 if t is None else _overlapping(t, literal) for t in texts[start:]]
        assert _occurrences(array, literal.encode()).tolist() == expected


def test_a_pattern_starting_with_a_literal_is_prefiltered_exactly():
    extraction = Extraction(sa.Column("line", sa.Text()), re.compile(PATTERNS[0]), ("id",))
    assert extraction._literal == b"/products/"
    texts = ["x/pro", "ducts/1", "/products/a /products/2", "/products//products/3", None, ""]
    assert _explode(extraction, texts) == _python(extraction, texts)
    assert _explode(extraction, texts)[0] == [(2, "2"), (3, "3")]
