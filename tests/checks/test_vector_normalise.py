"""The vectorised normalising paths agree with the Python pipeline, value for value."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.checks.base import normalise
from auditor.normalize import compile_pipeline, validate_normalizer

PIPELINES = [
    ["email"],
    ["trim", "collapse_spaces", "casefold"],
    ["collapse_spaces"],
    ["lower", "trim"],
    ["nfkc", "strip_accents", "trim", "lower"],
    ["digits"],
    [{"phone": {"region": "US"}}],
    ["date"],
]
TEXT = st.text(
    alphabet=st.sampled_from(list(" \t\n\x0b\x0c\r\x1c\u00a0\u200bAbZz09@.+-()/ßİıÉé")), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=20), st.sampled_from(PIPELINES))
def test_vector_path_equals_python(values, specs):
    pipeline = compile_pipeline([validate_normalizer(s) for s in specs])
    got = normalise(pa.array(values, pa.string()), pipeline).to_pylist()
    assert got == [pipeline(v) for v in values]


PHONES = st.one_of(
    st.text(alphabet=st.sampled_from(list("0123456789 ().-/+x")), min_size=1, max_size=20),
    st.from_regex(r"\(?[2-9][0-9]{2}\)? ?[0-9]{3}[-. ]?[0-9]{4}", fullmatch=True),
)


@settings(max_examples=500, deadline=None)
@given(PHONES, PHONES, st.sampled_from(["US", "GB", "DE", None]))
def test_phone_shortcut_only_claims_true_equalities(a, b, region):
    pipeline = compile_pipeline([validate_normalizer({"phone": {"region": region}})])
    if pipeline.equal_shortcut(pa.array([a]), pa.array([b])) is None:
        return
    claimed = pipeline.equal_shortcut(pa.array([a]), pa.array([b])).to_pylist()[0]
    if a == b or claimed:
        assert pipeline(a) == pipeline(b)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), TEXT), min_size=1, max_size=20),
    st.data(),
    st.sampled_from(PIPELINES),
)
def test_vector_path_on_sliced_arrays(values, data, specs):
    """Arrays that are slices of bigger ones (offsets into shared buffers) normalise alike."""
    start = data.draw(st.integers(0, len(values) - 1))
    pipeline = compile_pipeline([validate_normalizer(s) for s in specs])
    sliced = pa.array(values, pa.string()).slice(start)
    assert normalise(sliced, pipeline).to_pylist() == [pipeline(v) for v in values[start:]]
