"""`auditor demo`: four SQLite databases with realistic, seeded problems, and their config.

Every finding kind of SPEC §3 is seeded at least twice, next to near misses that must not be
reported (emails differing in case, reformatted phone numbers, double spaces in names).
"""

from __future__ import annotations

import csv
import gzip
import random
import sqlite3
from pathlib import Path

import yaml

SEED = 20261125
FIRST = [
    "Ann",
    "Bob",
    "Chloé",
    "Dmitri",
    "Emma",
    "Farid",
    "Grace",
    "Hiro",
    "Inés",
    "Jamal",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Olu",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Vera",
    "Wen",
    "Xavier",
    "Yara",
    "Zoë",
]  # noqa: E501
LAST = [
    "Lee",
    "Ray",
    "Núñez",
    "Petrov",
    "Schmidt",
    "Haddad",
    "Okafor",
    "Tanaka",
    "García",
    "Brown",
    "Mensah",
    "Weber",
    "Rossi",
    "Silva",
    "Adeyemi",
    "Patel",
    "Novak",
    "Kowalski",
    "Larsen",
    "Khan",
    "Müller",
    "Dubois",
    "Chen",
    "Moreau",
    "Ito",
    "Costa",
]  # noqa: E501
DOMAINS = ["example.com", "mail.example.org", "post.example.net"]
ADJECTIVES = [
    "Quiet",
    "Rapid",
    "Golden",
    "Crimson",
    "Solar",
    "Urban",
    "Alpine",
    "Lunar",
    "Coastal",
    "Velvet",
]
NOUNS = [
    "Kettle",
    "Backpack",
    "Lamp",
    "Headphones",
    "Blender",
    "Jacket",
    "Notebook",
    "Speaker",
    "Tent",
    "Bottle",
]

N_PRODUCTS, N_REVIEWS, N_CUSTOMERS, N_ORDERS = 400, 3000, 800, 2500


def _connect(path: Path) -> sqlite3.Connection:
    path.unlink(missing_ok=True)
    return sqlite3.connect(path)


def build_catalog(path: Path, rng: random.Random) -> None:
    db = _connect(path)
    db.executescript(
        """
        CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, name TEXT NOT NULL,
                               deleted BOOLEAN NOT NULL DEFAULT 0);
        CREATE INDEX ix_products_sku ON products (sku);
        CREATE TABLE product_id_aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER NOT NULL);
        CREATE VIEW live_products AS SELECT id, sku, name FROM products WHERE deleted = 0;
        """
    )
    rows = []
    for pid in range(1, N_PRODUCTS + 1):
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        rows.append((pid, f"SKU-{pid:05d}", name, 1 if pid in (13, 77, 150) else 0))
    # a re-import created two products under SKUs that already existed: duplicate business keys
    rows += [(N_PRODUCTS + 1, "SKU-00200", "Re-imported item", 0)]
    rows += [(N_PRODUCTS + 2, "SKU-00301", "Re-imported item", 0)]
    db.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", rows)
    # ids 9001..9003 were retired by a migration; 9004 -> 9005 -> 42 is a chain;
    # 9006 <-> 9007 is a cycle; 9008 points at a product that was deleted for good.
    aliases = [(9001, 5), (9002, 17), (9003, 250), (9004, 9005), (9005, 42)]
    aliases += [(9006, 9007), (9007, 9006), (9008, 99999)]
    db.executemany("INSERT INTO product_id_aliases VALUES (?, ?)", aliases)
    db.commit()
    db.close()


def build_reviews(path: Path, rng: random.Random) -> None:
    db = _connect(path)
    db.executescript(
        """
        CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, rating INTEGER,
                              status TEXT NOT NULL, body TEXT, created_at TEXT NOT NULL);
        CREATE TABLE wishlist_items (id INTEGER PRIMARY KEY, sku TEXT NOT NULL);
        """
    )
    rows: list[tuple[int, int | None, int, str, str, str]] = []
    for rid in range(1, N_REVIEWS + 1):
        created = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        rows.append(
            (rid, rng.randint(1, N_PRODUCTS), rng.randint(1, 5), "published", "...", created)
        )
    seeded = {
        11: 5001,  # orphan: product deleted, delete event lost
        12: 5002,  # orphan
        13: 13,  # soft-deleted product
        14: 77,  # soft-deleted product
        15: 9001,  # stale alias -> 5
        16: 9004,  # stale alias chain -> 42
        17: 9006,  # alias cycle -> orphan
        18: None,  # no product at all
        19: None,
        20: 6000,  # orphan, but the review is spam: excluded by where
    }
    for rid, pid in seeded.items():
        status = "spam" if rid == 20 else "published"
        rows[rid - 1] = (rid, pid, 1, status, "...", f"2026-0{rid % 9 + 1}-15")
    db.executemany("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?)", rows)
    items = [(i, f"SKU-{rng.randint(1, N_PRODUCTS):05d}") for i in range(1, 501)]
    items[0] = (1, "SKU-00200")  # a duplicated sku
    items[1] = (2, "SKU-99999")  # orphan by business key
    items[2] = (3, "sku-00010")  # case differs: a different key
    db.executemany("INSERT INTO wishlist_items VALUES (?, ?)", items)
    db.commit()
    db.close()


def _person(rng: random.Random, cid: int) -> tuple[int, str, str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    email = f"{first.lower()}.{last.lower()}{cid}@{rng.choice(DOMAINS)}"
    phone = f"(415) 555-{rng.randint(0, 9999):04d}"
    return cid, email, f"{first} {last}", phone


def build_crm(path: Path, rng: random.Random) -> list[tuple[int, str, str, str]]:
    db = _connect(path)
    db.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, full_name TEXT, phone TEXT)"
    )
    people = [_person(rng, cid) for cid in range(1, N_CUSTOMERS + 1)]
    db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", people)
    db.commit()
    db.close()
    return people


def build_orders(path: Path, rng: random.Random, people: list) -> None:
    db = _connect(path)
    db.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, customer_email TEXT,"
        " customer_name TEXT, customer_phone TEXT, total_cents INTEGER)"
    )
    rows = []
    for oid in range(1, N_ORDERS + 1):
        cid, email, name, phone = people[rng.randrange(len(people))]
        if oid % 10 == 0:  # near misses: only formatting differs
            email, name = email.upper(), name.replace(" ", "  ")
            phone = phone.replace("(", "").replace(") ", "-")
        rows.append([oid, cid, email, name, phone, rng.randint(500, 50000)])
    a, b = people[40], people[41]
    rows[0][1:5] = [a[0], "drifted.address@example.com", a[2], a[3]]  # email drifted
    rows[1][1:5] = [a[0], a[1], a[2], "(415) 555-9999"]  # phone drifted
    rows[2][1:5] = [b[0], *a[1:]]  # id points at the wrong person: holds a's data
    rows[3][1:5] = [a[0], *b[1:]]  # ...and the other way round
    rows[4][1:5] = [b[0], b[1], None, b[3]]  # name missing in the copy
    rows[5][1:5] = [b[0], "", b[2], b[3]]  # empty email in the copy
    rows[6][1:5] = [99001, "ghost@example.com", "Gus Ghost", "(415) 555-0000"]  # no customer
    rows[7][1:5] = [99002, "ghost2@example.com", "Gia Ghost", "(415) 555-0001"]
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def build_exports(directory: Path, rng: random.Random) -> None:
    """Ids that also rot outside SQL: bookmarked product URLs (CSV, a note may hold commas and
    line breaks) and a gzipped access log. Seeded: 5001 (deleted), 13 (soft-deleted), 9001
    (retired, now 5) and 9004 (retired twice, now 42); log lines with two ids or none."""
    bookmarks = directory / "bookmarks"
    bookmarks.mkdir(parents=True, exist_ok=True)
    with (bookmarks / "2026-11.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "url", "note"])
        for user in range(1, 41):
            product = {7: 5001, 19: 13, 23: 9001}.get(user, rng.randint(1, N_PRODUCTS))
            note = "gift, maybe\nfor March" if user == 7 else ""
            writer.writerow([f"user{user}", f"https://shop.example/products/{product}", note])
        writer.writerow(["user41", "https://shop.example/help", ""])  # no product in it
    lines = []
    for number in range(1, 201):
        product = {50: 9004, 120: 5002}.get(number, rng.randint(1, N_PRODUCTS))
        lines.append(f"10.0.0.{number % 250} GET /products/{product} 200")
    lines[99] = "10.0.0.9 GET /products/17?compare=/products/5003 200"  # two ids: 5003 gone
    lines[149] = "10.0.0.9 GET /checkout 200"  # no id
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    with gzip.open(logs / "access-2026-12-01.log.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


PRODUCT_URL = r"/products/(?P<product_id>\d+)"


def demo_config(directory: Path) -> dict:
    def url(name: str) -> str:
        return f"sqlite:///{(directory / f'{name}.db').resolve()}"

    aliases = {"db": "catalog", "table": "product_id_aliases", "old": ["old_id"], "new": ["new_id"]}
    live_products = {
        "db": "catalog",
        "table": "products",
        "columns": ["id"],
        "soft_delete": "deleted = TRUE",
    }
    return {
        "version": 1,
        "databases": {
            **{name: {"url": url(name)} for name in ("catalog", "reviews", "crm", "orders")},
            "exports": {"path": "exports"},
        },
        "settings": {"batch_size": 1000, "mask": "partial", "max_findings": 100},
        "reports": {"dir": "reports", "formats": ["json", "html"]},
        "rules": [
            {
                "name": "reviews-have-live-products",
                "type": "reference",
                "description": "Every published review points to an existing, not deleted product.",
                "from": {
                    "db": "reviews",
                    "table": "reviews",
                    "columns": ["product_id"],
                    "where": "status <> 'spam'",
                },
                "to": live_products,
                "aliases": aliases,
                "allow_null": False,
            },
            {
                "name": "wishlists-by-sku",
                "type": "reference",
                "description": "Wishlists reference products by SKU, a business key.",
                "from": {"db": "reviews", "table": "wishlist_items", "columns": ["sku"]},
                "to": {"db": "catalog", "table": "products", "columns": ["sku"]},
            },
            {
                "name": "bookmarked-products",
                "type": "reference",
                "description": "Bookmarked product URLs still lead to a live product.",
                "from": {
                    "db": "exports",
                    "table": "bookmarks/*.csv",
                    "extract": {"column": "url", "pattern": PRODUCT_URL},
                    "columns": ["product_id"],
                },
                "to": live_products,
                "aliases": aliases,
            },
            {
                "name": "access-log-products",
                "type": "reference",
                "severity": "warning",
                "description": "Product ids in the access log (the audit trail) still exist.",
                "from": {
                    "db": "exports",
                    "table": "logs/*.log.gz",
                    "extract": {"column": "line", "pattern": PRODUCT_URL},
                    "columns": ["product_id"],
                },
                "to": {"db": "catalog", "table": "products", "columns": ["id"]},
                "aliases": aliases,
            },
            {
                "name": "order-customer-pii",
                "type": "pii",
                "description": "Orders keep copies of the customer's contact data.",
                "source": {"db": "crm", "table": "customers", "key": ["id"]},
                "copy": {"db": "orders", "table": "orders", "key": ["customer_id"]},
                "fields": [
                    {"source": "email", "copy": "customer_email", "normalize": ["email"]},
                    {
                        "source": "full_name",
                        "copy": "customer_name",
                        "normalize": ["nfkc", "trim", "collapse_spaces", "casefold"],
                    },
                    {
                        "source": "phone",
                        "copy": "customer_phone",
                        "normalize": [{"phone": {"region": "US"}}],
                    },
                ],
            },
        ],
    }


def build(directory: Path) -> Path:
    """Create the four databases and the config; return the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    build_catalog(directory / "catalog.db", rng)
    build_reviews(directory / "reviews.db", rng)
    people = build_crm(directory / "crm.db", rng)
    build_orders(directory / "orders.db", rng, people)
    build_exports(directory / "exports", rng)
    config = directory / "auditor-demo.yaml"
    header = (
        "# Written by `auditor demo`: four SQLite databases and a folder of exported files,\n"
        "# with seeded problems.\n"
    )
    config.write_text(header + yaml.safe_dump(demo_config(directory), sort_keys=False))
    return config
