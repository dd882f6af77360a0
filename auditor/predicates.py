"""`where` and `soft_delete` predicates: parsed, checked against an allowlist, re-written.

A predicate is SQL from the config that the database runs. Read-only transactions do not stop
everything (PostgreSQL runs `lo_import()` and `pg_terminate_backend()` in one; MariaDB
advances a sequence with `NEXTVAL`), and a filter on `;` is beaten by quotes the filter and
the server read differently. So a predicate is parsed with sqlglot in its database's dialect
and may hold only: columns of its own table, literals, comparisons, boolean logic,
arithmetic, `IN`, `BETWEEN`, `LIKE`, `IS [NOT] NULL`, `CASE`, casts to built-in types and the
pure functions in `FUNCTIONS`. No subquery, no other table, no bind parameter, no variable.

What reaches the database is sqlglot's rendering of the checked tree, never the config's
text: a comment the server would execute (MariaDB's `/*! ... */`) or a quote the two read
differently cannot carry anything past the check.
"""

from __future__ import annotations

import difflib
import logging

import sqlglot
import sqlglot.errors
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.dialects.mysql import MySQL

from auditor.errors import ConfigError


class MariaDB(MySQL):
    """MySQL's dialect, rendered as MariaDB reads it: MariaDB has no REGEXP_LIKE()."""

    class Generator(MySQL.Generator):  # type: ignore[valid-type,misc]
        TRANSFORMS = {
            **MySQL.Generator.TRANSFORMS,
            exp.RegexpLike: lambda self, e: self.binary(e, "REGEXP"),
        }


# SQLAlchemy dialect name -> sqlglot dialect.
DIALECTS: dict[str, str | type[Dialect]] = {
    "postgresql": "postgres",
    "mysql": MariaDB,
    "mariadb": MariaDB,
    "sqlite": "sqlite",
}

# The shape of a predicate: everything but functions.
SYNTAX = {
    "Column", "Identifier", "Literal", "Boolean", "Null", "Paren", "Tuple", "Neg", "Not",
    "And", "Or", "Xor", "EQ", "NEQ", "GT", "GTE", "LT", "LTE", "NullSafeEQ", "NullSafeNEQ",
    "Is", "In", "Between", "Like", "ILike", "SimilarTo", "RegexpLike", "RegexpILike", "Glob",
    "Escape", "Any", "All", "Array", "Bracket", "Add", "Sub", "Mul", "Div", "Mod", "IntDiv",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitwiseLeftShift",
    "BitwiseRightShift", "DPipe", "Case", "If", "Cast", "TryCast", "DataType", "DataTypeParam",
    "Interval", "Var", "Collate", "Introducer", "National", "HexString", "ByteString",
    "RawString", "BitString", "JSONExtract", "JSONExtractScalar", "JSONBExtract",
    "JSONBExtractScalar", "JSONPath", "JSONPathRoot", "JSONPathKey", "JSONPathSubscript",
    "AtTimeZone", "JSONValue",
}  # fmt: skip

# Pure functions: text, numbers, null handling, dates and times. sqlglot gives the functions it
# knows a node of their own (`lower` -> Lower); the rest arrive by name (Anonymous).
FUNCTIONS = {
    # text
    "Lower", "Upper", "Length", "ByteLength", "BitLength", "Trim", "Substring", "Left",
    "Right", "StrPosition", "Concat", "ConcatWs", "Pad", "Replace", "Reverse", "Initcap",
    # numbers
    "Abs", "Round", "Floor", "Ceil", "Sign",
    # nulls and choices
    "Coalesce", "Nullif", "Greatest", "Least",
    # dates and times
    "CurrentDate", "CurrentTime", "CurrentTimestamp", "DateAdd", "DateSub", "DateDiff",
    "DateTrunc", "TimestampTrunc", "TimestampAdd", "TimestampSub", "TimestampDiff",
    "DatetimeAdd", "DatetimeSub", "DatetimeDiff", "Extract", "Date", "Datetime", "Timestamp",
    "Day", "Month", "Year", "DayOfWeek", "TimeToStr", "StrToTime", "StrToDate",
    "TsOrDsToDate", "TsOrDsToTimestamp", "TimeStrToTime", "UnixToTime", "UnixSeconds",
    "LastDay", "UtcDate", "UtcTime", "UtcTimestamp", "JustifyDays",
    "JustifyHours", "JustifyInterval",
    # more text and numbers
    "SplitPart", "SubstringIndex", "RegexpReplace", "RegexpSubstr", "RegexpExtract", "MD5",
    "SHA", "SHA2", "Hex", "Chr", "Ascii", "Unicode", "Repeat", "Format", "Elt", "ToNumber",
    "Trunc", "Pow", "Sqrt", "Ln", "Log", "Exp", "WidthBucket", "Typeof",
    # JSON and arrays: containment and size
    "JSONType", "JSONValue", "JSONBContains", "JSONBContainsTopKey",
    "JSONBContainsAnyTopKeys", "JSONBContainsAllTopKeys", "ArrayContains",
    "ArrayContainsAll", "ArrayContainedBy", "ArrayOverlaps", "ArraySize",
}  # fmt: skip
FUNCTION_NAMES = {
    "now", "ifnull", "nvl", "char_length", "character_length", "octet_length", "btrim",
    "ltrim", "rtrim", "lpad", "rpad", "instr", "locate", "position", "date", "datetime",
    "julianday", "unixepoch", "strftime", "date_part", "age", "to_char", "to_date",
    "to_timestamp", "curdate", "curtime", "utc_date", "utc_timestamp", "unix_timestamp",
    "from_unixtime", "date_format", "datediff", "timestampdiff", "last_day", "dayofmonth",
    "dayofyear", "hour", "minute", "second", "week", "weekday", "quarter", "trunc", "mod",
    "power", "sqrt", "ceiling", "all", "any", "cardinality", "array_length", "array_position",
    "json_array_length", "jsonb_array_length", "json_unquote", "json_contains", "json_length",
    "json_extract", "make_date", "make_timestamp", "num_nulls", "num_nonnulls", "find_in_set",
    "field", "mid", "lcase", "ucase", "isnull", "iif", "substr", "timediff", "adddate",
    "subdate", "sysdate", "time", "likely", "unlikely", "printf", "date_trunc",
}  # fmt: skip
# Types a cast may name: SQL's own, not a catalog lookup (regclass) or a user type.
REFUSED_TYPES = {exp.DataType.Type.USERDEFINED, exp.DataType.Type.UNKNOWN}

DESCRIPTIONS = {
    "Select": "a subquery",
    "Subquery": "a subquery",
    "Exists": "a subquery",
    "Placeholder": "a bind parameter",
    "Parameter": "a parameter or variable",
    "SessionParameter": "a session variable",
    "PropertyEQ": "an assignment",
    "Star": "*",
    "ObjectIdentifier": "a cast to a catalog type",
    "Command": "a statement (sqlglot read it as one: write it as an expression)",
}
# sqlglot warns through logging when it falls back to reading a statement as a Command: that
# is refused above, and its warning must not reach the terminal as a stray line.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def checked(text: str, dialect: str, table: str, columns: list[str]) -> str:
    """The SQL to run for predicate `text` on `table` (whose columns are `columns`), or a
    ConfigError saying what in it is not allowed (see the module docstring)."""
    read: str | type[Dialect] = DIALECTS.get(dialect, dialect)
    try:
        trees = sqlglot.parse(text, read=read)
    except sqlglot.errors.SqlglotError as exc:
        raise ConfigError(f"not a SQL predicate auditor can read: {_first(exc)}") from None
    if len(trees) != 1 or trees[0] is None:
        raise ConfigError("must be one SQL predicate, not several statements")
    tree = trees[0]
    for node in tree.walk():
        if isinstance(node, exp.Column):
            _check_column(node, table, columns)
        elif refused := _refused(node):
            raise ConfigError(
                f"{refused} is not allowed in a predicate (allowed: columns of {table}, "
                "literals, comparisons, AND/OR/NOT, arithmetic, IN, BETWEEN, LIKE, IS NULL, "
                "CASE, casts and pure functions; see README, Predicates)"
            )
    return tree.sql(dialect=read, comments=False)


def _refused(node: exp.Expr) -> str | None:
    """What `node` is, in words, when it is not allowed; None when it is."""
    kind = type(node).__name__
    if kind in DESCRIPTIONS:
        return DESCRIPTIONS[kind]
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        return None if name in FUNCTION_NAMES else f"the function {name}()"
    if isinstance(node, exp.Func) and kind not in SYNTAX:
        return None if kind in FUNCTIONS else f"the function {node.sql_name().lower()}()"
    if kind not in SYNTAX:
        return kind.upper()
    if isinstance(node, exp.DataType) and node.this in REFUSED_TYPES:
        return f"a cast to {node.sql()}"
    return None


def _check_column(column: exp.Column, table: str, columns: list[str]) -> None:
    """A column must be one of the table's: unqualified or qualified by the table's name."""
    qualifier = [column.args.get(p) for p in ("catalog", "db", "table") if column.args.get(p)]
    if len(qualifier) > 1 or (qualifier and column.table.lower() != table.lower()):
        raise ConfigError(f"{column.sql()} is a column of another table: a predicate reads its own")
    identifier = column.this
    name = identifier.name
    if isinstance(identifier, exp.Identifier) and identifier.quoted:
        if name in columns:
            return
    elif name.lower() in (c.lower() for c in columns):
        return
    close = difflib.get_close_matches(name, columns, n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise ConfigError(f"{column.sql()} is no column of {table}{hint}")


def _first(exc: sqlglot.errors.SqlglotError) -> str:
    """sqlglot's first line, without the terminal underline codes it adds around the token."""
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return line.replace("\x1b[4m", "").replace("\x1b[0m", "")
