"""Files as the referencing side (SPEC §9): bookmarked URLs and access logs whose ids were
deleted, soft-deleted or retired, against the catalog on every SQL backend. Exact findings, and
near misses that must not be reported (a live id, a retired id's current one, `0001` for 1
under an integer key, lines without an id)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

import auditor
from auditor.engine import RunOptions
from tests.cli.test_cli import auditor as cli
from tests.cli.test_cli import check_fails_with

BACKENDS = ["sqlite", "postgresql", "mariadb"]
PRODUCTS = "/products/(?P<product_id>\\d+)"


def _catalog(database) -> None:
    database.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER)")
    database.execute("INSERT INTO products VALUES (1, 0), (2, 0), (3, 1), (4, 0), (5, 0)")
    database.execute("CREATE TABLE product_id_aliases (old_id INTEGER PRIMARY KEY, new_id INTEGER)")
    database.execute("INSERT INTO product_id_aliases VALUES (100, 1)")


def _exports(root: Path) -> None:
    (root / "bookmarks").mkdir(parents=True)
    (root / "bookmarks" / "2026-11.csv").write_text(
        "user,url,note\n"
        'ann,https://shop.example/products/1,"ok, fine"\n'  # line 2: live
        'bob,https://shop.example/products/9,"two\nlines"\n'  # line 3 (to 4): orphan 9
        "cy,https://shop.example/about,none\n"  # line 5: no id
        'dee,"https://shop.example/products/3?from=/products/2",x\n',  # line 6: 3 soft, 2 live
        newline="",
    )
    with gzip.open(root / "bookmarks" / "2026-12.csv.gz", "wt", newline="") as handle:
        handle.write("user,url\neve,/products/100\nfay,/products/0001\n")  # stale 100; 1 live
    (root / "logs").mkdir()
    with gzip.open(root / "logs" / "access.log.gz", "wt") as handle:
        handle.write(
            "GET /products/1 200\n"  # live
            "GET /products/7 404 referer=/products/8\n"  # two orphans on line 2
            "GET / 200\n"  # no id
            "\n"  # blank: no id
            "GET /products/5 200\n"  # live
        )
    (root / "events.jsonl").write_text(
        json.dumps({"event": {"product": 5}})
        + "\n"  # live
        + "\n"  # blank line 2
        + json.dumps({"event": {"product": 77}})
        + "\n"  # line 3: orphan 77
        + json.dumps({"other": 1})
        + "\n"  # no product: NULL, allowed
    )
    pq.write_table(pa.table({"product_id": [1, 66]}), root / "orders.parquet")


def _config(tmp_path: Path, catalog_url: str) -> Path:
    reference = {"type": "reference", "to": {"db": "catalog", "table": "products",
                                            "columns": ["id"], "soft_delete": "deleted = 1"}}  # fmt: skip
    aliases = {"db": "catalog", "table": "product_id_aliases", "old": ["old_id"], "new": ["new_id"]}
    rules = [
        {**reference, "name": "bookmarks", "aliases": aliases,
         "from": {"db": "exports", "table": "bookmarks/*.csv*",
                  "extract": {"column": "url", "pattern": PRODUCTS}, "columns": ["product_id"]}},
        {**reference, "name": "access-log",
         "from": {"db": "exports", "table": "logs/**/*.gz", "extract": {"column": "line",
                  "pattern": PRODUCTS}, "columns": ["product_id"]}},
        {**reference, "name": "events",
         "from": {"db": "exports", "table": "*.jsonl", "columns": ["event.product"]}},
        {**reference, "name": "orders",
         "from": {"db": "exports", "table": "*.parquet", "columns": ["product_id"]}},
    ]  # fmt: skip
    for rule in rules[1:]:
        rule["to"] = {k: v for k, v in rule["to"].items() if k != "soft_delete"}
    config = {
        "version": 1,
        "databases": {"catalog": {"url": catalog_url}, "exports": {"path": "exports"}},
        "rules": rules,
    }
    path = tmp_path / "files.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


EXPECTED = {
    "bookmarks": [
        ("orphan", {"file": "bookmarks/2026-11.csv", "line": 3}, {"product_id": "9"}),
        ("soft_deleted", {"file": "bookmarks/2026-11.csv", "line": 6}, {"product_id": "3"}),
        ("stale_alias", {"file": "bookmarks/2026-12.csv.gz", "line": 2}, {"product_id": "100"}),
    ],
    "access-log": [
        ("orphan", {"file": "logs/access.log.gz", "line": 2}, {"product_id": "7"}),
        ("orphan", {"file": "logs/access.log.gz", "line": 2}, {"product_id": "8"}),
    ],
    "events": [("orphan", {"file": "events.jsonl", "line": 3}, {"event.product": "77"})],
    "orders": [("orphan", {"file": "orders.parquet", "line": 2}, {"product_id": "66"})],
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_ids_in_files_against_every_backend(backend, database_factory, tmp_path):
    catalog = database_factory(backend)
    _catalog(catalog)
    _exports(tmp_path / "exports")
    config = auditor.load_config(_config(tmp_path, catalog.url))
    result = auditor.run(config, options=RunOptions(max_findings=0, batch_size=2))
    by_rule = {rule.name: rule for rule in result.rules}
    for name, expected in EXPECTED.items():
        rule = by_rule[name]
        assert rule.error is None, rule.error
        assert [(f.kind, f.key, f.ref) for f in rule.findings] == expected, name
    stale = by_rule["bookmarks"].findings[2]
    assert stale.suggested == {"id": 1}
    assert by_rule["bookmarks"].rows_scanned["rows_unmatched"] == 1  # the about page
    assert by_rule["bookmarks"].rows_scanned["from"] == 6
    assert by_rule["access-log"].rows_scanned["rows_unmatched"] == 2  # `GET /` and the blank
    assert result.exit_code == 1


def test_a_row_with_several_references_is_known_by_each(database_factory, tmp_path):
    """diff tells the two orphans of one log line apart (the rule's identity has `ref`)."""
    catalog = database_factory("sqlite")
    _catalog(catalog)
    _exports(tmp_path / "exports")
    config = _config(tmp_path, catalog.url)
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    assert cli("run", str(config), "-q", "--rule", "access-log", "--json", str(old)).returncode == 1
    log = tmp_path / "exports" / "logs" / "access.log.gz"
    with gzip.open(log, "wt") as handle:  # on line 2: 7 stays, 8 fixed, 6 appears
        handle.write("GET /products/1 200\nGET /products/7 404 referer=/products/6\n")
    assert cli("run", str(config), "-q", "--rule", "access-log", "--json", str(new)).returncode == 1
    report = json.loads(new.read_text())
    assert report["rules"][0]["identity"] == ["rule", "kind", "key", "ref", "field"]
    compared = auditor.api.diff(str(old), str(new))
    assert [f["ref"] for f in compared.new] == [{"product_id": "6"}]
    assert [f["ref"] for f in compared.resolved] == [{"product_id": "8"}]
    assert compared.persisting == 1  # 7, same line: the same finding


def test_extract_on_a_sql_text_column(database_factory, tmp_path):
    """`extract` works on SQL sides too, and the recheck reads the row again and re-extracts:
    a URL fixed between scan and recheck is no finding."""
    shop = database_factory("sqlite")
    _catalog(shop)
    shop.execute("CREATE TABLE pages (id INTEGER PRIMARY KEY, body TEXT)")
    shop.execute(
        "INSERT INTO pages VALUES (1, 'see /products/1 and /products/9'), (2, 'no link'), "
        "(3, '/products/12')"
    )
    rule = {"name": "links", "type": "reference",
            "from": {"db": "shop", "table": "pages", "columns": ["product_id"],
                     "extract": {"column": "body", "pattern": PRODUCTS}},
            "to": {"db": "shop", "table": "products", "columns": ["id"]}}  # fmt: skip
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "databases": {"shop": {"url": shop.url}},
                                    "rules": [rule]}))  # fmt: skip
    config = auditor.load_config(path)

    def fix_page_3() -> None:
        shop.execute("UPDATE pages SET body = '/products/2' WHERE id = 3")

    result = auditor.run(config, options=RunOptions(before_recheck=fix_page_3)).rules[0]
    assert [(f.kind, f.key, f.ref) for f in result.findings] == [
        ("orphan", {"id": 1}, {"product_id": "9"})
    ]
    assert result.rows_scanned == {"to": 5, "from": 3, "rows_unmatched": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r[0]["from"].update(table="nothing/*.csv"), "rules[0].from.table: no file under"),
        (lambda r: r[2]["from"].update(where="1 = 1"), "rules[2].from.where: where is not for files"),
        (lambda r: r[0]["from"]["extract"].update(column="link"), "rules[0].from.extract.column"),
        (lambda r: r[0]["from"]["extract"].update(pattern="/products/(\\d+)"), "named groups"),
        (lambda r: r[0]["from"].update(columns=["id"]), "no named group"),
        (lambda r: r[2]["from"].update(columns=["event.prodct"]), "did you mean 'event.product'"),
        (lambda r: r.append({**r[3], "name": "flip", "from": r[3]["to"], "to": r[3]["from"]}),
         "rules[4].to.db: exports is a directory of files"),
    ],
)  # fmt: skip
def test_mistakes_on_a_files_side_are_one_line_with_file_and_line(tmp_path, change, message):
    catalog = tmp_path / "catalog.db"
    with sa.create_engine(f"sqlite:///{catalog}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE products (id INTEGER PRIMARY KEY, deleted INTEGER)")
        conn.exec_driver_sql("CREATE TABLE product_id_aliases (old_id INTEGER, new_id INTEGER)")
    _exports(tmp_path / "exports")
    path = _config(tmp_path, f"sqlite:///{catalog}")
    data = yaml.safe_load(path.read_text())
    change(data["rules"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    check_fails_with(path, message)


def _crm(database) -> None:
    database.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, phone TEXT)")
    database.execute(
        "INSERT INTO customers VALUES (1, 'ann@example.com', '+44 20 7946 0001'), "
        "(2, 'bob@example.com', '+44 20 7946 0002'), (3, 'cy@example.com', NULL), "
        "(4, 'dee@example.com', '+44 20 7946 0004')"
    )


def _pii_config(tmp_path: Path, crm_url: str, table: str = "crm/*.csv*") -> Path:
    rule = {"name": "exported-customers", "type": "pii",
            "source": {"db": "crm", "table": "customers", "key": ["id"]},
            "copy": {"db": "exports", "table": table, "key": ["customer_id"]},
            "fields": [{"source": "email", "copy": "email", "normalize": ["trim", "lower"]},
                       {"source": "phone", "copy": "phone",
                        "normalize": [{"phone": {"region": "GB"}}]}]}  # fmt: skip
    config = {"version": 1, "databases": {"crm": {"url": crm_url}, "exports": {"path": "exports"}},
              "rules": [rule]}  # fmt: skip
    path = tmp_path / "pii.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_pii_copies_in_exported_files_against_every_backend(backend, database_factory, tmp_path):
    """A CRM export drifted: a changed e-mail, a phone gone, a row whose e-mail and phone are
    another customer's (the id points at the wrong person), a customer the CRM no longer has.
    Near misses: case and spaces around an e-mail, a phone in national form."""
    crm = database_factory(backend)
    _crm(crm)
    (tmp_path / "exports" / "crm").mkdir(parents=True)
    (tmp_path / "exports" / "crm" / "customers.csv").write_text(
        "customer_id,email,phone\n"
        "1, ANN@Example.com ,020 7946 0001\n"  # line 2: equal once normalised
        "2,robert@example.com,+44 20 7946 0002\n"  # line 3: e-mail drifted
        '3,"cy@example.com",\n'  # line 4: equal (no phone either side)
        "4,dee@example.com,\n"  # line 5: the phone is missing in the copy
    )
    with gzip.open(tmp_path / "exports" / "crm" / "more.csv.gz", "wt") as handle:
        # line 2: customer 3 (no phone) with customer 2's e-mail and phone; line 3: no customer 9
        handle.write("customer_id,email,phone\n3,bob@example.com,+44 20 7946 0002\n9,x@y.z,\n")
    config = auditor.load_config(_pii_config(tmp_path, crm.url))
    rule = auditor.run(config, options=RunOptions(batch_size=2)).rules[0]
    assert rule.error is None, rule.error
    found = [(f.kind, f.key, f.field, f.suggested_key) for f in rule.findings]
    assert sorted(found, key=repr) == [
        ("mismatch", {"file": "crm/customers.csv", "line": 3}, "email", None),
        # customer 3's row holds customer 2's e-mail and phone: it points at the wrong person
        ("mismatch", {"file": "crm/more.csv.gz", "line": 2}, "email", {"id": 2}),
        ("missing_source", {"file": "crm/more.csv.gz", "line": 3}, None, None),
        ("missing_value", {"file": "crm/customers.csv", "line": 5}, "phone", None),
        ("missing_value", {"file": "crm/more.csv.gz", "line": 2}, "phone", None),
    ]
    assert "robert" not in str(rule.findings)  # masked
    assert rule.counts == {"mismatch": 2, "missing_source": 1, "missing_value": 2}


def test_a_source_fixed_before_the_recheck_clears_the_file_copy(database_factory, tmp_path):
    """The export is not read again, the source is: a copy that matches the source as it is
    now is no finding."""
    crm = database_factory("postgresql")
    _crm(crm)
    (tmp_path / "exports" / "crm").mkdir(parents=True)
    (tmp_path / "exports" / "crm" / "customers.csv").write_text(
        "customer_id,email,phone\n2,robert@example.com,+44 20 7946 0002\n"
    )
    config = auditor.load_config(_pii_config(tmp_path, crm.url))

    def fix_source() -> None:
        crm.execute("UPDATE customers SET email = 'robert@example.com' WHERE id = 2")

    rule = auditor.run(config, options=RunOptions(before_recheck=fix_source)).rules[0]
    assert rule.error is None and list(rule.findings) == [] and rule.status == "pass"


LOGGED = r"user=(?P<customer_id>\d+) email=(?P<email>\S+)"


@pytest.mark.parametrize("store", ["files", "sqlite", "postgresql", "mariadb"])
def test_pii_copies_inside_text(store, database_factory, tmp_path):
    """`extract` on a pii copy: an audit log whose lines carry a customer id and the e-mail it
    had, in a log file or a text column. Every match is a copy; a line with two is two."""
    crm = database_factory("sqlite" if store == "files" else store)
    _crm(crm)
    lines = [
        "login user=1 email=ANN@example.com",  # 1: equal once lower-cased
        "login user=2 email=robert@example.com",  # 2: drifted
        "merge user=3 email=cy@example.com into user=4 email=ann@example.com",  # 3: 4 is wrong
        "logout",  # 4: no copy
    ]
    rule = {"name": "logged-emails", "type": "pii",
            "source": {"db": "crm", "table": "customers", "key": ["id"]},
            "copy": {"db": "logs", "table": "audit.log" if store == "files" else "audit_log",
                     "key": ["customer_id"], "extract": {"column": "line", "pattern": LOGGED}},
            "fields": [{"source": "email", "copy": "email", "normalize": ["lower"]}]}  # fmt: skip
    if store == "files":
        (tmp_path / "logs").mkdir()
        (tmp_path / "logs" / "audit.log").write_text("\n".join(lines) + "\n")
        logs = {"path": "logs", "format": "lines"}
        key = [{"file": "audit.log", "line": n} for n in (2, 3)]
    else:
        crm.execute("CREATE TABLE audit_log (id INTEGER PRIMARY KEY, line TEXT)")
        for number, line in enumerate(lines, 1):
            crm.execute(f"INSERT INTO audit_log VALUES ({number}, '{line}')")
        logs = {"url": crm.url}
        key = [{"id": n} for n in (2, 3)]
    path = tmp_path / "logged.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "rules": [rule],
                                    "databases": {"crm": {"url": crm.url}, "logs": logs}}))  # fmt: skip
    result = auditor.run(auditor.load_config(path)).rules[0]
    assert result.error is None, result.error
    found = [(f.kind, f.key, f.ref, f.suggested_key) for f in result.findings]
    assert sorted(found, key=repr) == [
        ("mismatch", key[0], {"customer_id": "2"}, None),
        ("mismatch", key[1], {"customer_id": "4"}, {"id": 1}),
    ]
    assert result.keyed_by_ref and result.rows_scanned["rows_unmatched"] == 1


def _gzipped_lines(count: int) -> bytes:
    return gzip.compress(
        "".join(f"GET /products/{n * 7919 % 100003}\n" for n in range(count)).encode()
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.log.gz", b"not gzip at all", "cannot read"),
        ("cut.log.gz", _gzipped_lines(5000)[:-100], "cannot read"),  # the end is missing
        # a quote never closed: the line its record starts on, not the end of the file
        ("rows.csv", b'id,url\n1,"/products/1\n2,/products/2\n3,/products/3\n', "line 2"),
    ],
)
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, name, content, message):
    catalog = tmp_path / "catalog.db"
    with sa.create_engine(f"sqlite:///{catalog}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / name).write_bytes(content)
    rule = {"name": "r", "type": "reference",
            "from": {"db": "exports", "table": name, "columns": ["product_id"],
                     "extract": {"column": "url" if name.endswith("csv") else "line",
                                 "pattern": PRODUCTS}},
            "to": {"db": "catalog", "table": "products", "columns": ["id"]}}  # fmt: skip
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "rules": [rule], "databases": {
        "catalog": {"url": f"sqlite:///{catalog}"}, "exports": {"path": "exports"}}}))  # fmt: skip
    ran = cli("run", str(path), "-q")
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert f"exports/{name}" in ran.stderr and message in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr
