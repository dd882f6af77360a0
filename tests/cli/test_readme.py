"""The README is true to the code: its command reference is generated from the CLI, its
demo commands run as written, it stays short and links only inside the repository."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import readme  # noqa: E402  (scripts/readme.py)

TEXT = (ROOT / "README.md").read_text()


def test_the_command_reference_is_generated_from_the_cli():
    assert readme.rendered(TEXT) == TEXT, "run: python scripts/readme.py"


def test_the_readme_is_short_and_links_only_inside_the_repository():
    assert len(TEXT.splitlines()) <= 300
    links = re.findall(r"\]\(([^)]+)\)", TEXT)
    assert links and all(not re.match(r"[a-z]+:", link) for link in links), links
    for link in links:
        assert (ROOT / link.split("#")[0]).exists(), link
    assert "http://" not in TEXT and "https://" not in TEXT


def _tested_block() -> list[str]:
    block = TEXT.split("<!-- tested:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_demo_commands_run_as_written(tmp_path):
    """After `make demo` (here: `auditor demo`, which it runs), in a copy of the repository's
    example files; `# exit N` in a line's comment is the exit code it must end with."""
    shutil.copy(ROOT / "config.example.yaml", tmp_path)
    demo = subprocess.run(
        [sys.executable, "-m", "auditor", "demo", "--dir", "demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    for line in _tested_block():
        command, _, comment = line.partition("#")
        expected = int(m.group(1)) if (m := re.search(r"exit (\d+)", comment)) else 0
        words = shlex.split(command)
        assert words[0] == ".venv/bin/auditor", line
        result = subprocess.run(
            [sys.executable, "-m", "auditor", *words[1:]],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == expected, (line, result.stderr)
        assert "Traceback" not in result.stderr and "warning" not in result.stderr.lower()
