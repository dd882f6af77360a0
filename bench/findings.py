"""Peak memory of a run that lists every one of millions of findings (prints figures).

    python bench/findings.py --findings 2000000            # SQLite (PostgreSQL: --backend pg)

Builds a reviews table whose every row references a product that does not exist (plus one
product that does), runs `auditor run --max-findings 0 --json` on it in a child process and
prints the child's peak RSS, the wall time, the JSON report's size and the findings it lists;
then the same for `auditor diff` of that report (against itself, and against no findings).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa
import yaml
from measure import measured

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def build_sqlite(directory: Path, findings: int) -> str:
    path = directory / "shop.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE products (id INTEGER PRIMARY KEY);"
            "INSERT INTO products VALUES (0);"
            "CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER);"
        )
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO reviews SELECT i, i + 10 FROM n",
            (findings,),
        )
    return f"sqlite:///{path}"


def build_postgresql(findings: int) -> tuple[str, str]:
    name = f"auditor_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE products (id bigint PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO products VALUES (0)")
        conn.exec_driver_sql("CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint)")
        conn.execute(
            sa.text("INSERT INTO reviews SELECT g, g + 10 FROM generate_series(1, :n) g"),
            {"n": findings},
        )
        conn.exec_driver_sql("ANALYZE reviews")
    engine.dispose()
    return url, name


def drop_postgresql(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=2_000_000)
    parser.add_argument("--backend", choices=["sqlite", "pg"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auditor-") as tmp:
        directory = Path(tmp)
        created = None
        if args.backend == "pg":
            url, created = build_postgresql(args.findings)
        else:
            url = build_sqlite(directory, args.findings)
        config = directory / "many.yaml"
        rule = {
            "name": "reviews-products",
            "type": "reference",
            "from": {"db": "shop", "table": "reviews", "columns": ["product_id"]},
            "to": {"db": "shop", "table": "products", "columns": ["id"]},
        }
        config.write_text(
            yaml.safe_dump({"version": 1, "databases": {"shop": {"url": url}}, "rules": [rule]})
        )
        report = directory / "out.json"
        command = [sys.executable, "-m", "auditor", "run", str(config), "-q"]
        command += ["--max-findings", "0", "--json", str(report)]
        try:
            code, wall, peak_mb, _, stderr = measured(command)
        finally:
            if created:
                drop_postgresql(created)
        listed = 0
        with report.open(encoding="utf-8") as lines:
            for line in lines:
                listed += line.startswith('        {"rule": ')  # one finding a line
        print(f"backend {args.backend}, {args.findings:,} orphans, --max-findings 0")
        print(f"  exit {code}  wall {wall:.1f} s  peak RSS {peak_mb:,.0f} MB")
        print(f"  JSON {report.stat().st_size / 1e6:,.0f} MB listing {listed:,} findings")
        if code != 1 or listed != args.findings:
            print("  FAIL:", stderr.strip()[:500])
            return
        diff_memory(report, directory, args.findings)


def diff_memory(report: Path, directory: Path, findings: int) -> None:
    """`auditor diff` of that report against itself (all persisting) and against the same
    report with no findings (all new, the diff's JSON listing every one)."""
    from auditor.report.diff import load_report

    empty = directory / "empty.json"
    empty.write_text(json.dumps(load_report(report).data))
    for old, expected in ((report, 0), (empty, findings)):
        out = directory / "diff.json"
        command = [sys.executable, "-m", "auditor", "diff", str(old), str(report), "-q"]
        command += ["--json", str(out)]
        code, wall, peak_mb, _, _ = measured(command)
        new = len(json.loads(out.read_text())["new"])
        against = "itself" if old == report else "no findings"
        check = "" if new == expected else "  FAIL"
        print(f"diff vs {against}: exit {code}  wall {wall:.1f} s  peak RSS {peak_mb:,.0f} MB"
              f"  new {new:,}{check}")  # fmt: skip


if __name__ == "__main__":
    main()
