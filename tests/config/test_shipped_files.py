"""Every YAML file that ships is loaded by a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor import load_config
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]


def test_config_example_is_valid(monkeypatch):
    for var in ("CATALOG_DB_URL", "REVIEWS_DB_URL", "CRM_DB_URL", "ORDERS_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    config = load_config(ROOT / "config.example.yaml")
    assert [r.name for r in config.rules] == ["reviews-have-live-products", "order-customer-pii"]


@pytest.mark.parametrize("path", sorted((ROOT / "rules").glob("*.yaml")), ids=lambda p: p.name)
def test_rule_files_load(path):
    assert load_config(path).rules


def test_readme_quick_start_works_against_the_demo(tmp_path, monkeypatch, cache):
    """`make demo` then `auditor check config.example.yaml` and `auditor check rules/*.yaml`."""
    import auditor
    from auditor import demo

    for var in ("CATALOG_DB_URL", "REVIEWS_DB_URL", "CRM_DB_URL", "ORDERS_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    demo.build(tmp_path / "demo")
    # rules/ name the demo's exported files relative to themselves (../demo/exports)
    monkeypatch.setenv("EXPORTS_DIR", str(tmp_path / "demo" / "exports"))
    # The demo needs no Redis; cache-invalidation.yaml gets a stale entry in the test's own.
    client, prefix = cache
    monkeypatch.setenv("CACHE_URL", REDIS_URL)
    monkeypatch.setenv("CACHE_PREFIX", f"{prefix}:")
    client.set(f"{prefix}:product:5001", "a deleted product's page", ex=600)
    for path in [ROOT / "config.example.yaml", *sorted((ROOT / "rules").glob("*.yaml"))]:
        config = auditor.load_config(path)
        assert auditor.check(config).rules, path
        result = auditor.run(config)
        assert all(r.error is None for r in result.rules), (path, [r.error for r in result.rules])
        # the demo holds a problem for every rule (a warning rule's: status warn)
        assert {r.status for r in result.rules} & {"fail", "warn"}, path
