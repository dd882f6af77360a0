"""Typed, frozen config models (SPEC §2). Raw dicts never travel past the loader."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from auditor.errors import ConfigError
from auditor.normalize import NormalizerSpec, validate_normalizer

RULE_NAME = re.compile(r"^[a-z0-9_-]+$")
KeyType = Literal["auto", "int", "string", "uuid"]
Severity = Literal["error", "warning"]
FailOn = Literal["error", "warning", "never"]
MaskMode = Literal["partial", "hash", "none"]
ReportFormat = Literal["json", "html", "csv", "junit", "markdown"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Columns = Annotated[list[str], Field(min_length=1)]


FileFormat = Literal["auto", "csv", "jsonl", "parquet", "lines"]


class DatabaseConfig(Model):
    """A SQL database (`url`) or a directory of files (`path`, relative to the config)."""

    url: str | None = None
    # A writable login for `auditor fix --apply` (SPEC §10); the audit itself only uses `url`.
    fix_url: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    path: str | None = None
    format: FileFormat = "auto"

    @model_validator(mode="after")
    def _url_or_path(self) -> DatabaseConfig:
        if (self.url is None) == (self.path is None):
            raise ValueError("give either url (a database) or path (a directory of files)")
        if self.path is not None and self.schema_ is not None:
            raise ValueError("schema is for SQL databases, not a path")
        if self.path is not None and self.fix_url is not None:
            raise ValueError("fix_url is for databases; auditor writes no files of a path")
        return self


class Settings(Model):
    batch_size: PositiveInt = 50_000
    mask: MaskMode = "partial"
    max_findings: Annotated[int, Field(ge=0)] = 1000
    fail_on: FailOn = "error"
    statement_timeout_s: PositiveInt | None = 300
    # Incremental runs (SPEC §11): where each rule's state lives (relative to the config), and
    # how far back before the last run's newest change rows are read again.
    state_dir: str = ".auditor-state/"
    change_lag_s: Annotated[int, Field(ge=0)] = 300


class ReportsConfig(Model):
    dir: str = "reports/"
    formats: list[ReportFormat] = Field(default_factory=lambda: ["json"])  # type: ignore[arg-type]


class TableSide(Model):
    db: str
    table: str
    where: str | None = None
    # A Redis side's values (SPEC §9): none (keys only), hash, json or string.
    value: Literal["none", "hash", "json", "string"] | None = None
    # A Redis side: every matched key that never expires is a `no_ttl` finding.
    require_ttl: bool = False

    @field_validator("where")
    @classmethod
    def _one_predicate(cls, value: str | None) -> str | None:
        return _predicate(value)


class Extract(Model):
    """References (or copies) found inside a text column: every match of `pattern` is one, and
    its named groups are the columns the side names (a `from`'s `columns`; a `copy`'s `key` and
    its fields' `copy`)."""

    column: str
    pattern: str

    def missing(self, names: list[str]) -> str | None:
        """Why `names` are not all named groups of the pattern, or None."""
        groups = re.compile(self.pattern).groupindex
        absent = [name for name in names if name not in groups]
        if not absent:
            return None
        return f"{absent} are no named group of extract.pattern (it has {sorted(groups)})"

    @field_validator("pattern")
    @classmethod
    def _named_groups(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if not compiled.groupindex:
            raise ValueError("needs named groups, e.g. '/products/(?P<product_id>\\d+)'")
        return value


class FromSide(TableSide):
    """The referencing rows. `changed`: the column that moves when a row changes (a timestamp
    or an increasing version); `run --incremental` then reads only rows changed since the last
    run (SPEC §11). The same on every table side."""

    columns: Columns
    key: Columns | None = None
    extract: Extract | None = None
    changed: str | None = None

    @model_validator(mode="after")
    def _extracted_columns(self) -> FromSide:
        problem = self.extract.missing(self.columns) if self.extract else None
        if problem:
            raise ValueError(f"columns {problem}")
        return self


class ToSide(TableSide):
    columns: Columns
    soft_delete: str | None = None
    changed: str | None = None

    @field_validator("soft_delete")
    @classmethod
    def _one_soft_delete(cls, value: str | None) -> str | None:
        return _predicate(value)


class AliasSide(TableSide):
    old: Columns
    new: Columns

    @model_validator(mode="after")
    def _same_width(self) -> AliasSide:
        if len(self.old) != len(self.new):
            raise ValueError(f"old has {len(self.old)} columns but new has {len(self.new)}")
        return self


class SourceSide(TableSide):
    key: Columns
    changed: str | None = None


class CopySide(TableSide):
    key: Columns
    row_key: Columns | None = None
    extract: Extract | None = None
    changed: str | None = None


class FieldRule(Model):
    source: str
    copy_: str = Field(alias="copy")
    normalize: list[NormalizerSpec] = Field(default_factory=list)

    @field_validator("normalize", mode="before")
    @classmethod
    def _known_normalizers(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [validate_normalizer(item) for item in value]


RowAction = Literal["delete", "nullify", "none"]


class ReferenceFix(Model):
    """What `auditor fix` does per finding kind of a reference rule (SPEC §10); default none."""

    stale_alias: Literal["rewrite", "none"] = "none"
    orphan: RowAction = "none"
    soft_deleted: RowAction = "none"


class PiiFix(Model):
    """What `auditor fix` does per finding kind of a pii rule (SPEC §10). A mismatch that names
    a `suggested_key` is a wrong entity: only `wrong_entity: rekey` touches it."""

    mismatch: Literal["copy_source", "none"] = "none"
    missing_value: Literal["copy_source", "none"] = "none"
    wrong_entity: Literal["rekey", "none"] = "none"


class RuleBase(Model):
    """What both rule types share."""

    name: str
    severity: Severity = "error"
    description: str | None = None
    key_type: KeyType = "auto"

    def fingerprint(self) -> str:
        """SHA-256 of what the rule checks (its fix block left out: changing what `auditor
        fix` does with findings does not change the findings)."""
        text = self.model_dump_json(by_alias=True, exclude={"fix"})
        return hashlib.sha256(text.encode()).hexdigest()

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not RULE_NAME.match(value):
            raise ValueError(f"rule name {value!r} must match [a-z0-9_-]+ (e.g. reviews-products)")
        return value


class ReferenceRule(RuleBase):
    type: Literal["reference"]
    from_: FromSide = Field(alias="from")
    to: ToSide
    aliases: AliasSide | None = None
    allow_null: bool = True
    fix: ReferenceFix = Field(default_factory=ReferenceFix)

    @model_validator(mode="after")
    def _same_width(self) -> ReferenceRule:
        width = len(self.from_.columns)
        if len(self.to.columns) != width:
            raise ValueError(
                f"from.columns has {width} columns but to.columns has {len(self.to.columns)}"
            )
        if self.aliases and len(self.aliases.old) != width:
            raise ValueError(f"aliases.old has {len(self.aliases.old)} columns, expected {width}")
        return self

    def fix_mistake(self) -> tuple[str, str] | None:
        """(fix key, why) when the fix block contradicts the rest of the rule, else None."""
        if self.fix.stale_alias == "rewrite" and self.aliases is None:
            return "stale_alias", "rewrite needs aliases (the retired -> current ids)"
        for kind in ("orphan", "soft_deleted"):
            if getattr(self.fix, kind) == "nullify" and not self.allow_null:
                return kind, (
                    "nullify under allow_null: false would make each fixed row a "
                    "null_reference finding; use delete or none"
                )
        return None

    def sides(self) -> dict[str, TableSide]:
        sides: dict[str, TableSide] = {"from": self.from_, "to": self.to}
        if self.aliases:
            sides["aliases"] = self.aliases
        return sides


class PiiRule(RuleBase):
    type: Literal["pii"]
    source: SourceSide
    copy_: CopySide = Field(alias="copy")
    fields: Annotated[list[FieldRule], Field(min_length=1)]
    missing_source: Literal["report", "ignore"] = "report"
    suggest_keys: bool = True
    fix: PiiFix = Field(default_factory=PiiFix)

    @model_validator(mode="after")
    def _same_width(self) -> PiiRule:
        if len(self.source.key) != len(self.copy_.key):
            raise ValueError(
                f"source.key has {len(self.source.key)} columns but copy.key has "
                f"{len(self.copy_.key)}"
            )
        extract = self.copy_.extract
        named = [*self.copy_.key, *(f.copy_ for f in self.fields)]
        problem = extract.missing(named) if extract else None
        if problem:
            raise ValueError(f"copy.key and fields' copy columns {problem}")
        return self

    def fix_mistake(self) -> tuple[str, str] | None:
        """(fix key, why) when the fix block contradicts the rest of the rule, else None."""
        if self.fix.wrong_entity == "rekey" and not self.suggest_keys:
            return "wrong_entity", "rekey needs suggest_keys: true (it names the right row)"
        return None

    def sides(self) -> dict[str, TableSide]:
        return {"source": self.source, "copy": self.copy_}


Rule = Annotated[ReferenceRule | PiiRule, Field(discriminator="type")]


class Config(Model):
    version: Literal[1]
    databases: Annotated[dict[str, DatabaseConfig], Field(min_length=1)]
    settings: Settings = Field(default_factory=Settings)
    reports: ReportsConfig | None = None
    include: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    path: Path | None = Field(default=None, exclude=True)
    sha256: str | None = Field(default=None, exclude=True)
    # Where each value came from: field path -> (file, line), kept by the loader so that
    # errors found later (by looking at the databases) name the file and line too.
    marks: dict[tuple[str | int, ...], tuple[Path, int]] = Field(
        default_factory=dict, exclude=True, repr=False
    )

    def locate(self, loc: tuple[str | int, ...]) -> str:
        """`file:line: dotted.path` for a field, e.g. `audit.yaml:14: rules[0].to.table`;
        the nearest enclosing field that has a line when this one has none."""
        found = loc
        while found and found not in self.marks:
            found = found[:-1]
        file, line = self.marks.get(found, (self.path or Path("config"), 1))
        return f"{file}:{line}: {dotted(loc) or 'top level'}"

    def config_error(self, error: ConfigError, *within: str | int) -> ConfigError:
        """`error` (from planning, whose `loc` is relative to `within`) with file:line."""
        loc = (*within, *(error.loc or ()))
        return error.carried(ConfigError(f"{self.locate(loc)}: {error.message}"))

    def rule(self, name: str) -> ReferenceRule | PiiRule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)


def dotted(loc: tuple[str | int, ...]) -> str:
    """A field path as users write it: `rules[0].to.columns[1]`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _predicate(value: str | None) -> str | None:
    """What a predicate may hold is checked against its database (see auditor.predicates)."""
    if value is not None and not value.strip():
        raise ValueError("must not be empty")
    return value
