"""Each normaliser alone, including unicode edge cases."""

from __future__ import annotations

import pytest

from auditor.normalize import compile_pipeline, validate_normalizer


def norm(specs: list, value: object) -> str | None:
    return compile_pipeline([validate_normalizer(s) for s in specs])(value)


@pytest.mark.parametrize(
    ("specs", "value", "expected"),
    [
        (["trim"], "  a b \u00a0", "a b"),
        (["trim"], "\u200bname\ufeff", "name"),  # zero-width space and BOM
        (["lower"], "ÀBC", "àbc"),
        (["casefold"], "Straße", "strasse"),
        (["casefold"], "I", "i"),
        (["casefold"], "ı", "ı"),  # Turkish dotless i stays itself: no locale tricks
        (["casefold"], "İ", "i̇"),  # capital dotted I folds to i + combining dot
        (["nfkc"], "\ufb01ne", "fine"),  # ligature fi
        (["nfkc"], "Ｆｕｌｌ", "Full"),  # full-width letters
        (["collapse_spaces"], "a \u00a0\t b", "a b"),  # non-breaking space and tab
        (["collapse_spaces"], "a\u200bb", "ab"),  # zero-width space dropped
        (["strip_accents"], "José Núñez", "Jose Nunez"),
        (["digits"], "(415) 555-0100", "4155550100"),
        (["digits"], "٤١٥", "415"),  # Arabic-Indic digits
        (["email"], "  Ann@Example.COM ", "ann@example.com"),
        ([{"phone": {"region": "US"}}], "(415) 555-0100", "+14155550100"),
        ([{"phone": {"region": "US"}}], "+44 20 7946 0958", "+442079460958"),
        ([{"phone": {"region": "US"}}], " not a phone ", "not a phone"),
        (["phone"], "415 555 0100", "415 555 0100"),  # no region, no +: stays text
        (["date"], "2024-03-05", "2024-03-05"),
        (["date"], "2024-03-05T10:11:12", "2024-03-05"),
        (["date"], "2024/03/05", "2024-03-05"),
        (["date"], "05.03.2024", "2024-03-05"),
        (["date"], "March 5, 2024", "2024-03-05"),
        (["date"], "03/05/2024", "03/05/2024"),  # ambiguous: left as text
        ([{"regex": {"pattern": r"^0+", "replace": ""}}], "00042", "42"),
        (["trim", "lower"], "   ", None),  # empty after normalising is missing
        (["trim"], None, None),
        (["nfkc", "trim", "collapse_spaces", "casefold"], " ANN\u00a0 LEE ", "ann lee"),
    ],
)
def test_normalisers(specs, value, expected):
    assert norm(specs, value) == expected


def test_pipeline_order_matters():
    assert norm(["strip_accents", "casefold"], "É") == "e"
    assert norm([{"regex": {"pattern": "E", "replace": "x"}}, "lower"], "E") == "x"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("emial", "did you mean 'email'"),
        ({"phone": {"region": "XX"}}, "not a known region"),
        ({"phone": {"regoin": "US"}}, "unknown option"),
        ({"regex": {"pattern": "(["}}, "regex pattern"),
        ({"regex": {}}, "needs a pattern"),
        ({"a": 1, "b": 2}, "one-key mapping"),
    ],
)
def test_bad_normalisers_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        validate_normalizer(spec)


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint64", "float64", "bool"])
@pytest.mark.parametrize("masked", [False, True])
def test_numpy_array_is_pa_array_without_its_lookups(dtype, masked):
    import numpy as np
    import pyarrow as pa

    from auditor.normalize import numpy_array

    values = (np.arange(21) % 3).astype(dtype)[::2]  # a strided view: not contiguous
    mask = (np.arange(11) % 4 == 1) if masked else None
    built = numpy_array(values, mask=mask)
    assert built.equals(pa.array(values, mask=mask))
    assert built.null_count == (3 if masked else 0)
