"""Config fuzzing: any document is either accepted or answered with one line (exit 2)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor import load_config
from auditor.errors import ConfigError
from tests.config.test_loader import VALID

KEYS = ["version", "databases", "rules", "settings", "name", "type", "from", "to", "db", "table",
        "columns", "key", "fields", "source", "copy", "normalize", "include", "reports", "url"]  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**12), st.floats(allow_nan=True),
    st.sampled_from(["reference", "pii", "email", "${X}", "${HOME:-x}", "a;b", "[", "{{"]),
    st.text(max_size=12),
)  # fmt: skip
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5
        ),
    ),
    max_leaves=25,
)


def _outcome(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as exc:
            message = str(exc)
            assert message and "\n" not in message, message
            assert message.startswith(str(path)) or message.startswith("databases."), message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_random_documents(document):
    _outcome(yaml.safe_dump(document))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations_of_a_valid_config(data):
    lines = VALID.splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "indent", "dedent", "replace", "cut"]))
        if action == "drop":
            del lines[index]
        elif action == "dup":
            lines.insert(index, lines[index])
        elif action == "indent":
            lines[index] = "  " + lines[index]
        elif action == "dedent":
            lines[index] = lines[index][2:]
        elif action == "replace":
            word = data.draw(
                st.sampled_from(["", "x", "- ", ":", "{", "[1, 2]", "null", "-5", "ü", "\t"])
            )
            line = lines[index]
            at = data.draw(st.integers(0, len(line)))
            lines[index] = line[:at] + word + line[at + data.draw(st.integers(0, 6)) :]
        else:
            lines[index] = lines[index][: data.draw(st.integers(0, len(lines[index])))]
        if not lines:
            lines = [""]
    _outcome("\n".join(lines) + "\n")
