"""Every file in rules/ against real databases built for its scenario, on every backend pair."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import sqlalchemy as sa

import auditor
from auditor import fix
from auditor.report import json as json_report
from tests.conftest import REDIS_URL
from tests.scenarios import EXPECTED_PII, crm_schema, orders_schema

RULES = Path(__file__).resolve().parents[1] / "rules"


def catalog_schema():
    md = sa.MetaData()
    products = sa.Table(
        "products",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("sku", sa.String(20), nullable=False),
        sa.Column("name", sa.String(40)),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    sa.Table(
        "product_id_aliases",
        md,
        sa.Column("old_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("new_id", sa.BigInteger, nullable=False),
    )
    live = sa.select(products.c.id, products.c.sku).where(products.c.deleted == sa.false())
    skus = ["SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5", "SKU-2"]
    rows = [
        {"id": i, "sku": sku, "name": f"P{i}", "deleted": i in (3, 5)}
        for i, sku in enumerate(skus, start=1)
    ]
    aliases = [(100, 1), (101, 102), (102, 4), (103, 104), (104, 103)]
    return (
        md,
        live,
        {
            "products": rows,
            "product_id_aliases": [{"old_id": o, "new_id": n} for o, n in aliases],
        },
    )


def reviews_schema():
    md = sa.MetaData()
    sa.Table(
        "reviews",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("product_id", sa.BigInteger),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_at", sa.Date),
    )
    sa.Table(
        "wishlist_items",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sku", sa.String(20)),
    )
    reviews = [
        (1, 1, "published", "2025-05-01"),
        (2, 3, "published", "2026-02-01"),  # soft-deleted product
        (3, 50, "published", "2025-03-01"),  # orphan, written before the cut-off
        (4, 51, "published", "2026-03-01"),  # orphan, recent
        (5, 100, "published", "2026-04-01"),  # retired id -> 1
        (6, 101, "published", "2025-04-01"),  # retired id -> 102 -> 4
        (7, 103, "published", "2026-05-01"),  # alias cycle
        (8, 5, "draft", "2026-06-01"),  # soft-deleted, but a draft
        (9, 2, "published", "2026-01-15"),
        (10, None, "published", None),
    ]
    rows = [
        {"id": i, "product_id": p, "status": s, "created_at": c and dt.date.fromisoformat(c)}
        for i, p, s, c in reviews
    ]
    items = [(1, "SKU-1"), (2, "SKU-2"), (3, "sku-1"), (4, "SKU-99")]
    return md, {"reviews": rows, "wishlist_items": [{"id": i, "sku": s} for i, s in items]}


def _catalog_pair(pair, monkeypatch):
    catalog, reviews = pair
    md, live, rows = catalog_schema()
    catalog.load(md, rows)
    with catalog.engine.begin() as conn:
        compiled = live.compile(conn, compile_kwargs={"literal_binds": True})
        conn.execute(sa.text(f"CREATE VIEW live_products AS {compiled}"))
    reviews.load(*reviews_schema())
    monkeypatch.setenv("CATALOG_DB_URL", catalog.url)
    monkeypatch.setenv("REVIEWS_DB_URL", reviews.url)


def _audit(name: str) -> dict[tuple[str, str], set]:
    config = auditor.load_config(RULES / name)
    plan = auditor.check(config)
    assert len(plan.rules) == len(config.rules)
    result = auditor.run(config)
    found: dict[tuple[str, str], set] = {}
    for rule in result.rules:
        assert rule.error is None, rule.error
        for f in rule.findings:
            value = next(iter(f.key.values()))
            extra = f.suggested and next(iter(f.suggested.values()))
            found.setdefault((f.rule, f.kind), set()).add((value, extra) if extra else value)
    return found


def test_event_delete_propagation(pair, monkeypatch):
    _catalog_pair(pair, monkeypatch)
    assert _audit("event-delete-propagation.yaml") == {
        ("reviews-outlive-deleted-products", "orphan"): {3, 4, 5, 6, 7}
    }


def test_existence_check_at_write(pair, monkeypatch):
    _catalog_pair(pair, monkeypatch)
    assert _audit("existence-check-at-write.yaml") == {
        ("recent-reviews-had-a-product", "orphan"): {4, 5, 7}
    }


def test_soft_delete(pair, monkeypatch):
    _catalog_pair(pair, monkeypatch)
    assert _audit("soft-delete.yaml") == {
        ("reviews-of-soft-deleted-products", "soft_deleted"): {2},
        ("reviews-of-soft-deleted-products", "orphan"): {3, 4, 5, 6, 7},
        ("reviews-of-products-not-live", "orphan"): {2, 3, 4, 5, 6, 7},
    }


def test_id_change_aliases(pair, monkeypatch, tmp_path):
    _catalog_pair(pair, monkeypatch)
    assert _audit("id-change-aliases.yaml") == {
        ("reviews-use-current-product-ids", "stale_alias"): {(5, 1), (6, 4)},
        ("reviews-use-current-product-ids", "orphan"): {3, 4, 7},
    }
    monkeypatch.setenv("REVIEWS_FIX_URL", pair[1].url)  # its fix block, applied
    config = auditor.load_config(RULES / "id-change-aliases.yaml")
    report = tmp_path / "report.json"
    with report.open("w") as out:
        json_report.write(auditor.run(config), out)
    result = fix.fix(config, str(report), out=tmp_path / "fixes", apply=True)
    assert [r.applied for r in result.rules] == [2]
    assert _audit("id-change-aliases.yaml") == {
        ("reviews-use-current-product-ids", "orphan"): {3, 4, 7}
    }


def test_business_key(pair, monkeypatch):
    _catalog_pair(pair, monkeypatch)
    assert _audit("business-key.yaml") == {
        ("wishlist-skus-exist", "duplicate_key"): {"SKU-2"},
        ("wishlist-skus-exist", "orphan"): {3, 4},
    }


def test_pii_duplication(pair, monkeypatch):
    crm, orders = pair
    crm.load(*crm_schema())
    orders.load(*orders_schema())
    monkeypatch.setenv("CRM_DB_URL", crm.url)
    monkeypatch.setenv("ORDERS_DB_URL", orders.url)
    found = _audit("pii-duplication.yaml")
    expected: dict[tuple[str, str], set] = {}
    for rule, kind, key, _field in EXPECTED_PII:
        if rule == "order-customer-pii":
            expected.setdefault(("order-customer-contact", kind), set()).add(key)
    assert found == expected


def _exports(root: Path) -> None:
    """Bookmarks and an access log naming products of catalog_schema() (3 and 5 deleted;
    100 -> 1, 101 -> 102 -> 4; 103 <-> 104)."""
    (root / "bookmarks").mkdir(parents=True)
    (root / "bookmarks" / "a.csv").write_text(
        "user,url\n"
        "u1,https://shop.example/products/1\n"  # live
        "u2,https://shop.example/products/3\n"  # soft-deleted
        "u3,https://shop.example/products/9\n"  # gone
        "u4,https://shop.example/products/100\n"  # retired: now 1
        "u5,https://shop.example/help\n"  # no id
    )
    (root / "logs" / "2026").mkdir(parents=True)
    with gzip.open(root / "logs" / "2026" / "access.log.gz", "wt") as handle:
        handle.write("GET /products/2\nGET /products/101 ref=/products/8\nGET /\n")


def _file_findings(name: str) -> set[tuple]:
    result = auditor.run(auditor.load_config(RULES / name))
    (rule,) = result.rules
    assert rule.error is None, rule.error
    return {(f.kind, f.key["line"], f.ref["product_id"], str(f.suggested)) for f in rule.findings}


def _catalog_and_exports(pair, monkeypatch, tmp_path) -> None:
    _catalog_pair(pair, monkeypatch)
    _exports(tmp_path / "exports")
    monkeypatch.setenv("EXPORTS_DIR", str(tmp_path / "exports"))


def test_broken_urls(pair, monkeypatch, tmp_path):
    _catalog_and_exports(pair, monkeypatch, tmp_path)
    assert _file_findings("broken-urls.yaml") == {
        ("soft_deleted", 3, "3", "None"),
        ("orphan", 4, "9", "None"),
        ("stale_alias", 5, "100", "{'id': 1}"),
    }


def test_audit_trail(pair, monkeypatch, tmp_path):
    _catalog_and_exports(pair, monkeypatch, tmp_path)
    assert _file_findings("audit-trail.yaml") == {
        ("stale_alias", 2, "101", "{'id': 4}"),
        ("orphan", 2, "8", "None"),
    }


def test_cache_invalidation(pair, monkeypatch, cache):
    """Cached products and customers in Redis against the catalog and the CRM."""
    catalog, crm = pair
    client, prefix = cache
    _catalog_pair((catalog, crm), monkeypatch)
    crm.load(*crm_schema())
    monkeypatch.setenv("CRM_DB_URL", crm.url)
    monkeypatch.setenv("CACHE_URL", REDIS_URL)
    monkeypatch.setenv("CACHE_PREFIX", f"{prefix}:")
    for product in (1, 3, 9, 100, 2):
        client.set(f"{prefix}:product:{product}", "page", ex=None if product == 2 else 600)
    client.set(f"{prefix}:product:2:reviews", "not a product entry")
    client.hset(f"{prefix}:customer:1", mapping={"email": "Ann@Example.com"})  # equal
    client.hset(f"{prefix}:customer:2", mapping={"email": "bobby@example.com"})  # drifted
    client.hset(f"{prefix}:customer:77", mapping={"email": "who@example.com"})  # gone
    result = auditor.run(auditor.load_config(RULES / "cache-invalidation.yaml"))
    assert [r.error for r in result.rules] == [None, None]
    found = {
        (f.rule, f.kind, f.key["redis_key"].removeprefix(f"{prefix}:"), str(f.suggested))
        for r in result.rules
        for f in r.findings
    }
    assert found == {
        ("product-cache-has-live-products", "soft_deleted", "product:3", "None"),
        ("product-cache-has-live-products", "orphan", "product:9", "None"),
        ("product-cache-has-live-products", "stale_alias", "product:100", "{'id': 1}"),
        ("product-cache-has-live-products", "no_ttl", "product:2", "None"),
        ("customer-cache-pii", "mismatch", "customer:2", "None"),
        ("customer-cache-pii", "missing_source", "customer:77", "None"),
    }
