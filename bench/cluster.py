"""W1 in one process against Dask workers (prints figures): `auditor run` plain, then with
`--workers 1` and `--workers 2`, each timed in a child process (wall seconds; peak RSS as
wait4 reports it on Linux: the largest of the client and of its descendants it waited for,
here the worker processes).

    python bench/cluster.py --scale 1 --runs 3
    python bench/cluster.py --scale 1 --runs 3 --shuffle

Uses bench/run.py's W1 databases (auditor_bench_a / _b on PostgreSQL, built if missing, kept
for the next run). Both W1 rules are cut into 4 key-range slices per worker; the pii rule
keeps suggest_keys: its listed mismatches are matched against each source slice afterwards.
`--shuffle` compares the keys as text (`key_type: string`), which no key range cuts: each
side is read in slices of its own primary key and the rows meet in buckets by key.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import run as w1
from measure import measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shuffle", action="store_true", help="keys as text: rules shuffled")
    args = parser.parse_args()
    sizes = w1.Sizes.at(args.scale)
    a = w1._ensure_database(w1.PG, f"{w1.PREFIX}_a")
    w1._load(a, w1._a_statements(sizes), f"a:{sizes}")
    b = w1._ensure_database(w1.PG, f"{w1.PREFIX}_b")
    w1._load(b, w1._b_statements(sizes, "postgresql"), f"b:{sizes}")
    urls = {
        "a": w1._database(w1.PG, f"{w1.PREFIX}_a"),
        "b": w1._database(w1.PG, f"{w1.PREFIX}_b"),
    }
    rows = sizes.customers + sizes.products + sizes.orders + sizes.reviews
    variants = {
        "one process": [],
        "--workers 1": ["--workers", "1"],
        "--workers 2": ["--workers", "2"],
    }
    with tempfile.TemporaryDirectory(prefix="bench-auditor-") as tmp:
        rules = [{**rule, "key_type": "string"} if args.shuffle else rule for rule in w1.W1_RULES]
        config = w1.write_config(Path(tmp), "W1", urls, rules)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        counts: dict[str, list] = {}
        for _ in range(args.runs):  # interleaved: each variant sees the same machine
            for name, flags in variants.items():
                report = Path(tmp) / "report.json"
                code, wall, rss, _, err = measured([sys.executable, "-m", "auditor", "run",
                                                    str(config), "-q", "--json", str(report),
                                                    *flags])  # fmt: skip
                if code not in (0, 1):
                    raise SystemExit(f"{name}: exit {code}: {err.strip()[-300:]}")
                times[name].append((wall, rss))
                done = json.loads(report.read_text())
                counts[name] = [rule["counts"] for rule in done["rules"]]
    how = "shuffled, keys as text" if args.shuffle else "sliced by key ranges"
    print(f"W1 on Dask, {how} (scale {args.scale}: {rows:,} rows), medians of {args.runs}")
    for name, measured_runs in times.items():
        wall = statistics.median(t for t, _ in measured_runs)
        rss = max(r for _, r in measured_runs)
        same = "same counts" if counts[name] == counts["one process"] else "COUNTS DIFFER"
        print(f"  {name:<13} {wall:7.2f} s  peak {rss:5.0f} MB  {rows / wall:12,.0f} rows/s"
              f"  {same}")  # fmt: skip


if __name__ == "__main__":
    main()
