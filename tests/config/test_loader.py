"""Config loading: a valid file, and one clear line (exit 2) for each kind of bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditor import load_config
from auditor.errors import ConfigError

VALID = """\
version: 1
databases:
  catalog:
    url: ${CATALOG_DB_URL:-sqlite:///catalog.db}
  reviews:
    url: postgresql+psycopg://auditor@localhost/reviews
    schema: public
settings:
  batch_size: 50000
  mask: partial
  max_findings: 1000
  fail_on: error
  statement_timeout_s: 300
reports:
  dir: reports/
  formats: [json, html]
rules:
  - name: reviews-have-live-products
    type: reference
    severity: error
    description: Every review points to an existing, not deleted product.
    from:
      db: reviews
      table: reviews
      columns: [product_id]
      key: [id]
      where: "status <> 'spam'"
    to:
      db: catalog
      table: products
      columns: [id]
      soft_delete: "deleted = true"
    aliases:
      db: catalog
      table: product_id_aliases
      old: [old_id]
      new: [new_id]
    allow_null: true
    key_type: auto
  - name: order-customer-pii
    type: pii
    severity: error
    source:
      db: catalog
      table: customers
      key: [id]
    copy:
      db: reviews
      table: orders
      key: [customer_id]
      row_key: [id]
    fields:
      - {source: email, copy: customer_email, normalize: [email]}
      - {source: full_name, copy: customer_name, normalize: [nfkc, trim, collapse_spaces, casefold]}
      - {source: phone, copy: customer_phone, normalize: [{phone: {region: US}}]}
    missing_source: report
    suggest_keys: true
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_spec_example_loads_with_every_field(tmp_path, monkeypatch):
    monkeypatch.delenv("CATALOG_DB_URL", raising=False)
    config = load_config(write(tmp_path, VALID))
    reference, pii = config.rules
    assert config.databases["catalog"].url == "sqlite:///catalog.db"
    assert config.databases["reviews"].schema_ == "public"
    assert reference.from_.where == "status <> 'spam'"
    assert reference.aliases and reference.aliases.new == ["new_id"]
    assert pii.fields[2].normalize == [{"phone": {"region": "US"}}]
    assert config.reports and config.reports.formats == ["json", "html"]
    assert config.sha256 and len(config.sha256) == 64


def test_environment_variables_are_interpolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_DB_URL", "sqlite:///from-env.db")
    assert load_config(write(tmp_path, VALID)).databases["catalog"].url == "sqlite:///from-env.db"


def test_defaults_apply(tmp_path):
    config = load_config(
        write(tmp_path, "version: 1\ndatabases:\n  a: {url: 'sqlite:///a.db'}\nrules: []\n")
    )
    assert config.settings.batch_size == 50_000
    assert config.settings.mask == "partial"
    assert config.settings.fail_on == "error"


def test_include_globs_are_relative_to_the_config(tmp_path):
    (tmp_path / "rules").mkdir()
    rule = VALID.split("rules:\n", 1)[1]
    write(tmp_path / "rules", "rules:\n" + rule, "extra.yaml")
    head = VALID.split("rules:\n", 1)[0].replace("reports:", "include: [rules/*.yaml]\nreports:")
    config = load_config(write(tmp_path, head + "rules: []\n"))
    assert [r.name for r in config.rules] == ["reviews-have-live-products", "order-customer-pii"]


def test_include_globs_may_be_absolute(tmp_path):
    (tmp_path / "shared").mkdir()
    rule = VALID.split("rules:\n", 1)[1]
    write(tmp_path / "shared", "rules:\n" + rule, "extra.yaml")
    pattern = f"{tmp_path / 'shared'}/*.yaml"
    head = VALID.split("rules:\n", 1)[0].replace("reports:", f"include: ['{pattern}']\nreports:")
    (tmp_path / "configs").mkdir()
    config = load_config(write(tmp_path / "configs", head + "rules: []\n"))
    assert [r.name for r in config.rules] == ["reviews-have-live-products", "order-customer-pii"]
    message = error_for(tmp_path, head.replace("shared/*", "missing/*") + "rules: []\n")
    assert "include[0]: no file matches" in message


def test_error_in_included_file_names_that_file(tmp_path):
    (tmp_path / "rules").mkdir()
    rule = VALID.split("rules:\n", 1)[1].replace("    to:\n", "    tox:\n", 1)
    write(tmp_path / "rules", "rules:\n" + rule, "extra.yaml")
    head = VALID.split("rules:\n", 1)[0].replace("reports:", "include: [rules/*.yaml]\nreports:")
    message = error_for(tmp_path, head + "rules: []\n")
    assert "extra.yaml:" in message and "tox" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.replace("rules:\n  - name: reviews", "rules:\n  - name: [reviews"), ":"),
        (lambda t: t.replace("version: 1\n", ""), "config.yaml:1: version: field required"),
        (lambda t: t.replace("settings:", "setings:"), "did you mean 'settings'"),
        (lambda t: t.replace("type: pii", "type: piii"), "unknown rule type 'piii'"),
        (lambda t: re.sub(r"    to:\n(      .*\n)+", "", t), "rules[0].to: field required"),
        (lambda t: t.replace("    to:\n", "    tox:\n"), "unknown key 'tox' (did you mean 'to'?)"),
        (lambda t: t.replace("db: catalog\n      table: products", "db: catlog\n      table: products"), "did you mean 'catalog'"),
        (lambda t: t.replace("normalize: [email]", "normalize: [emial]"), "unknown normaliser 'emial' (did you mean 'email'?)"),
        (lambda t: t.replace("CATALOG_DB_URL:-sqlite:///catalog.db", "AUDITOR_SURELY_UNSET"), "environment variable AUDITOR_SURELY_UNSET is not set"),
        (lambda t: t.replace("name: order-customer-pii", "name: reviews-have-live-products"), "duplicate rule name"),
        (lambda t: t.replace("batch_size: 50000", "batch_size: -5"), "settings.batch_size"),
        (lambda t: t.replace("old: [old_id]", "old: [old_id, other]"), "old has 2 columns but new has 1"),
        (lambda t: t.replace("columns: [product_id]", "columns: [product_id, x]"), "from.columns has 2 columns but to.columns has 1"),
        (lambda t: t.replace("name: order-customer-pii", "name: 'order customer;pii'"), "must match [a-z0-9_-]+"),
        (lambda t: t.split("rules:\n")[0] + "rules: {a: 1}\n", "rules: Input should be a valid list"),
        (lambda t: t.replace("mask: partial", "mask: full"), "settings.mask"),
        (lambda t: t.split("    fields:\n")[0] + "    missing_source: report\n", "rules[1].fields: field required"),
        (lambda t: t.replace("where: \"status <> 'spam'\"", "where: \" \""), "must not be empty"),
        (lambda t: t.replace("{phone: {region: US}}", "{regex: {pattern: '(['}}"), "regex pattern"),
        (lambda t: t.replace("key_type: auto", "key_type: number"), "key_type"),
    ],
    ids=[
        "invalid-yaml", "missing-version", "unknown-top-level-key", "unknown-rule-type",
        "reference-without-to", "misspelt-to", "undefined-db", "unknown-normaliser", "unset-env",
        "duplicate-rule-names", "negative-batch-size", "alias-width", "column-count",
        "bad-rule-name", "rules-not-a-list", "unknown-mask", "pii-without-fields",
        "empty-where", "bad-regex", "unknown-key-type",
    ],
)  # fmt: skip
def test_bad_config_is_one_line_with_file_and_line(tmp_path, mutate, expected):
    message = error_for(tmp_path, mutate(VALID))
    assert message.startswith(str(tmp_path / "config.yaml") + ":")
    assert expected in message


def test_invalid_yaml_names_the_line(tmp_path):
    message = error_for(tmp_path, "version: 1\ndatabases:\n  a: [unclosed\nrules: []\n")
    assert "invalid YAML" in message and ":4:" in message or ":3:" in message


def test_empty_and_missing_files_have_their_own_message(tmp_path):
    assert "config file is empty" in error_for(tmp_path, "  \n")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_yaml_keys_are_refused(tmp_path):
    message = error_for(tmp_path, "version: 1\nversion: 1\ndatabases: {a: {url: x}}\n")
    assert "duplicate key" in message and ":2:" in message
