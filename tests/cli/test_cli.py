"""The CLI end to end in a real process: exit codes 0/1/2/3, messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import IN_CI, make_database
from tests.scenarios import build_reference


def auditor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def check_fails_with(path: Path, message: str) -> None:
    """`auditor check` on `path` is one line on stderr, exit 2, naming the file and `message`."""
    checked = auditor("check", str(path))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert message in checked.stderr and f"{path.name}:" in checked.stderr, checked.stderr
    assert checked.stderr.count("\n") == 1 and "Traceback" not in checked.stderr


@pytest.fixture
def sqlite_config(tmp_path, write_config):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    catalog = next(make_database("sqlite", tmp_path / "a"))
    reviews = next(make_database("sqlite", tmp_path / "b"))
    return write_config(build_reference(catalog, reviews))


def test_version():
    result = auditor("--version")
    assert result.returncode == 0 and result.stdout.startswith("auditor ")


def test_findings_exit_1_and_json_report(sqlite_config, tmp_path):
    report = tmp_path / "out.json"
    result = auditor("run", str(sqlite_config), "--json", str(report), "--no-progress")
    assert result.returncode == 1, result.stderr
    data = json.loads(report.read_text())
    assert data["schema_version"] == 1 and data["status"] == "fail" and data["exit_code"] == 1
    assert data["totals"]["findings"] == sum(sum(r["counts"].values()) for r in data["rules"])
    assert "FAIL" in result.stdout and "reviews-products" in result.stdout
    assert report.stat().st_mode & 0o777 == 0o600


def test_json_to_stdout_keeps_stdout_clean(sqlite_config):
    result = auditor("run", str(sqlite_config), "--json", "-", "--rule", "cart-variants")
    assert result.returncode == 1
    assert json.loads(result.stdout)["rules"][0]["name"] == "cart-variants"


def test_passing_rule_exits_0_and_fail_on_never(sqlite_config):
    # reviews-not-null is a warning rule: with fail_on=error it does not fail the run
    assert auditor("run", str(sqlite_config), "--rule", "reviews-not-null", "-q").returncode == 0
    assert auditor("run", str(sqlite_config), "--fail-on", "never", "-q").returncode == 0
    result = auditor(
        "run", str(sqlite_config), "--rule", "reviews-not-null", "--fail-on", "warning"
    )
    assert result.returncode == 1


def test_max_findings_caps_the_list_not_the_counts(sqlite_config):
    result = auditor("run", str(sqlite_config), "--json", "-", "--max-findings", "1", "-q")
    rule = next(r for r in json.loads(result.stdout)["rules"] if r["name"] == "reviews-products")
    assert len(rule["findings"]) == 1 and rule["findings_truncated"] is True
    assert sum(rule["counts"].values()) == 7


def test_unknown_rule_is_exit_2(sqlite_config):
    result = auditor("run", str(sqlite_config), "--rule", "nope")
    assert result.returncode == 2 and "no such rule" in result.stderr


def test_bad_config_exit_2_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ndatabases: {a: {url: 'sqlite:///x.db'}}\nrulez: []\n")
    for command in ("run", "check"):
        result = auditor(command, str(path))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr + result.stdout
        assert "bad.yaml:3: rulez: unknown key 'rulez' (did you mean 'rules'?)" in result.stderr


def test_missing_column_is_exit_2_naming_it(sqlite_config):
    text = sqlite_config.read_text().replace("product_uid", "product_uuid", 1)
    sqlite_config.write_text(text)
    result = auditor("check", str(sqlite_config))
    assert result.returncode == 2
    assert "reviews.shares.product_uuid does not exist" in result.stderr
    assert "did you mean 'product_uid'" in result.stderr


def test_a_cause_that_stops_four_rules_is_printed_once(write_config, tmp_path):
    _need_mariadb()
    config = _unreachable_config(
        write_config, "mysql+pymysql://no_such_user:wr0ng-pw-123@127.0.0.1:3306/mysql", rules=4
    )
    result = auditor("run", str(config), "--no-progress", "--json", str(tmp_path / "r.json"))
    assert result.returncode == 3
    assert result.stderr.count("Access denied") == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "(rules r0, r1, r2, r3)" in result.stderr
    assert result.stdout.count("Access denied") == 4  # the report body: once per rule
    errors = [r["error"] for r in json.loads((tmp_path / "r.json").read_text())["rules"]]
    assert len(set(errors)) == 1 and errors[0].startswith("cannot connect to database 'reviews'")


def _need_mariadb() -> None:
    import sqlalchemy as sa

    try:
        sa.create_engine("mysql+pymysql://root@127.0.0.1:3306/").connect().close()
    except sa.exc.OperationalError:
        if IN_CI:
            raise
        pytest.skip("MariaDB not reachable")


def test_check_prints_the_plan_and_exits_0(sqlite_config):
    result = auditor("check", str(sqlite_config))
    assert result.returncode == 0, result.stderr
    assert "reviews-products" in result.stdout and "no data rows were read" in result.stdout
    assert "CREATE INDEX" in result.stdout  # the alias/variant look-ups lack an index? at least one


def _unreachable_config(write_config, url: str, rules: int = 1) -> Path:
    rule = {
        "type": "reference",
        "from": {"db": "reviews", "table": "reviews", "columns": ["product_id"]},
        "to": {"db": "catalog", "table": "products", "columns": ["id"]},
    }
    return write_config(
        {
            "version": 1,
            "databases": {"catalog": {"url": url}, "reviews": {"url": url}},
            "rules": [{"name": "r" if rules == 1 else f"r{i}", **rule} for i in range(rules)],
        }
    )


def test_stopped_server_is_exit_3_naming_the_database(write_config, tmp_path):
    config = _unreachable_config(write_config, "postgresql+psycopg://u:s3cret-pw@127.0.0.1:1/x")
    for command in ("check", "run"):
        result = (
            auditor(command, str(config), "--json", str(tmp_path / "r.json"))
            if command == "run"
            else auditor(command, str(config))
        )
        assert result.returncode == 3, result.stderr
        assert "'catalog'" in result.stderr or "'reviews'" in result.stderr
        assert "s3cret-pw" not in result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "error" and report["rules"][0]["status"] == "error"
    assert "s3cret-pw" not in (tmp_path / "r.json").read_text()


def test_wrong_password_is_exit_3_without_the_password(write_config):
    _need_mariadb()
    config = _unreachable_config(
        write_config, "mysql+pymysql://no_such_user:wr0ng-pw-123@127.0.0.1:3306/mysql"
    )
    result = auditor("check", str(config))
    assert result.returncode == 3
    assert "wr0ng-pw-123" not in result.stdout + result.stderr
    assert "***" in result.stderr and "Access denied" in result.stderr


def test_mask_none_needs_show_pii(sqlite_config):
    sqlite_config.write_text(
        sqlite_config.read_text().replace("settings:\n", "settings:\n  mask: none\n")
    )
    result = auditor("run", str(sqlite_config), "-q")
    assert result.returncode == 2 and "--show-pii" in result.stderr
    line = sqlite_config.read_text().splitlines().index("  mask: none") + 1
    assert f"{sqlite_config}:{line}: settings.mask: " in result.stderr
    assert auditor("run", str(sqlite_config), "-q", "--show-pii").returncode == 1


def test_int_versus_text_keys_need_an_explicit_key_type(sqlite_config):
    data = yaml.safe_load(sqlite_config.read_text())
    legacy = next(rule for rule in data["rules"] if rule["name"] == "legacy-refs")
    del legacy["key_type"]
    sqlite_config.write_text(yaml.safe_dump(data))
    result = auditor("check", str(sqlite_config))
    assert result.returncode == 2
    assert "key types differ" in result.stderr and "key_type: int" in result.stderr
    index = data["rules"].index(legacy)
    assert "audit.yaml:" in result.stderr and f"rules[{index}].from.columns: " in result.stderr
    assert result.stderr.count("key types differ") == 1  # once, not by each layer
    assert "rules.legacy-refs" not in result.stderr


def test_a_table_without_primary_key_needs_an_explicit_key(tmp_path, write_config):
    import sqlite3

    path = tmp_path / "nokey.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE parents (id INTEGER PRIMARY KEY); CREATE TABLE kids (parent_id INTEGER);"
        )
    rule = {
        "name": "kids",
        "type": "reference",
        "from": {"db": "d", "table": "kids", "columns": ["parent_id"]},
        "to": {"db": "d", "table": "parents", "columns": ["id"]},
    }
    config = write_config(
        {"version": 1, "databases": {"d": {"url": f"sqlite:///{path}"}}, "rules": [rule]}
    )
    result = auditor("run", str(config), "-q")
    assert result.returncode == 2 and "has no primary key: set from.key" in result.stderr


def test_a_bug_in_one_rule_spares_the_others_and_leaks_nothing(sqlite_config, monkeypatch):
    import auditor as library
    from auditor import engine

    def broken(plan, *args, **kwargs):
        if plan.rule.name == "cart-variants":
            raise ValueError("secret-value@example.com")
        return original(plan, *args, **kwargs)

    original = engine.run_rule
    monkeypatch.setattr("auditor.api.run_rule", broken)
    result = library.run(library.load_config(sqlite_config))
    by_name = {r.name: r for r in result.rules}
    assert by_name["cart-variants"].status == "error" and result.exit_code == 4
    assert "secret-value" not in by_name["cart-variants"].error
    assert by_name["reviews-products"].status == "fail"


@pytest.mark.parametrize(
    ("raised", "code", "stderr"),
    [(SystemExit(None), 0, ""), (SystemExit(3), 3, ""), (SystemExit("bad"), 1, "bad\n")],
)
def test_entry_leaves_with_mains_exit_code(monkeypatch, capsys, raised, code, stderr):
    """entry() skips the interpreter's teardown (os._exit) but keeps main()'s exit code."""
    from auditor import cli

    def fake_main() -> None:
        sys.stdout.write("report\n")
        raise raised

    class Left(Exception):
        pass

    def fake_exit(status: int) -> None:
        raise Left(status)

    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    # entry() moves file descriptor 2 away from the terminal: not in the test process
    monkeypatch.setattr(cli, "_quiet_native_stderr", lambda: None)
    with pytest.raises(Left) as left:
        cli.entry()
    assert left.value.args == (code,)
    assert capsys.readouterr() == ("report\n", stderr)


def test_command_imports_the_cli_with_collector_off_then_freezes_it():
    """`import auditor` alone loads no heavy library, so auditor/__main__.py can switch the
    garbage collector off around the CLI's imports; by the time the CLI runs it is on again,
    with what the imports made frozen."""
    import auditor as library

    probe = (
        "import gc, os, sys, auditor, auditor.__main__ as command\n"
        "assert 'sqlalchemy' not in sys.modules and 'pyarrow' not in sys.modules\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'auditor.cli': print('importing, collector on:', gc.isenabled())\n"
        "sys.meta_path.insert(0, Spy())\n"
        "os._exit = lambda code: print('exit', code, gc.isenabled(), gc.get_freeze_count() > 0)\n"
        "sys.argv = ['auditor', '--version']\n"
        "command.main()\n"
        "print(auditor.run is auditor.api.run)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "importing, collector on: False",
        f"auditor {library.__version__}",
        "exit 0 True True",
        "True",
    ]


def test_a_quiet_run_imports_no_adbc_dbapi_layer_numpy_ma_or_rich(sqlite_config):
    """Start-up a run does not pay: the fast driver is used through the driver manager's own
    API (its DB-API layer imports pyarrow.dataset and probes for pandas and polars: 90 ms),
    numpy arrays become Arrow arrays by their buffers (pa.array imports numpy.ma: 50 ms), and a
    quiet run prints nothing, so it does not load rich (70 ms)."""
    probe = (
        "import os, sys, auditor.__main__ as command\n"
        "wanted = lambda m: m.startswith('adbc') or m in ('numpy.ma', 'rich')\n"
        "loaded = lambda: [m for m in sys.modules if wanted(m)]\n"
        "os._exit = lambda code: print(code, sorted(loaded()))\n"
        "sys.argv = ['auditor', 'run', sys.argv[1], '-q']\n"
        "command.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(sqlite_config)], capture_output=True, text=True
    )
    loaded = done.stdout.splitlines()[-1]
    assert loaded.startswith("1 ") and "adbc_driver_sqlite" in loaded, done.stderr
    assert "dbapi" not in loaded and "numpy.ma" not in loaded and "'rich'" not in loaded
