"""No leaks: raw PII only with --show-pii, passwords never, in any output of any run."""

from __future__ import annotations

import json

import sqlalchemy as sa
import yaml

from auditor import demo
from tests.cli.test_cli import auditor
from tests.scenarios import build_reference

FORMATS = {
    "--json": "r.json",
    "--html": "r.html",
    "--csv": "r.csv",
    "--junit": "r.xml",
    "--markdown": "r.md",
}


def _everything(tmp_path, *args: str) -> str:
    """Run once with every output asked for; return all of it as one text."""
    outputs = []
    for flag, name in FORMATS.items():
        outputs += [flag, str(tmp_path / name)]
    result = auditor("run", *args, *outputs, "--log-file", str(tmp_path / "r.log"), "--verbose")
    texts = [result.stdout, result.stderr]
    texts += [(tmp_path / name).read_text() for name in [*FORMATS.values(), "r.log"]]
    return "\n".join(texts)


def test_raw_pii_only_with_show_pii(tmp_path):
    config = demo.build(tmp_path / "demo")
    raw = tmp_path / "raw"
    raw.mkdir()
    shown = _everything(raw, str(config), "--show-pii", "--max-findings", "0")
    findings = json.loads((raw / "r.json").read_text())
    values = {
        f[side]
        for rule in findings["rules"]
        for f in rule["findings"]
        if f["kind"] in ("mismatch", "missing_value")
        for side in ("source_value", "copy_value")
        if f[side]
    }
    assert len(values) >= 8
    assert all(value in shown for value in values)
    for mode in ("partial", "hash"):
        masked = tmp_path / mode
        masked.mkdir()
        text = _everything(masked, str(config), "--mask", mode, "--max-findings", "0")
        leaked = sorted(value for value in values if value in text)
        assert leaked == [], f"{mode}: {leaked}"


def test_passwords_never_appear(database_factory, write_config, tmp_path):
    catalog, reviews = database_factory("postgresql"), database_factory("postgresql")
    data = build_reference(catalog, reviews)
    password = "N0t-For-Your-Eyes"
    for name in ("catalog", "reviews"):
        url = sa.make_url(data["databases"][name]["url"]).set(password=password)
        data["databases"][name]["url"] = url.render_as_string(hide_password=False)
    data["rules"].append(
        {
            **data["rules"][0],
            "name": "broken",
            "to": {"db": "catalog", "table": "nope", "columns": ["id"]},
        }
    )
    data["databases"]["down"] = {"url": f"postgresql+psycopg://auditor:{password}@127.0.0.1:1/x"}
    data["rules"].append(
        {**data["rules"][0], "name": "down", "to": {"db": "down", "table": "p", "columns": ["id"]}}
    )
    config = write_config(data)
    assert password in config.read_text()  # the file has it; nothing we write may
    text = _everything(tmp_path, str(config))
    assert "broken" in text and "'down'" in text and "***" in text
    assert password not in text
    check = auditor("check", str(config))
    assert password not in check.stdout + check.stderr


def test_passwords_in_every_url_form_never_appear(
    database_factory, write_config, tmp_path, monkeypatch
):
    """A password as a query option (`?password=`, psycopg and PyMySQL take it), and one
    from the environment holding `@` and `:` (pasted into the URL as text, its tail became
    the host and was printed, or the run died parsing a port)."""
    import os

    catalog, reviews = database_factory("postgresql"), database_factory("mariadb")
    data = build_reference(catalog, reviews)
    query_pw, env_pw = "Query-S3cr3t-pg", "Pa@ss:Hunter2word"
    monkeypatch.setenv("REL_PW_AT", env_pw)
    pg = sa.make_url(data["databases"]["catalog"]["url"])
    data["databases"]["catalog"]["url"] = pg.render_as_string() + f"?password={query_pw}"
    maria = sa.make_url(data["databases"]["reviews"]["url"])
    maria_template = (
        f"mysql+pymysql://nobody:${{REL_PW_AT}}@{maria.host}:{maria.port}/{maria.database}"
    )
    data["databases"]["down"] = {"url": maria_template}
    data["rules"].append(
        {
            **data["rules"][0],
            "name": "down",
            "from": {"db": "down", "table": "reviews", "columns": ["product_id"]},
        }
    )
    config = write_config(data)
    text = _everything(tmp_path, str(config))
    assert "'down'" in text and "Access denied" in text  # the env password was sent whole
    for secret in (query_pw, env_pw, "Hunter2word", "ssHunter2word"):
        assert secret not in text, secret
    assert "password=***" in text
    check = auditor("check", str(config))
    assert check.returncode == 3 and not any(
        s in check.stdout + check.stderr for s in (query_pw, "Hunter2word")
    )
    assert "internal error" not in check.stderr and os.environ["REL_PW_AT"] == env_pw


def test_report_files_are_private(tmp_path):
    config = demo.build(tmp_path / "demo")
    data = yaml.safe_load(config.read_text())
    assert data["reports"]["formats"] == ["json", "html"]
    auditor("run", str(config), "-q")
    files = list((config.parent / "reports").iterdir())
    assert files and all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def test_a_value_a_driver_quotes_in_its_error_never_appears(database_factory, tmp_path):
    """`where: "email::int > 0"` fails on the first email: PostgreSQL's message quotes it."""
    db = database_factory("postgresql")
    db.execute("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER, email TEXT)")
    db.execute("INSERT INTO reviews VALUES (1, 1, 'user1@example.com')")
    config = tmp_path / "cast.yaml"
    config.write_text(
        f"""version: 1
databases: {{db: {{url: "{db.url}"}}}}
rules:
  - name: r
    type: reference
    from: {{db: db, table: reviews, columns: [product_id], where: "email::int > 0"}}
    to: {{db: db, table: products, columns: [id]}}
"""
    )
    text = _everything(tmp_path, str(config))
    assert "integer" in text and "rules[0].from.where" in text
    assert "user1@example.com" not in text


def test_a_redis_password_never_appears(tmp_path, write_config):
    """Redis URLs (`redis://:pw@`, `redis://user:pw@`, `rediss://`, `?password=`) are redacted
    like every other: in what `check` and `run` print, every report, errors and the log (the
    local Redis lets its password-less default user in with any password; `rediss://` fails
    to connect, and its error names the database, never the password)."""
    secrets = ["Redis-S3cret-1", "Redis-S3cret-2", "Redis-S3cret-3", "Redis-S3cret-4"]
    urls = [
        f"redis://:{secrets[0]}@127.0.0.1:6379/5",
        f"redis://auditor:{secrets[1]}@127.0.0.1:6379/5",
        f"rediss://auditor:{secrets[2]}@127.0.0.1:6380/0",
        f"redis://127.0.0.1:6379/5?password={secrets[3]}",
    ]
    with sa.create_engine(f"sqlite:///{tmp_path}/shop.db").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE products (id INTEGER PRIMARY KEY)")
    for index, url in enumerate(urls):
        rule = {
            "name": "cached",
            "type": "reference",
            "from": {"db": "cache", "table": "product:{id}", "columns": ["id"]},
            "to": {"db": "shop", "table": "products", "columns": ["id"]},
        }
        databases = {"cache": {"url": url}, "shop": {"url": f"sqlite:///{tmp_path}/shop.db"}}
        config = write_config(
            {"version": 1, "databases": databases, "rules": [rule]}, f"{index}.yaml"
        )
        run_dir = tmp_path / str(index)
        run_dir.mkdir()
        checked = auditor("check", str(config))
        # The run reaches Redis (or fails to) with the password: every output is searched.
        text = _everything(run_dir, str(config)) + checked.stdout + checked.stderr
        assert "127.0.0.1" in text, text  # the URL was shown, redacted
        assert not any(secret in text for secret in secrets), text
