"""Live traffic: a writer commits parent+child pairs and deletes unrelated rows while the
audit runs; only the seeded problems may be reported."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import sqlalchemy as sa

import auditor
from auditor import pairing, scan
from auditor.engine import RunOptions

PRODUCTS, SPARE, REVIEWS = 20_000, 5_000, 100_000
ORPHANS = {7, 70_007, 99_999}  # reviews pointing at products that never existed


def _seed(catalog, reviews) -> None:
    catalog.execute("CREATE TABLE products (id bigint PRIMARY KEY, spare int NOT NULL)")
    catalog.execute(
        f"INSERT INTO products SELECT g, CASE WHEN g > {PRODUCTS} THEN 1 ELSE 0 END FROM generate_series(1, {PRODUCTS + SPARE}) g"
    )
    reviews.execute("CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint)")
    with reviews.engine.begin() as conn:
        rows = [
            {"id": i, "p": (500_000 + i) if i in ORPHANS else (i % PRODUCTS) + 1}
            for i in range(1, REVIEWS + 1)
        ]
        conn.execute(sa.text("INSERT INTO reviews (id, product_id) VALUES (:id, :p)"), rows)


def _writer(catalog, reviews, stop: threading.Event, counts: dict) -> None:
    """Commit the parent, then the child (what a correct service does); delete spare parents."""
    spare = itertools.count(PRODUCTS + 1)
    with catalog.engine.connect() as cat, reviews.engine.connect() as rev:
        for n in itertools.count():
            if stop.is_set():
                break
            product, review = 1_000_000 + n, 1_000_000 + n
            cat.execute(sa.text("INSERT INTO products VALUES (:p, 0)"), {"p": product})
            cat.commit()
            rev.execute(sa.text("INSERT INTO reviews VALUES (:r, :p)"), {"r": review, "p": product})
            rev.commit()
            victim = next(spare)
            if victim <= PRODUCTS + SPARE:
                cat.execute(sa.text("DELETE FROM products WHERE id = :p"), {"p": victim})
                cat.commit()
            counts["pairs"] = n + 1


def _late_referencing_side(monkeypatch) -> None:
    """Start the referencing side's snapshot 0.3 s after the referenced side's, as happens when
    one server is slower: a child committed in that window has a parent the scan missed.

    Both ways the engine reads a side go through prepared_batches (a spilled side through
    scan_side, a streamed one directly), so the delay sits there, before its query runs.
    """
    original = scan.prepared_batches

    def delayed(side, *args, **kwargs):
        if side.role == "from":
            time.sleep(0.3)
        yield from original(side, *args, **kwargs)

    monkeypatch.setattr(scan, "prepared_batches", delayed)
    monkeypatch.setattr(pairing, "prepared_batches", delayed)


@pytest.mark.parametrize("second", ["postgresql", "mariadb"])
def test_concurrent_writes_raise_no_false_findings(
    database_factory, write_config, second, monkeypatch
):
    catalog, reviews = database_factory("postgresql"), database_factory(second)
    _seed(catalog, reviews)
    rule = {
        "name": "reviews-products",
        "type": "reference",
        "from": {"db": "reviews", "table": "reviews", "columns": ["product_id"]},
        "to": {"db": "catalog", "table": "products", "columns": ["id"]},
    }
    data = {
        "version": 1,
        "databases": {"catalog": {"url": catalog.url}, "reviews": {"url": reviews.url}},
        "rules": [rule],
    }
    config = auditor.load_config(write_config(data))
    _late_referencing_side(monkeypatch)
    stop, counts = threading.Event(), {"pairs": 0}
    writer = threading.Thread(target=_writer, args=(catalog, reviews, stop, counts))
    writer.start()
    try:
        results = [auditor.run(config, options=RunOptions(batch_size=500)) for _ in range(3)]
        unchecked = auditor.run(config, options=RunOptions(batch_size=500, recheck=False))
    finally:
        stop.set()
        writer.join()
    assert counts["pairs"] > 10, counts
    for result in results:
        rule_result = result.rules[0]
        assert rule_result.error is None, rule_result.error
        assert {f.key["id"] for f in rule_result.findings} == ORPHANS
        assert rule_result.counts == {"orphan": len(ORPHANS)}
    # The same race without the recheck: children of parents the scan missed look orphaned.
    assert unchecked.rules[0].counts["orphan"] > len(ORPHANS)
