"""Reflection reads what an audit needs: the audited tables' columns and primary keys; foreign
keys are not followed, indexes only read for `auditor check`."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import auditor
from tests.conftest import plans


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_foreign_keys_are_not_followed(database_factory, write_config, backend):
    shop = database_factory(backend)
    metadata = sa.MetaData()
    sa.Table("makers", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("products", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("maker_id", sa.Integer, sa.ForeignKey("makers.id")))  # fmt: skip
    sa.Table("reviews", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("product_id", sa.Integer))  # fmt: skip
    shop.load(metadata, {"makers": [{"id": 1}], "products": [{"id": 1, "maker_id": 1}],
                         "reviews": [{"id": 1, "product_id": 1}, {"id": 2, "product_id": 9}]})  # fmt: skip
    rule = {
        "name": "reviews-products",
        "type": "reference",
        "from": {"db": "shop", "table": "reviews", "columns": ["product_id"]},
        "to": {"db": "shop", "table": "products", "columns": ["id"]},
    }
    data = {"version": 1, "databases": {"shop": {"url": shop.url}}, "rules": [rule]}
    config = auditor.load_config(write_config(data))
    (plan,), (checked,) = plans(config), plans(config, check=True)
    assert list(plan.right.info.table.metadata.tables) == ["products"]
    assert plan.right.info.primary_key == ("id",) and plan.right.info.indexes is None
    assert plan.left.row_bytes and checked.left.row_bytes is None  # check reads no data row
    assert checked.right.lookup_index_hint(checked.right.compare) is None  # the primary key
    assert "product_id" in (checked.left.lookup_index_hint(checked.left.compare) or "")
    (result,) = auditor.run(config).rules
    assert [(f.kind, f.key) for f in result.findings] == [("orphan", {"id": 2})]
