"""Benchmarks that print figures (never assertions): auditor against reading the data once.

    python bench/run.py --scale 1                 # W1 W2 W3 W3r M at full size (minutes)
    python bench/run.py --scale 0.01 --runs 1     # the smoke run that `make test` does
    python bench/run.py --compare-to HEAD~3       # each audit also run by that commit, in turn

Workloads (the data is built server-side with generate_series / MariaDB's sequence engine):
  W1  PostgreSQL A: customers 2M, products 200k; PostgreSQL B: orders 5M, reviews 5M.
      0.1% orphans on both references, 0.1% real mismatches per PII field, 10% of copies
      differing only by case/spaces/phone formatting (never reported).
  W2  customers 2M and a 1:1 copy with 0.1% changed emails: auditor vs reladiff hashdiff.
  W3  W1 with database B on MariaDB.
  W3r W1 with database A on MariaDB (MariaDB referenced, PostgreSQL referencing).
  M   peak memory of a reference audit at 100k and 1M referencing rows (PostgreSQL).
Each measured command: median wall time of --runs, peak RSS of the child, rows/s, ratio to
the baseline (psql \\copy / mariadb --quick of the same columns). Wrong finding counts print
FAIL instead of a time. W1, W2 and W3 also time a bare read (bench/bare_read.py): the same
statements through the fast readers auditor uses, grouped as its rules read them, and nothing
else; the gap between that line and auditor's is auditor's own work.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("AUDITOR_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/")
MARIADB = os.environ.get("AUDITOR_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/")
PREFIX = "auditor_bench"


@dataclass
class Sizes:
    customers: int
    products: int
    orders: int
    reviews: int

    @classmethod
    def at(cls, scale: float) -> Sizes:
        return cls(*(max(1000, int(n * scale)) for n in (2_000_000, 200_000, 5_000_000, 5_000_000)))


@dataclass
class Measure:
    workload: str
    name: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    ok: bool = True
    detail: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


# --- data ---------------------------------------------------------------------------------


# PostgreSQL tables are vacuumed after loading: the first read of fresh rows otherwise sets
# their hint bits (writes), and whichever command happens to read first pays for it.
def _a_statements(n: Sizes, dialect: str = "postgresql") -> list[str]:
    """Database A (customers, products) on PostgreSQL or, for W3r, on MariaDB."""
    if dialect == "postgresql":
        g, source = "g", "generate_series(1, {n}) g"
        d = "lpad((g % 10000000)::text, 7, '0')"

        def concat(*parts: str) -> str:
            return " || ".join(parts)

        text, flag = "text", "boolean"
        finish = ["VACUUM (ANALYZE) customers", "VACUUM (ANALYZE) products"]
    else:
        g, source = "s.seq", "seq_1_to_{n} s"
        d = "lpad(CAST(s.seq % 10000000 AS CHAR), 7, '0')"

        def concat(*parts: str) -> str:
            return f"CONCAT({', '.join(parts)})"

        text, flag = "varchar(255)", "boolean"
        finish = ["ANALYZE TABLE customers", "ANALYZE TABLE products"]
    email = concat("'user'", g, "'@example.com'")
    name = concat("'First'", f"({g} % 1000)", "' Last'", f"({g} % 997)")
    phone = concat("'(415) '", f"substr({d}, 1, 3)", "'-'", f"substr({d}, 4, 4)")
    return [
        "DROP TABLE IF EXISTS customers",
        "DROP TABLE IF EXISTS products",
        f"CREATE TABLE customers (id bigint PRIMARY KEY, email {text}, full_name {text}, "
        f"phone {text})",
        f"INSERT INTO customers SELECT {g}, {email}, {name}, {phone} "
        f"FROM {source.format(n=n.customers)}",
        f"CREATE TABLE products (id bigint PRIMARY KEY, deleted {flag} NOT NULL)",
        f"INSERT INTO products SELECT {g}, {g} % 100 = 0 FROM {source.format(n=n.products)}",
        *finish,
    ]


def _copy_exprs(n: Sizes, cid: str, g: str, concat, cast) -> dict[str, str]:
    """SQL for the copies' columns; `concat` builds string concatenation per dialect."""
    email = concat("'user'", cid, "'@example.com'")
    name = concat("'First'", f"({cid} % 1000)", "' Last'", f"({cid} % 997)")
    digits = f"lpad({cast(f'{cid} % 10000000')}, 7, '0')"
    other = f"lpad({cast(f'({cid} + 1) % 10000000')}, 7, '0')"
    phone = concat("'(415) '", f"substr({digits}, 1, 3)", "'-'", f"substr({digits}, 4, 4)")
    return {
        "customer_email": f"""CASE WHEN {g} % 1000 = 1 THEN {concat("'changed'", email)}
            WHEN {g} % 10 = 5 THEN upper({email})
            WHEN {g} % 10 = 6 THEN {concat("'  '", email, "' '")} ELSE {email} END""",
        "customer_name": f"""CASE WHEN {g} % 1000 = 2 THEN {concat("'Other'", cid)}
            WHEN {g} % 10 = 7 THEN upper({name})
            WHEN {g} % 10 = 8 THEN replace({name}, ' ', '  ') ELSE {name} END""",
        "customer_phone": f"""CASE WHEN {g} % 1000 = 3
            THEN {concat("'(415) '", f"substr({other}, 1, 3)", "'-'", f"substr({other}, 4, 4)")}
            WHEN {g} % 10 = 9 THEN {concat("'415'", digits)} ELSE {phone} END""",
    }


def _b_statements(n: Sizes, dialect: str) -> list[str]:
    if dialect == "postgresql":
        source, g = "generate_series(1::bigint, {n}) g", "g"

        def concat(*parts: str) -> str:
            return " || ".join(f"({p})::text" for p in parts)

        def cast(expr: str) -> str:
            return f"({expr})::text"

        text = "text"
    else:
        source, g = "seq_1_to_{n} s", "s.seq"

        def concat(*parts: str) -> str:
            return f"CONCAT({', '.join(parts)})"

        def cast(expr: str) -> str:
            return f"CAST({expr} AS CHAR)"

        text = "varchar(255)"
    cid = f"(({g} * 7919) % {n.customers}) + 1"
    exprs = _copy_exprs(n, f"({cid})", g, concat, cast)
    customer = f"CASE WHEN {g} % 1000 = 0 THEN {n.customers} + {g} ELSE {cid} END"
    product = f"CASE WHEN {g} % 1000 = 0 THEN {n.products} + {g} ELSE (({g} * 104729) % {n.products}) + 1 END"
    return [
        "DROP TABLE IF EXISTS orders",
        "DROP TABLE IF EXISTS reviews",
        f"""CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint,
            customer_email {text}, customer_name {text}, customer_phone {text})""",
        f"""INSERT INTO orders SELECT {g}, {customer}, {exprs["customer_email"]},
            {exprs["customer_name"]}, {exprs["customer_phone"]} FROM {source.format(n=n.orders)}""",
        "CREATE TABLE reviews (id bigint PRIMARY KEY, product_id bigint)",
        f"INSERT INTO reviews SELECT {g}, {product} FROM {source.format(n=n.reviews)}",
        "ANALYZE TABLE orders" if dialect != "postgresql" else "VACUUM (ANALYZE) orders",
        "ANALYZE TABLE reviews" if dialect != "postgresql" else "VACUUM (ANALYZE) reviews",
    ]


def _w2_statements(n: Sizes) -> list[str]:
    return [
        "DROP TABLE IF EXISTS customers_copy",
        "CREATE TABLE customers_copy (id bigint PRIMARY KEY, email text)",
        f"""INSERT INTO customers_copy SELECT g, CASE WHEN g % 1000 = 0
            THEN 'changed' || g || '@example.com' ELSE 'user' || g || '@example.com' END
            FROM generate_series(1, {n.customers}) g""",
        "VACUUM (ANALYZE) customers_copy",
    ]


def expected_w1(n: Sizes) -> dict[str, dict[str, int]]:
    g = np.arange(1, n.reviews + 1, dtype=np.int64)
    live = g % 1000 != 0
    product = (g * 104729) % n.products + 1
    soft = int(np.count_nonzero(live & (product % 100 == 0)))
    o = np.arange(1, n.orders + 1, dtype=np.int64)
    return {
        "reviews-products": {"orphan": n.reviews // 1000, "soft_deleted": soft},
        "orders-customers": {
            "missing_source": n.orders // 1000,
            "mismatch": sum(int(np.count_nonzero(o % 1000 == k)) for k in (1, 2, 3)),
        },
    }


def _database(base: str, name: str) -> str:
    return sa.make_url(base).set(database=name).render_as_string(hide_password=False)


def _ensure_database(base: str, name: str) -> sa.Engine:
    admin = sa.create_engine(base if "mysql" in base else _database(base, "postgres"),
                             isolation_level="AUTOCOMMIT")  # fmt: skip
    with admin.connect() as conn:
        if "mysql" in base:
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {name}"))
        else:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            )
            if not exists.scalar():
                conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return sa.create_engine(_database(base, name), isolation_level="AUTOCOMMIT")


def _load(engine: sa.Engine, statements: list[str], marker: str) -> None:
    """Run the statements unless the database already holds this exact data set."""
    with engine.connect() as conn:
        conn.execute(
            sa.text("CREATE TABLE IF NOT EXISTS bench_meta (name varchar(200) PRIMARY KEY)")
        )
        if conn.execute(
            sa.text("SELECT 1 FROM bench_meta WHERE name = :m"), {"m": marker}
        ).scalar():
            return
        started = time.perf_counter()
        for statement in statements:
            conn.execute(sa.text(statement))
        conn.execute(
            sa.text("DELETE FROM bench_meta WHERE name LIKE :p"), {"p": marker.split(":")[0] + ":%"}
        )
        conn.execute(sa.text("INSERT INTO bench_meta VALUES (:m)"), {"m": marker})
        print(f"  built {marker} in {time.perf_counter() - started:.1f}s", flush=True)


# --- measuring ----------------------------------------------------------------------------


def run_measured(command: list[str] | str, shell: bool = False) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of one command.

    GNU time measures the peak RSS: a child forked from this (large) process would otherwise
    report this process's RSS at fork time as its own peak.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        if shell:
            wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss.name, "sh", "-c", command]
        else:
            wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss.name, *command]
        started = time.perf_counter()
        proc = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{command} exited {proc.returncode}: {proc.stderr[-2000:]}")
        lines = [line for line in Path(rss.name).read_text().splitlines() if line.strip().isdigit()]
        peak_kb = int(lines[-1]) if lines else 0
    return seconds, peak_kb / 1024, proc.returncode


@dataclass
class Job:
    """One measured command of a workload."""

    measure: Measure
    command: list[str] | str
    shell: bool = False
    check: Callable[[], str] | None = None


def measure_together(jobs: list[Job], runs: int) -> list[Measure]:
    """Run every command once per round, `runs` rounds: a slow spell on a shared machine then
    lands on the baseline and the audit alike, and the ratio of medians stays fair."""
    for _ in range(runs):
        for job in jobs:
            if not job.measure.ok:
                continue
            seconds, rss, _ = run_measured(job.command, shell=job.shell)
            job.measure.seconds.append(seconds)
            job.measure.peak_rss_mb = max(job.measure.peak_rss_mb, rss)
            problem = job.check() if job.check else ""
            if problem:
                job.measure.ok, job.measure.detail = False, problem
    return [job.measure for job in jobs]


def _auditor(config: Path, report: Path) -> list[str]:
    return [sys.executable, "-m", "auditor", "run", str(config), "--json", str(report), "-q"]


# --compare-to: (commit, a worktree of it); each audit job gets a twin run by that code.
COMPARED: tuple[str, Path] | None = None


def _audits(
    measure: Measure, config: Path, report: Path, expected: dict | None = None
) -> list[Job]:
    """The audit job, and its twin on the --compare-to commit, measured in the same rounds
    (so a change is measured beside its parent, not against another day's machine)."""
    check = _counts_check(report, expected) if expected is not None else None
    jobs = [Job(measure, _auditor(config, report), check=check)]
    if COMPARED is not None:
        ref, tree = COMPARED
        twin = Measure(measure.workload, f"{measure.name} @ {ref}", measure.rows)
        theirs = report.with_name(f"{report.stem}-ref.json")
        # `python -m` puts the working directory first on sys.path: that tree's auditor runs.
        command = f"cd {tree} && " + " ".join(map(str, _auditor(config, theirs)))
        twin_check = _counts_check(theirs, expected) if expected is not None else None
        jobs.append(Job(twin, command, shell=True, check=twin_check))
    return jobs


BARE_READ = "bare read (auditor's readers only)"


def _bare_read(groups: list[list[tuple[str, str]]]) -> list[str]:
    """bench/bare_read.py: the same statements through the same fast readers, nothing else."""
    args = [sys.executable, str(ROOT / "bench" / "bare_read.py")]
    for number, group in enumerate(groups):
        args += (["--"] if number else []) + [part for pair in group for part in pair]
    return args


def _counts_check(report: Path, expected: dict[str, dict[str, int]]):
    def check() -> str:
        data = json.loads(report.read_text())
        got = {r["name"]: r["counts"] for r in data["rules"]}
        errors = [r["error"] for r in data["rules"] if r["error"]]
        if errors:
            return errors[0]
        return "" if got == expected else f"expected {expected}, got {got}"

    return check


def _psql_copy(db: str, select: str) -> str:
    url = sa.make_url(_database(PG, db))
    return f"psql -h {url.host} -p {url.port or 5432} -U {url.username} -d {db} -qc \"\\copy ({select}) TO '/dev/null'\""


def _mariadb_select(db: str, select: str) -> str:
    url = sa.make_url(_database(MARIADB, db))
    return f'mariadb --quick -N -B -h {url.host} -P {url.port or 3306} -u {url.username} {db} -e "{select}" > /dev/null'


W1_RULES = [
    {
        "name": "reviews-products",
        "type": "reference",
        "from": {"db": "b", "table": "reviews", "columns": ["product_id"]},
        "to": {"db": "a", "table": "products", "columns": ["id"], "soft_delete": "deleted"},
    },
    {
        "name": "orders-customers",
        "type": "pii",
        "source": {"db": "a", "table": "customers", "key": ["id"]},
        "copy": {"db": "b", "table": "orders", "key": ["customer_id"]},
        "fields": [
            {"source": "email", "copy": "customer_email", "normalize": ["email"]},
            {
                "source": "full_name",
                "copy": "customer_name",
                "normalize": ["trim", "collapse_spaces", "casefold"],
            },
            {
                "source": "phone",
                "copy": "customer_phone",
                "normalize": [{"phone": {"region": "US"}}],
            },
        ],
    },
]
BASELINE_A = [
    "SELECT id, email, full_name, phone FROM customers",
    "SELECT id, deleted FROM products",
]
BASELINE_B = [
    "SELECT id, customer_id, customer_email, customer_name, customer_phone FROM orders",
    "SELECT id, product_id FROM reviews",
]


def write_config(folder: Path, name: str, urls: dict[str, str], rules: list[dict]) -> Path:
    path = folder / f"{name}.yaml"
    data = {"version": 1, "databases": {k: {"url": v} for k, v in urls.items()}, "rules": rules}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def workload_w1(
    n: Sizes, runs: int, folder: Path, b_backend: str = "postgresql", a_backend: str = "postgresql"
) -> list[Measure]:
    """W1; W3 with database B (the referencing/copy side) on MariaDB; W3r with A (the
    referenced/source side) on MariaDB instead."""
    label = {"postgresql": "W1", "mariadb": "W3"}[b_backend] if a_backend == "postgresql" else "W3r"
    bases = {"postgresql": PG, "mariadb": MARIADB}
    a_name, b_name = f"{PREFIX}_a", f"{PREFIX}_b"
    a = _ensure_database(bases[a_backend], a_name)
    _load(a, _a_statements(n, a_backend), f"a:{n}")
    b = _ensure_database(bases[b_backend], b_name)
    _load(b, _b_statements(n, b_backend), f"b:{n}")
    urls = {"a": _database(bases[a_backend], a_name), "b": _database(bases[b_backend], b_name)}
    config = write_config(folder, label, urls, W1_RULES)
    rows = n.customers + n.products + n.orders + n.reviews
    baseline = Measure(label, "baseline (read each table once)", rows)
    copy = {"postgresql": _psql_copy, "mariadb": _mariadb_select}
    commands = [copy[a_backend](a_name, s) for s in BASELINE_A] + [
        copy[b_backend](b_name, s) for s in BASELINE_B
    ]
    report = folder / f"{label}.json"
    audit = Measure(label, "auditor run (2 rules)", rows)
    # The rules' sides as auditor reads them: reviews with products, then customers with orders.
    bare = _bare_read([[(urls["b"], BASELINE_B[1]), (urls["a"], BASELINE_A[1])],
                       [(urls["a"], BASELINE_A[0]), (urls["b"], BASELINE_B[0])]])  # fmt: skip
    return measure_together([
        Job(baseline, " && ".join(commands), shell=True),
        Job(Measure(label, BARE_READ, rows), bare),
        *_audits(audit, config, report, expected_w1(n)),
    ], runs)  # fmt: skip


def workload_w2(n: Sizes, runs: int, folder: Path) -> list[Measure]:
    a = _ensure_database(PG, f"{PREFIX}_a")
    _load(a, _a_statements(n), f"a:{n}")
    b = _ensure_database(PG, f"{PREFIX}_b")
    _load(b, _w2_statements(n), f"w2:{n}")
    urls = {"a": _database(PG, f"{PREFIX}_a"), "b": _database(PG, f"{PREFIX}_b")}
    rule = {
        "name": "customers-copy",
        "type": "pii",
        "source": {"db": "a", "table": "customers", "key": ["id"]},
        "copy": {"db": "b", "table": "customers_copy", "key": ["id"]},
        "fields": [{"source": "email", "copy": "email"}],
    }
    config = write_config(folder, "W2", urls, [rule])
    rows = 2 * n.customers
    expected = {"customers-copy": {"mismatch": n.customers // 1000}}
    report = folder / "W2.json"
    baseline = Measure("W2", "baseline (read each table once)", rows)
    commands = [_psql_copy(f"{PREFIX}_a", "SELECT id, email FROM customers"),
                _psql_copy(f"{PREFIX}_b", "SELECT id, email FROM customers_copy")]  # fmt: skip
    bare = _bare_read([[(urls["a"], "SELECT id, email FROM customers"),
                        (urls["b"], "SELECT id, email FROM customers_copy")]])  # fmt: skip
    jobs = [
        Job(baseline, " && ".join(commands), shell=True),
        Job(Measure("W2", BARE_READ, rows), bare),
        *_audits(Measure("W2", "auditor run (pii, email)", rows), config, report, expected),
    ]  # fmt: skip
    reladiff = shutil.which("reladiff", path=str(Path(sys.executable).parent)) or shutil.which(
        "reladiff"
    )
    if reladiff:

        def pg(db: str) -> str:
            url = sa.make_url(_database(PG, db)).set(drivername="postgresql")
            return url.render_as_string(hide_password=False)

        out = folder / "reladiff.out"
        command = f"{reladiff} {pg(PREFIX + '_a')} customers {pg(PREFIX + '_b')} customers_copy -k id -c email > {out}"

        def check() -> str:
            lines = [line for line in out.read_text().splitlines() if line.startswith(("-", "+"))]
            return (
                ""
                if len(lines) == 2 * (n.customers // 1000)
                else f"reladiff printed {len(lines)} diff lines"
            )

        jobs.append(Job(Measure("W2", "reladiff hashdiff", rows), command, shell=True, check=check))
    else:
        missing = "not installed: pip install -e '.[bench]'"
        jobs.append(Job(Measure("W2", "reladiff hashdiff", rows, ok=False, detail=missing), ""))
    return measure_together(jobs, runs)


def workload_memory(runs: int, folder: Path, sizes=(100_000, 1_000_000)) -> list[Measure]:
    engine = _ensure_database(PG, f"{PREFIX}_m")
    results = []
    for size in sizes:
        _load(engine, [
            f"DROP TABLE IF EXISTS m_products_{size}, m_reviews_{size}",
            f"CREATE TABLE m_products_{size} (id bigint PRIMARY KEY, deleted boolean NOT NULL)",
            f"INSERT INTO m_products_{size} SELECT g, g % 100 = 0 FROM generate_series(1, {size // 10}) g",
            f"CREATE TABLE m_reviews_{size} (id bigint PRIMARY KEY, product_id bigint)",
            f"INSERT INTO m_reviews_{size} SELECT g, CASE WHEN g % 1000 = 0 THEN 0 ELSE (g * 7919) % {size // 10} + 1 END FROM generate_series(1::bigint, {size}) g",
            f"VACUUM (ANALYZE) m_products_{size}", f"VACUUM (ANALYZE) m_reviews_{size}",
        ], f"m{size}:1")  # fmt: skip
        rule = {
            "name": "reviews-products",
            "type": "reference",
            "from": {"db": "m", "table": f"m_reviews_{size}", "columns": ["product_id"]},
            "to": {
                "db": "m",
                "table": f"m_products_{size}",
                "columns": ["id"],
                "soft_delete": "deleted",
            },
        }
        config = write_config(folder, f"M{size}", {"m": _database(PG, f"{PREFIX}_m")}, [rule])
        report = folder / f"M{size}.json"
        m = Measure("M", f"auditor run, {size:,} referencing rows", size + size // 10)
        results += measure_together(_audits(m, config, report), runs)
    return results


def drop_databases() -> None:
    for base, suffixes in ((PG, ("a", "b", "m")), (MARIADB, ("a", "b"))):
        admin_url = base if "mysql" in base else _database(base, "postgres")
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for suffix in suffixes:
                force = "" if "mysql" in base else " WITH (FORCE)"
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PREFIX}_{suffix}{force}"))
        admin.dispose()


# --- output -------------------------------------------------------------------------------


def print_table(measures: list[Measure]) -> None:
    baselines = {m.workload: m.median for m in measures if m.name.startswith("baseline")}
    print(
        f"\n{'workload':<9}{'command':<38}{'median s':>9}{'peak MB':>9}{'rows/s':>13}{'ratio':>7}"
    )
    for m in measures:
        if not m.ok:
            print(f"{m.workload:<9}{m.name:<38}{'FAIL':>9}  {m.detail}")
            continue
        base = baselines.get(m.workload)
        ratio = f"{m.median / base:.2f}" if base else "-"
        rate = f"{m.rows / m.median:,.0f}" if m.seconds else "-"
        print(
            f"{m.workload:<9}{m.name:<38}{m.median:>9.2f}{m.peak_rss_mb:>9.0f}{rate:>13}{ratio:>7}"
        )


MEASURED_PACKAGES = ("adbc-driver-manager", "adbc-driver-postgresql", "adbc-driver-sqlite",
                     "connectorx", "pyarrow", "numpy", "SQLAlchemy", "psycopg", "reladiff")  # fmt: skip


def package_versions() -> dict[str, str]:
    """The versions that decide the figures (the ADBC drivers' builds differ 2x in CPU)."""
    versions = {}
    for name in MEASURED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def compile_auditor(root: Path) -> None:
    """Byte-compile auditor as installing a wheel does: an editable install under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module from source on every run
    (~0.1 s of each)."""
    compileall.compile_dir(root / "auditor", quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="W1,W2,W3,W3r,M")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--prefix", default="auditor_bench", help="name prefix of the bench databases"
    )
    parser.add_argument("--drop", action="store_true", help="drop the bench databases afterwards")
    parser.add_argument("--compare-to", metavar="REF", help="also run each audit at this commit")
    args = parser.parse_args()
    global PREFIX, COMPARED
    PREFIX = args.prefix
    sizes = Sizes.at(args.scale)
    compile_auditor(ROOT)
    # Not named auditor-*: an auditor before a8de36a removed such directories as its stale ones.
    worktree = tempfile.TemporaryDirectory(prefix="bench-auditor-ref-")
    git = ["git", "-C", str(ROOT), "worktree"]
    if args.compare_to:
        tree = Path(worktree.name) / "tree"
        subprocess.run([*git, "add", "-q", "--detach", str(tree), args.compare_to], check=True)
        compile_auditor(tree)
        COMPARED = (args.compare_to, tree)
    try:
        return _run(args, sizes)
    finally:
        if COMPARED is not None:
            subprocess.run([*git, "remove", "--force", str(COMPARED[1])], check=False)
        worktree.cleanup()


def _run(args: argparse.Namespace, sizes: Sizes) -> int:
    print(", ".join(f"{name} {version}" for name, version in package_versions().items()))
    wanted = args.workloads.split(",")
    measures: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="bench-auditor-") as tmp:
        folder = Path(tmp)
        plan = [
            ("W1", lambda: workload_w1(sizes, args.runs, folder)),
            ("W2", lambda: workload_w2(sizes, args.runs, folder)),
            ("W3", lambda: workload_w1(sizes, args.runs, folder, b_backend="mariadb")),
            ("W3r", lambda: workload_w1(sizes, args.runs, folder, a_backend="mariadb")),
            ("M", lambda: workload_memory(args.runs, folder, memory_sizes)),
        ]
        memory_sizes = tuple(max(10_000, int(s * args.scale)) for s in (100_000, 1_000_000))
        for name, run in plan:
            if name not in wanted:
                continue
            try:
                done = run()
            except Exception as exc:  # one broken workload must not hide the others
                done = [
                    Measure(
                        name, "workload", 0, ok=False, detail=f"{type(exc).__name__}: {exc}"[:300]
                    )
                ]
            measures += done
            print_table(done)
    if args.drop:
        drop_databases()
    print("\n== all workloads ==")
    print_table(measures)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = {
        "scale": args.scale,
        "sizes": asdict(sizes),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "packages": package_versions(),
        "measures": [asdict(m) | {"median": m.median} for m in measures],
    }
    path = args.out / f"bench-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {path}")
    return 0 if all(m.ok for m in measures) else 1


if __name__ == "__main__":
    sys.exit(main())
