"""Seeded scenarios shared by engine tests: schemas, rows and the exact expected findings."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

U1 = uuid.UUID("0b9f5b4e-6a39-4c1a-9d55-3f1f2d7c8a01")
U2 = uuid.UUID("7d4f1c2a-98e3-4b6f-a1d2-5c3b4a596e02")
U_MISSING = uuid.UUID("ffffffff-0000-4000-8000-000000000003")


def catalog_schema() -> tuple[sa.MetaData, dict[str, list[dict[str, Any]]]]:
    md = sa.MetaData()
    sa.Table(
        "products",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("sku", sa.String(40)),
        sa.Column("uid", sa.Uuid),
        sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    )
    sa.Table(
        "product_id_aliases",
        md,
        sa.Column("old_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("new_id", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "variants",
        md,
        sa.Column("product_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("size", sa.String(8), primary_key=True),
    )
    products = [
        {"id": 1, "sku": "Café", "uid": U1, "deleted": False},
        {"id": 2, "sku": "cafe", "uid": U2, "deleted": True},
        {"id": 3, "sku": "SKU-DUP", "uid": None, "deleted": True},
        {"id": 4, "sku": "SKU-DUP", "uid": None, "deleted": False},
        {"id": 5, "sku": "SKU-5", "uid": None, "deleted": False},
        {"id": 7, "sku": "SKU-7", "uid": None, "deleted": False},
        {"id": 8, "sku": "SKU-8", "uid": None, "deleted": False},
    ]
    aliases = [
        {"old_id": 100, "new_id": 1},  # simple retired id
        {"old_id": 101, "new_id": 102},  # chain 101 -> 102 -> 5
        {"old_id": 102, "new_id": 5},
        {"old_id": 103, "new_id": 104},  # cycle 103 -> 104 -> 103
        {"old_id": 104, "new_id": 103},
        {"old_id": 105, "new_id": 999},  # chain ends nowhere
        {"old_id": 7, "new_id": 8},  # 7 still exists: never stale
    ]
    variants = [{"product_id": 1, "size": "S"}, {"product_id": 1, "size": "M"}]
    return md, {"products": products, "product_id_aliases": aliases, "variants": variants}


def reviews_schema() -> tuple[sa.MetaData, dict[str, list[dict[str, Any]]]]:
    md = sa.MetaData()
    sa.Table(
        "reviews",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("product_id", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
    )
    sa.Table(
        "order_items",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sku", sa.String(40)),
    )
    sa.Table(
        "legacy_refs",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("product_ref", sa.String(20)),
    )
    sa.Table(
        "shares",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("product_uid", sa.CHAR(36)),
    )
    sa.Table(
        "cart",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("product_id", sa.BigInteger),
        sa.Column("size", sa.String(8)),
    )
    reviews = [
        (1, 1, "ok"),  # exists
        (2, 2, "ok"),  # soft-deleted
        (3, 50, "ok"),  # orphan
        (4, 100, "ok"),  # stale -> 1
        (5, 101, "ok"),  # stale via chain -> 5
        (6, 103, "ok"),  # alias cycle -> orphan
        (7, 105, "ok"),  # alias chain ends nowhere -> orphan
        (8, None, "ok"),  # NULL: fine with allow_null
        (9, 7, "ok"),  # exists although an alias names it
        (10, 51, "spam"),  # excluded by from.where
        (11, 3, "ok"),  # soft-deleted
    ]
    items = [(1, "Café"), (2, "cafe"), (3, "CAFE"), (4, "SKU-DUP"), (5, "NOPE"), (6, "Cafe")]
    legacy = [(1, "0001"), (2, " 7"), (3, "50"), (4, "x1"), (5, None), (6, "5")]
    shares = [(1, str(U1).upper()), (2, str(U2)), (3, str(U_MISSING))]
    cart = [(1, 1, "S"), (2, 1, "XL"), (3, 1, None), (4, 2, "S")]
    return md, {
        "reviews": [dict(zip(("id", "product_id", "status"), r, strict=True)) for r in reviews],
        "order_items": [{"id": i, "sku": s} for i, s in items],
        "legacy_refs": [{"id": i, "product_ref": s} for i, s in legacy],
        "shares": [{"id": i, "product_uid": s} for i, s in shares],
        "cart": [dict(zip(("id", "product_id", "size"), r, strict=True)) for r in cart],
    }


def reference_rules() -> list[dict[str, Any]]:
    live = {
        "db": "catalog",
        "table": "products",
        "columns": ["id"],
        "soft_delete": "deleted = TRUE",
    }
    return [
        {
            "name": "reviews-products",
            "type": "reference",
            "from": {
                "db": "reviews",
                "table": "reviews",
                "columns": ["product_id"],
                "where": "status <> 'spam'",
            },
            "to": live,
            "aliases": {
                "db": "catalog",
                "table": "product_id_aliases",
                "old": ["old_id"],
                "new": ["new_id"],
            },
        },
        {
            "name": "reviews-not-null",
            "type": "reference",
            "severity": "warning",
            "from": {
                "db": "reviews",
                "table": "reviews",
                "columns": ["product_id"],
                "where": "product_id IS NULL OR id = 1",
            },
            "to": {"db": "catalog", "table": "products", "columns": ["id"]},
            "allow_null": False,
        },
        {
            "name": "items-by-sku",
            "type": "reference",
            "from": {"db": "reviews", "table": "order_items", "columns": ["sku"]},
            "to": {"db": "catalog", "table": "products", "columns": ["sku"]},
        },
        {
            "name": "legacy-refs",
            "type": "reference",
            "key_type": "int",
            "from": {"db": "reviews", "table": "legacy_refs", "columns": ["product_ref"]},
            "to": {"db": "catalog", "table": "products", "columns": ["id"]},
        },
        {
            "name": "shares-by-uid",
            "type": "reference",
            "key_type": "uuid",  # SQLite stores a UUID as CHAR(32): auto would say string
            "from": {"db": "reviews", "table": "shares", "columns": ["product_uid"]},
            "to": {"db": "catalog", "table": "products", "columns": ["uid"]},
        },
        {
            "name": "cart-variants",
            "type": "reference",
            "from": {"db": "reviews", "table": "cart", "columns": ["product_id", "size"]},
            "to": {"db": "catalog", "table": "variants", "columns": ["product_id", "size"]},
        },
    ]


# (rule, kind, key id) -> extra fields that must match
EXPECTED_REFERENCE: dict[tuple[str, str, int], dict[str, Any]] = {
    ("reviews-products", "soft_deleted", 2): {"ref": {"product_id": 2}},
    ("reviews-products", "soft_deleted", 11): {"ref": {"product_id": 3}},
    ("reviews-products", "orphan", 3): {"ref": {"product_id": 50}},
    ("reviews-products", "stale_alias", 4): {"suggested": {"id": 1}},
    ("reviews-products", "stale_alias", 5): {"suggested": {"id": 5}},
    ("reviews-products", "orphan", 6): {"ref": {"product_id": 103}},
    ("reviews-products", "orphan", 7): {"ref": {"product_id": 105}},
    ("reviews-not-null", "null_reference", 8): {"ref": {"product_id": None}},
    ("items-by-sku", "orphan", 3): {"ref": {"sku": "CAFE"}},
    ("items-by-sku", "orphan", 5): {"ref": {"sku": "NOPE"}},
    ("items-by-sku", "orphan", 6): {"ref": {"sku": "Cafe"}},
    ("legacy-refs", "orphan", 3): {"ref": {"product_ref": "50"}},
    ("legacy-refs", "orphan", 4): {"ref": {"product_ref": "x1"}},
    ("shares-by-uid", "orphan", 3): {},
    ("cart-variants", "orphan", 2): {"ref": {"product_id": 1, "size": "XL"}},
    ("cart-variants", "orphan", 4): {"ref": {"product_id": 2, "size": "S"}},
}


def build_reference(catalog, reviews) -> dict[str, Any]:
    catalog.load(*catalog_schema())
    reviews.load(*reviews_schema())
    return {
        "version": 1,
        "databases": {"catalog": {"url": catalog.url}, "reviews": {"url": reviews.url}},
        "settings": {"batch_size": 3},
        "rules": reference_rules(),
    }


# --- PII --------------------------------------------------------------------------------


def crm_schema() -> tuple[sa.MetaData, dict[str, list[dict[str, Any]]]]:
    md = sa.MetaData()
    sa.Table(
        "customers",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(120)),
        sa.Column("full_name", sa.String(120)),
        sa.Column("phone", sa.String(40)),
    )
    sa.Table(
        "accounts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account_no", sa.String(10)),
        sa.Column("email", sa.String(120)),
    )
    customers = [
        (1, "ann@example.com", "Ann Lee", "(415) 555-0100"),
        (2, "bob@example.com", "Bob Ray", "415-555-0101"),
        (3, "jose@example.com", "José Núñez", "+44 20 7946 0958"),
        (4, "cy@example.com", "Cy Young", "4155550104"),
        (5, "dee@example.com", "Dee Ott", "4155550105"),
        (6, "eve@example.com", "\ufb01ona Eve", "4155550106"),
    ]
    accounts = [(1, "A1", "a@x.com"), (2, "A1", "b@x.com"), (3, "A2", "c@x.com")]
    names = ("id", "email", "full_name", "phone")
    return md, {
        "customers": [dict(zip(names, c, strict=True)) for c in customers],
        "accounts": [dict(zip(("id", "account_no", "email"), a, strict=True)) for a in accounts],
    }


def orders_schema() -> tuple[sa.MetaData, dict[str, list[dict[str, Any]]]]:
    md = sa.MetaData()
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.BigInteger),
        sa.Column("customer_email", sa.String(120)),
        sa.Column("customer_name", sa.String(120)),
        sa.Column("customer_phone", sa.String(40)),
    )
    sa.Table(
        "invoices",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account_no", sa.String(10)),
        sa.Column("email", sa.String(120)),
    )
    orders = [
        (1, 1, " ANN@example.com ", "ann  lee", "4155550100"),  # near misses only
        (2, 2, "bob@example.org", "Bob Ray", "4155550101"),  # email mismatch
        (3, 3, "jose@example.com", "Jose Nunez", "+442079460958"),  # accents differ
        (4, 4, "cy@example.com", None, "4155550199"),  # missing name, phone mismatch
        (5, 99, "zed@example.com", "Zed", "4155550999"),  # missing source
        (6, 6, "eve@example.com", "fiona eve", "415 555 0106"),  # NFKC ligature: equal
        (7, 1, "dee@example.com", "Dee Ott", "4155550105"),  # swapped: holds customer 5
        (8, 5, "ann@example.com", "Ann Lee", "(415) 555-0100"),  # swapped: holds customer 1
        (9, None, "x@example.com", "X", "1"),  # no reference: not judged
        (10, 2, "", "Bob Ray", "4155550101"),  # empty email: missing value
        (11, 4, "cy@example.com\u200b", "Cy\u00a0Young", "415.555.0104"),  # invisible chars
    ]
    names = ("id", "customer_id", "customer_email", "customer_name", "customer_phone")
    invoices = [(1, "A1", "a@x.com"), (2, "A2", "c@x.com")]
    return md, {
        "orders": [dict(zip(names, o, strict=True)) for o in orders],
        "invoices": [dict(zip(("id", "account_no", "email"), i, strict=True)) for i in invoices],
    }


NAME_RULE = ["nfkc", "trim", "collapse_spaces", "casefold"]


def pii_rules() -> list[dict[str, Any]]:
    source = {"db": "crm", "table": "customers", "key": ["id"]}
    copy = {"db": "orders", "table": "orders", "key": ["customer_id"]}
    return [
        {
            "name": "order-customer-pii",
            "type": "pii",
            "source": source,
            "copy": copy,
            "fields": [
                {"source": "email", "copy": "customer_email", "normalize": ["email"]},
                {"source": "full_name", "copy": "customer_name", "normalize": NAME_RULE},
                {
                    "source": "phone",
                    "copy": "customer_phone",
                    "normalize": [{"phone": {"region": "US"}}],
                },
            ],
        },
        {
            "name": "order-names-accents",
            "type": "pii",
            "severity": "warning",
            "source": source,
            "copy": copy,
            "fields": [
                {
                    "source": "full_name",
                    "copy": "customer_name",
                    "normalize": ["nfkc", "strip_accents", *NAME_RULE],
                }
            ],
            "missing_source": "ignore",
            "suggest_keys": False,
        },
        {
            "name": "invoice-accounts",
            "type": "pii",
            "source": {"db": "crm", "table": "accounts", "key": ["account_no"]},
            "copy": {"db": "orders", "table": "invoices", "key": ["account_no"]},
            "fields": [{"source": "email", "copy": "email", "normalize": ["email"]}],
        },
    ]


# (rule, kind, order id, field) -> expected suggested_key
EXPECTED_PII: dict[tuple[str, str, Any, str | None], Any] = {
    ("order-customer-pii", "mismatch", 2, "email"): None,
    ("order-customer-pii", "mismatch", 3, "full_name"): None,
    ("order-customer-pii", "missing_value", 4, "full_name"): None,
    ("order-customer-pii", "mismatch", 4, "phone"): None,
    ("order-customer-pii", "missing_source", 5, None): None,
    ("order-customer-pii", "mismatch", 7, "email"): {"id": 5},
    ("order-customer-pii", "mismatch", 7, "full_name"): {"id": 5},
    ("order-customer-pii", "mismatch", 7, "phone"): {"id": 5},
    ("order-customer-pii", "mismatch", 8, "email"): {"id": 1},
    ("order-customer-pii", "mismatch", 8, "full_name"): {"id": 1},
    ("order-customer-pii", "mismatch", 8, "phone"): {"id": 1},
    ("order-customer-pii", "missing_value", 10, "email"): None,
    ("order-names-accents", "missing_value", 4, "full_name"): None,
    ("order-names-accents", "mismatch", 7, "full_name"): None,
    ("order-names-accents", "mismatch", 8, "full_name"): None,
    ("invoice-accounts", "duplicate_key", "A1", None): None,
}


def build_pii(crm, orders) -> dict[str, Any]:
    crm.load(*crm_schema())
    orders.load(*orders_schema())
    return {
        "version": 1,
        "databases": {"crm": {"url": crm.url}, "orders": {"url": orders.url}},
        "settings": {"batch_size": 4},
        "rules": pii_rules(),
    }
