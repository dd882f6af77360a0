"""The README's command reference, generated from the CLI itself.

`.venv/bin/python scripts/readme.py` rewrites the block between the `cli:start` and
`cli:end` markers; tests/cli/test_readme.py fails when the README and the code disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- cli:start[^>]*-->\n).*?(<!-- cli:end -->)", re.S)


def _options(command) -> list[str]:  # noqa: ANN001 - typer's own click command
    """Each option as `` `--name METAVAR`: what it does ``."""
    rows = []
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        names = ", ".join(param.opts + param.secondary_opts)
        metavar = param.metavar if param.metavar not in (None, "") else ""
        choices = getattr(getattr(param, "type_descriptor", None), "choices", None)
        if choices:
            metavar = "|".join(str(getattr(c, "value", c)) for c in choices)
        value = f" {metavar}" if metavar and not param.is_flag else ""
        rows.append(f"`{names}{value}`: {(param.help or '').rstrip('.')}")
    return rows


def reference() -> str:
    """A table of commands, then each command's options, as `--help` describes them."""
    from auditor.cli import app

    group = typer.main.get_command(app)
    lines = ["| command | what it does |", "|---|---|"]
    commands = list(group.commands.items())  # type: ignore[attr-defined]
    for name, command in commands:
        args = [p.name.upper() for p in command.params if p.param_type_name == "argument"]
        usage = " ".join(["auditor", name, *args])
        lines.append(f"| `{usage}` | {(command.help or '').strip()} |")
    lines.append(
        "| `auditor --version`, `auditor --debug COMMAND` | the version; tracebacks on stderr |"
    )
    lines.append("")
    for name, command in commands:
        rows = _options(command)
        if rows:
            lines.append(f"- `auditor {name}` options: " + "; ".join(rows) + ".")
    return "\n".join(lines) + "\n"


def rendered(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + reference() + m.group(2), text)


def main() -> None:
    text = README.read_text()
    new = rendered(text)
    if new != text:
        README.write_text(new)
        sys.stdout.write("README.md: command reference updated\n")


if __name__ == "__main__":
    main()
