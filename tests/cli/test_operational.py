"""Operational failures are exit 3 naming the path (SPEC §7), and --debug changes only what
is printed: never the exit code or the reports."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa

from auditor import cli


def _partitioned_sqlite(tmp_path, rows: int = 300_000):
    """Big enough that the referenced side is not held in memory: both sides spill."""
    catalog, reviews = tmp_path / "catalog.db", tmp_path / "reviews.db"
    for path, table, value in ((catalog, "products", "x"), (reviews, "reviews", "x + 7")):
        with sa.create_engine(f"sqlite:///{path}").begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, ref INTEGER)"))
            conn.execute(
                sa.text(
                    f"WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s "
                    f"WHERE x < {rows}) INSERT INTO {table} SELECT x, {value} FROM s"
                )
            )
    config = tmp_path / "big.yaml"
    config.write_text(
        f"""version: 1
databases:
  catalog: {{url: "sqlite:///{catalog}"}}
  reviews: {{url: "sqlite:///{reviews}"}}
rules:
  - name: reviews-products
    type: reference
    from: {{db: reviews, table: reviews, columns: [ref]}}
    to: {{db: catalog, table: products, columns: [id]}}
"""
    )
    return config


def _small_files() -> None:
    """Files the process writes stop at 1 MB (EFBIG), as a full disk stops them (ENOSPC)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_temp_files_that_cannot_be_written_are_exit_3_naming_the_path(tmp_path):
    config = _partitioned_sqlite(tmp_path)
    spill = tmp_path / "tmp"
    spill.mkdir()
    report = tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "-m", "auditor", "run", str(config), "-q", "--json", str(report)],
        capture_output=True, text=True, timeout=120, preexec_fn=_small_files,
        env={**__import__("os").environ, "TMPDIR": str(spill)},
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert f"cannot write temp files in {spill}/auditor-" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert json.loads(report.read_text())["rules"][0]["status"] == "error"
    assert list(spill.iterdir()) == []  # the rule's temp directory is removed all the same


def test_a_missing_certificate_file_is_exit_3_naming_it(tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    config = tmp_path / "tls.yaml"
    url = f"mysql+pymysql://root@127.0.0.1:3306/mysql?ssl_ca={missing}"
    config.write_text(
        f"""version: 1
databases: {{db: {{url: "{url}"}}}}
rules:
  - {{name: r, type: reference, from: {{db: db, table: user, columns: [Host]}}, to: {{db: db, table: db, columns: [Host]}}}}
"""
    )
    for command in ("check", "run"):
        result = subprocess.run(
            [sys.executable, "-m", "auditor", command, str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 3, result.stderr
        assert str(missing) in result.stderr and "internal error" not in result.stderr


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    return int(exited.value.code or 0)


def test_debug_changes_only_what_is_printed(tmp_path, monkeypatch, capsys):
    """A bug in a rule: exit 4 and a report with the rule's error, with or without --debug;
    --debug adds the traceback on stderr."""
    config = _partitioned_sqlite(tmp_path, rows=10)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug that quotes a value: alice@example.com")

    monkeypatch.setattr("auditor.api.run_rule", broken)
    monkeypatch.delenv("AUDITOR_DEBUG", raising=False)
    reports = {}
    for flags in ([], ["--debug"]):
        report = tmp_path / f"r{len(flags)}.json"
        code = _main([*flags, "run", str(config), "-q", "--json", str(report)])
        err = capsys.readouterr().err
        assert code == 4, err
        reports[bool(flags)] = json.loads(report.read_text())
        assert ("Traceback" in err) == bool(flags)
        assert ("alice@example.com" in err) == bool(flags)
        monkeypatch.delenv("AUDITOR_DEBUG", raising=False)
    plain, debug = reports[False], reports[True]
    assert plain["rules"][0]["error"] == debug["rules"][0]["error"]
    assert "alice" not in plain["rules"][0]["error"]
    assert plain["exit_code"] == debug["exit_code"] == 4


def test_debug_check_keeps_the_exit_code(tmp_path, monkeypatch, capsys):
    config = tmp_path / "down.yaml"
    config.write_text(
        """version: 1
databases: {db: {url: "postgresql+psycopg://u:pw@127.0.0.1:1/x"}}
rules:
  - {name: r, type: reference, from: {db: db, table: a, columns: [x]}, to: {db: db, table: b, columns: [x]}}
"""
    )
    assert _main(["check", str(config)]) == 3
    assert _main(["--debug", "check", str(config)]) == 3
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("AUDITOR_DEBUG", raising=False)
