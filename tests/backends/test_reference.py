"""Reference rules on every backend pair: every seeded finding, no near miss."""

from __future__ import annotations

import pytest

import auditor
from auditor.engine import RunOptions
from tests.scenarios import EXPECTED_REFERENCE, build_reference

pytestmark = pytest.mark.usefixtures("strategy")


def _by_identity(result: auditor.AuditResult) -> dict:
    found = {}
    for rule in result.rules:
        assert rule.status in ("pass", "warn", "fail"), (rule.name, rule.error)
        assert (rule.status == "warn") == (rule.severity == "warning" and rule.total > 0)
        for finding in rule.findings:
            (key_value,) = finding.key.values() if finding.kind != "duplicate_key" else ("dup",)
            found[(finding.rule, finding.kind, key_value)] = finding
    return found


def test_reference_findings_are_exact(pair, write_config):
    catalog, reviews = pair
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))
    result = auditor.run(config)

    found = _by_identity(result)
    dup = found.pop(("items-by-sku", "duplicate_key", "dup"))
    assert dup.key == {"sku": "SKU-DUP"} and dup.count == 2
    assert set(found) == set(EXPECTED_REFERENCE)
    for identity, fields in EXPECTED_REFERENCE.items():
        for name, value in fields.items():
            assert getattr(found[identity], name) == value, (identity, name)
    assert "cycle" in found[("reviews-products", "orphan", 6)].note
    assert "neither exists" in found[("reviews-products", "orphan", 7)].note
    assert found[("legacy-refs", "orphan", 4)].note  # unparsable as an int key
    counts = {r.name: r.counts for r in result.rules}
    assert counts["reviews-products"] == {"orphan": 3, "soft_deleted": 2, "stale_alias": 2}
    assert result.exit_code == 1 and result.status == "fail"


def test_recheck_drops_a_parent_inserted_during_the_scan(pair, write_config):
    catalog, reviews = pair
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))

    def insert_parent() -> None:
        catalog.execute("INSERT INTO products (id, sku, deleted) VALUES (50, 'late', FALSE)")

    options = RunOptions(batch_size=3, before_recheck=insert_parent)
    result = auditor.run(config, rules=["reviews-products"], options=options)
    orphans = [f.key["id"] for f in result.rules[0].findings if f.kind == "orphan"]
    assert 3 not in orphans and sorted(orphans) == [6, 7]


def test_no_recheck_reports_the_stale_candidate(pair, write_config):
    catalog, reviews = pair
    config = auditor.load_config(write_config(build_reference(catalog, reviews)))

    def insert_parent() -> None:
        catalog.execute("INSERT INTO products (id, sku, deleted) VALUES (50, 'late', FALSE)")

    options = RunOptions(batch_size=3, recheck=False, before_recheck=insert_parent)
    result = auditor.run(config, rules=["reviews-products"], options=options)
    orphans = [f.key["id"] for f in result.rules[0].findings if f.kind == "orphan"]
    assert 3 in orphans
