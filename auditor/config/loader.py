"""YAML -> typed Config: `${ENV}` interpolation, `include:` globs, and errors with line marks.

Every error names the file, the line and the field path, e.g.
`config.yaml:14: rules[0].to: field required`. Lines come from the node marks that pyyaml's
composer keeps, so pydantic's locations can be mapped back to the YAML the user wrote.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from auditor.config.model import Config, dotted
from auditor.errors import ConfigError

Loc = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class _Marks:
    """Where each value of the merged document came from: loc -> (file, 1-based line)."""

    where: dict[Loc, tuple[Path, int]] = field(default_factory=dict)

    def find(self, loc: Loc) -> tuple[Path, int]:
        while loc not in self.where and loc:
            loc = loc[:-1]
        return self.where[loc]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, interpolate, merge includes and validate one config file."""
    path = Path(path)
    marks = _Marks()
    data = _read_yaml(path, (), marks)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping with version, databases, rules")
    _merge_includes(path, data, marks)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, marks) from None
    _cross_check(config, marks)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return config.model_copy(update={"path": path, "sha256": digest, "marks": marks.where})


def _read_yaml(path: Path, prefix: Loc, marks: _Marks) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    if not text.strip():
        raise ConfigError(f"{path}:1: config file is empty")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}:1: config file is empty")
        return _construct(loader, node, path, prefix, marks)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Path, loc: Loc, marks: _Marks):
    marks.where[loc] = (path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{path}:{line}: {dotted(loc) or 'top level'}: keys must be text")
            key = str(key)
            if key in result:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{path}:{line}: {dotted((*loc, key))}: duplicate key")
            result[key] = _construct(loader, value_node, path, (*loc, key), marks)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, path, (*loc, index), marks)
            for index, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str):
        line = node.start_mark.line + 1
        if len(loc) == 3 and loc[0] == "databases" and loc[2] in ("url", "fix_url"):
            return _interpolate_url(value, path, line, loc)
        return _interpolate(value, path, line, loc)
    return value


def _interpolate(value: str, path: Path, line: int, loc: Loc) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{path}:{line}: {dotted(loc)}: environment variable {name} is not set "
            f"(export it, or write ${{{name}:-default}})"
        )

    return _ENV.sub(replace, value)


def _interpolate_url(value: str, path: Path, line: int, loc: Loc) -> str:
    """`${VAR}` in a URL, each value put into the part of the URL it stands in and quoted
    there: a password holding `@`, `:` or `/` stays the password (pasted in as text, the rest
    of it became the host, and was printed). A URL that is one variable is taken as it is."""
    if not _ENV.search(value) or _ENV.fullmatch(value):
        return _interpolate(value, path, line, loc)
    values: dict[str, str] = {}

    def token(match: re.Match[str]) -> str:
        name = f"auditorenv{len(values)}x"
        values[name] = _interpolate(match.group(0), path, line, loc)
        return name

    template = _ENV.sub(token, value)
    try:
        url = make_url(template)
    except (ArgumentError, ValueError):
        return _interpolate(value, path, line, loc)  # reported with its line when opened

    def filled(part: Any) -> Any:
        if isinstance(part, tuple):
            return tuple(filled(p) for p in part)
        if not isinstance(part, str):
            return part
        for name, text in values.items():
            part = part.replace(name, text)
        return part

    url = url.set(
        drivername=filled(url.drivername),
        username=filled(url.username),
        password=filled(url.password),
        host=filled(url.host),
        database=filled(url.database),
        query={k: filled(v) for k, v in url.query.items()},
    )
    return url.render_as_string(hide_password=False)


def _merge_includes(path: Path, data: dict[str, Any], marks: _Marks) -> None:
    """Append the `rules:` of every file matched by `include:` (globs relative to the config,
    or absolute)."""
    patterns = data.get("include") or []
    if not isinstance(patterns, list):
        return  # the model reports the type error with its line
    rules = data.setdefault("rules", [])
    if not isinstance(rules, list):
        return
    for index, pattern in enumerate(patterns):
        found = glob.glob(str(pattern), root_dir=path.parent, recursive=True)
        matches = sorted(f for f in (path.parent / match for match in found) if f.is_file())
        if not matches:
            file, line = marks.find(("include", index))
            raise ConfigError(f"{file}:{line}: include[{index}]: no file matches {pattern!r}")
        for included in matches:
            if included.resolve() == path.resolve():
                continue
            _append_rules(included, rules, marks)


def _append_rules(included: Path, rules: list[Any], marks: _Marks) -> None:
    local = _Marks()
    content = _read_yaml(included, (), local)
    if not isinstance(content, dict) or set(content) - {"rules"}:
        raise ConfigError(f"{included}:1: an included file holds only a `rules:` list")
    extra = content.get("rules") or []
    if not isinstance(extra, list):
        raise ConfigError(f"{included}:{local.find(('rules',))[1]}: rules: must be a list")
    for index, rule in enumerate(extra):
        target = len(rules)
        for loc, mark in local.where.items():
            if loc[:2] == ("rules", index):
                marks.where[("rules", target, *loc[2:])] = mark
        rules.append(rule)


def _config_error(exc: ValidationError, marks: _Marks) -> ConfigError:
    """Turn pydantic's first error into `file:line: path: message (hint)`."""
    errors = exc.errors(include_url=False)
    # An unknown key is usually a misspelt known one: its did-you-mean beats "field required".
    error = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    loc = _drop_union_tags(tuple(error["loc"]))
    file, line = marks.find(loc)
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "missing":
        message = "field required"
    elif kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}{_did_you_mean(str(loc[-1]), _allowed_keys(loc[:-1]))}"
    elif kind in ("literal_error", "enum"):
        message = f"{message}, got {error.get('input')!r}"
    elif kind == "union_tag_invalid":
        message = f"unknown rule type {error.get('input', {}).get('type')!r}; use reference or pii"
    elif kind == "union_tag_not_found":
        message = "field required: type (reference or pii)"
    return ConfigError(f"{file}:{line}: {dotted(loc) or 'top level'}: {message}")


def _drop_union_tags(loc: Loc) -> Loc:
    """pydantic puts the discriminator value in the path (`rules.0.reference.to`); users don't."""
    return tuple(
        part
        for i, part in enumerate(loc)
        if not (part in ("reference", "pii") and i > 0 and isinstance(loc[i - 1], int))
    )


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys a mapping at `loc` accepts, found by walking the model's annotations."""
    current: Any = Config
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    models = _models(current)
    names: list[str] = []
    for model in models:
        names += [info.alias or name for name, info in model.model_fields.items() if name != "path"]
    return names


def _step(annotation: Any, part: str | int) -> Any:
    for model in _models(annotation):
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _step(args[0], part)
    if origin in (Union, types.UnionType):
        for arg in args:
            found = _step(arg, part)
            if found is not None:
                return found
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is dict and isinstance(part, str):
        return args[1]
    return None


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _models(args[0])
    if origin in (Union, types.UnionType):
        return [model for arg in args for model in _models(arg)]
    return []


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; allowed: {', '.join(choices)}" if choices else ""


def _cross_check(config: Config, marks: _Marks) -> None:
    """Checks that span fields: database names exist, rule names are unique."""
    seen: dict[str, int] = {}
    for index, rule in enumerate(config.rules):
        if rule.name in seen:
            file, line = marks.find(("rules", index, "name"))
            raise ConfigError(
                f"{file}:{line}: rules[{index}].name: duplicate rule name {rule.name!r} "
                f"(first used by rules[{seen[rule.name]}])"
            )
        seen[rule.name] = index
        mistake = rule.fix_mistake()
        if mistake is not None:
            file, line = marks.find(("rules", index, "fix", mistake[0]))
            raise ConfigError(f"{file}:{line}: rules[{index}].fix.{mistake[0]}: {mistake[1]}")
        for side_name, side in rule.sides().items():
            if side.db not in config.databases:
                file, line = marks.find(("rules", index, side_name, "db"))
                known = list(config.databases)
                raise ConfigError(
                    f"{file}:{line}: rules[{index}].{side_name}.db: database {side.db!r} is not "
                    f"defined under databases{_did_you_mean(side.db, known)}"
                )
