"""`auditor init` on the scenario databases of every backend pair and on the demo: every
reference the scenarios audit is proposed, at most one wrong rule per ten, and the draft runs."""

from __future__ import annotations

from pathlib import Path

import auditor
from auditor import demo
from auditor.draft import draft_config, shown_url
from tests.scenarios import build_pii, build_reference

# (referencing table, columns, referenced table, columns) of tests/scenarios.reference_rules
REFERENCES = {
    ("reviews", ("product_id",), "products", ("id",)),
    ("order_items", ("sku",), "products", ("sku",)),
    ("legacy_refs", ("product_ref",), "products", ("id",)),
    ("shares", ("product_uid",), "products", ("uid",)),
    ("cart", ("product_id", "size"), "variants", ("product_id", "size")),
}
# True of the data though no scenario rule audits it: cart rows hold product ids too.
ALSO_TRUE = {("cart", ("product_id",), "products", ("id",))}
# (copy table, key, source table, key, {copy column: source column}) of pii_rules
PII = {
    ("orders", ("customer_id",), "customers", ("id",),
     (("customer_email", "email"), ("customer_name", "full_name"), ("customer_phone", "phone"))),
    ("invoices", ("account_no",), "accounts", ("account_no",), (("email", "email"),)),
}  # fmt: skip


def proposed(draft) -> set[tuple]:
    found = set()
    for _, rule in draft.rules:
        if rule["type"] == "reference":
            found.add((rule["from"]["table"], tuple(rule["from"]["columns"]),
                       rule["to"]["table"], tuple(rule["to"]["columns"])))  # fmt: skip
        else:
            fields = tuple((f["copy"], f["source"]) for f in rule["fields"])
            found.add((rule["copy"]["table"], tuple(rule["copy"]["key"]),
                       rule["source"]["table"], tuple(rule["source"]["key"]), fields))  # fmt: skip
    return found


def runs_unchanged(draft, path: Path) -> None:
    path.write_text(draft.yaml())
    config = auditor.load_config(path)
    assert auditor.check(config).rules
    result = auditor.run(config)
    assert all(rule.status in ("pass", "warn", "fail") for rule in result.rules), [
        (rule.name, rule.error) for rule in result.rules
    ]


def assert_precise(found: set, expected: set, also_true: set = frozenset()) -> None:  # type: ignore[assignment]
    assert expected <= found, expected - found  # recall 1.0
    wrong = found - expected - also_true
    assert len(wrong) * 10 <= len(found - wrong), wrong


def test_the_reference_scenario(pair, tmp_path):
    catalog, reviews = pair
    build_reference(catalog, reviews)
    draft = draft_config([catalog.url, reviews.url])
    assert_precise(proposed(draft), REFERENCES, ALSO_TRUE)
    rules = {rule["from"]["table"]: rule for _, rule in draft.rules if rule["type"] == "reference"}
    products = rules["reviews"]
    assert products["to"]["soft_delete"] == "deleted = TRUE"
    assert products["aliases"]["table"] == "product_id_aliases"
    assert rules["legacy_refs"]["key_type"] == "int"
    assert rules["shares"].get("key_type", "uuid") == "uuid"  # auto says uuid for a UUID column
    runs_unchanged(draft, tmp_path / "draft.yaml")


def test_the_pii_scenario(pair, tmp_path):
    crm, orders = pair
    build_pii(crm, orders)
    draft = draft_config([crm.url, orders.url], phone_region="US")
    assert_precise(proposed(draft), PII)
    runs_unchanged(draft, tmp_path / "draft.yaml")


def test_the_demo_with_evidence_and_no_password(tmp_path):
    demo.build(tmp_path / "demo")
    urls = [
        f"sqlite:///{tmp_path / 'demo' / f'{n}.db'}"
        for n in ("catalog", "reviews", "crm", "orders")
    ]
    draft = draft_config(urls)
    expected = {
        ("reviews", ("product_id",), "products", ("id",)),
        ("wishlist_items", ("sku",), "products", ("sku",)),
        ("orders", ("customer_id",), "customers", ("id",),
         (("customer_email", "email"), ("customer_name", "full_name"), ("customer_phone", "phone"))),
    }  # fmt: skip
    assert proposed(draft) == expected
    text = draft.yaml()
    assert "# reviews.reviews(product_id) -> catalog.products(id)" in text
    assert "sampled distinct values found" in text
    runs_unchanged(draft, tmp_path / "draft.yaml")
    shown = shown_url("postgresql://auditor:s3cret@db.internal/crm", "crm")
    assert shown == "postgresql://auditor:${CRM_PASSWORD}@db.internal/crm"


def test_the_command_writes_a_draft_or_says_why_not(tmp_path):
    from tests.cli.test_cli import auditor as cli

    demo.build(tmp_path / "demo")
    urls = [f"sqlite:///{tmp_path / 'demo' / f'{n}.db'}" for n in ("crm", "orders")]
    done = cli("init", *urls, "--out", str(tmp_path / "draft.yaml"), "--sample", "50")
    assert done.returncode == 0, done.stderr
    assert "orders-customers-pii" in (tmp_path / "draft.yaml").read_text()
    assert cli("check", str(tmp_path / "draft.yaml")).returncode == 0
    bad = cli("init", urls[0], "not a url:://")
    assert bad.returncode == 2 and "URL 2: not a database URL" in bad.stderr
    one = cli("init", urls[0])
    assert one.returncode == 2 and "two or more databases" in one.stderr
    down = cli("init", urls[0], "postgresql://auditor:s3cret@127.0.0.1:1/gone")
    assert down.returncode == 3 and "'gone'" in down.stderr and "s3cret" not in down.stderr
