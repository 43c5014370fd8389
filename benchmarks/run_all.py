"""Run every benchmark, each in its own subprocess, and print a compact summary table.

    python benchmarks/run_all.py                      # 10 years of 1-minute bars (~5.26M rows)
    python benchmarks/run_all.py --years 1            # quick run
    python benchmarks/run_all.py --only verify check
    python benchmarks/run_all.py --repeat 3 --write-readme   # min-max of 3 runs into README.md

Every goal of issue 11 that a script measures (a row with a bound, see ``Report.goal``) is printed
as its ratio to a reference measured in the same run; with ``--repeat N`` each script runs N
times and the goals show the median ratio and its min-max over the runs. ``--write-readme``
replaces the marked section of benchmarks/README.md with this run's tables, so the figures there
are never typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import ENV, PYTHON, parser, secs, table

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
BEGIN, END = "<!-- run_all.py: begin -->", "<!-- run_all.py: end -->"
SCRIPTS = ("resolve", "verify", "memory", "check", "extend", "load", "dvc", "store",
           "dask_overhead", "files")

# The rows that go into the summary, by script: (metric as printed by the script, short label).
# Goal rows go into the goals table without being listed here.
SUMMARY = {
    "resolve": [
        ("first resolve rows/s", "resolve rows/s"),
        ("  in resolve: conformance", "  share: conformance"),
        ("no-op resolve (in-process)", "no-op resolve, in-process"),
        ("  data reads/writes in no-op resolve", "  data reads/writes in no-op"),
        ("no-op `qmtl-lock resolve` (CLI)", "no-op `qmtl-lock resolve`"),
    ],
    "verify": [
        ("verify", "verify"),
        ("verify MB/s", "verify MB/s"),
        ("verify rows/s", "verify rows/s"),
        ("`qmtl-lock verify` (CLI, fresh process)", "`qmtl-lock verify` (CLI)"),
        ("one multi-threaded pq.read_table(files)", "1 threaded read vs loop"),
    ],
    "memory": [
        ("peak RSS (ru_maxrss)", "peak RSS"),
        ("peak RSS above imports", "peak RSS above imports"),
        ("pyarrow pool peak", "pyarrow pool peak"),
        ("tracemalloc peak (Python+numpy)", "tracemalloc peak"),
    ],
    "check": [
        ("  bound of diff: python -c 'import click, qmtl_lock.lockfile, qmtl_engine.store'",
         "  bound of diff: import lockfile+store"),
        ("  bound of no-op resolve: python -c 'import click, qmtl_engine.store'",
         "  bound of no-op resolve: import store"),
        ("  check, full path (no digest recorded)", "`qmtl-lock check`, full path"),
        ("  diff vs the full path of check", "  diff vs full check"),
        ("forbidden modules imported", "  forbidden imports"),
        ("  `check` builds models (pydantic)", "  check builds models"),
        ("  `resolve` builds models (pydantic)", "  no-op resolve builds models"),
        ("  `--help` imports command modules", "  --help imports commands"),
    ],
    "extend": [
        ("  bound: no-op `qmtl-lock resolve`", "  bound of extension: no-op resolve"),
        ("  extension above a no-op resolve (imports of pyarrow & co, work)",
         "  extension above a no-op resolve"),
        ("  library imports against the goal", "  bound of extension: library imports vs goal"),
    ],
    "load": [
        ("rows / table size (nbytes)", "rows / table size"),
        ("  vs ArcticDB read, output_format=pyarrow", "  Lock.load vs ArcticDB arrow output"),
        ("  bound: pq.read_table(object files), threaded", "  bound of load: Parquet decode"),
        ("  `Lock.load` of the whole range (in-process)", "  Lock.load (no ArcticDB)"),
        ("  pyarrow system pool peak", "  load: pyarrow pool peak"),
    ],
    "dvc": [
        ("  dvc status, state kept (no re-hash)", "  dvc status, state kept"),
        ("  first pin (`qmtl-lock resolve`)", "  first pin (no dvc)"),
        ("  full re-hash (`qmtl-lock verify`)", "  full re-hash (no dvc)"),
    ],
    "store": [  # issue 10: a store on object storage, and the executors
        ("local store calls per fetched partition", "local store calls / fetched partition"),
        ("S3 requests per fetched partition (at the server)", "S3 requests / fetched partition"),
        ("resolve, S3 store, one process", "20 symbols x 1 y: S3, one process"),
        ("resolve, S3 store, Dask 2 workers", "20 symbols x 1 y: S3, Dask 2 workers"),
        ("slow store (24 ms/request), 5 symbols, --jobs 4", "slow store: --jobs 4"),
        ("slow store (24 ms/request), 5 symbols, Dask", "slow store: Dask"),
    ],
    "dask_overhead": [
        ("DaskExecutor(workers=2), processes", "Dask per-task overhead"),
        ("  against one month's Parquet write", "  vs one month's Parquet write"),
        ("  cluster start-up (once per run)", "  cluster start-up"),
    ],
    "files": [  # the files source (issue 11)
        ("  peak RSS above imports, monthly files", "files: peak RSS above imports, monthly"),
        ("  peak RSS above imports, one file", "files: peak RSS above imports, one file"),
        ("  resolve time, one file", "files: resolve time, one file"),
        ("  one-day extension, time", "files: one-day extension time"),
        ("  extension with the index vs without, files read", "files: extension reads, no index"),
    ],
}


def run_scripts(names: list[str], years: int, repeat: int, peers: Path | None,
                ) -> tuple[dict[str, list[Any]], dict[str, float]]:
    """Each script's JSON result, once per repeat, and its wall time over all repeats."""
    results: dict[str, list[Any]] = {name: [] for name in names}
    times = dict.fromkeys(names, 0.0)
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-all-") as tmp:
        for i in range(repeat):
            for name in names:
                out = Path(tmp) / f"{name}-{i}.json"
                cmd = [PYTHON, str(HERE / f"bench_{name}.py"), "--years", str(years),
                       "--json", str(out), *(["--peers", str(peers)] if peers else [])]
                print(f"\n### bench_{name}.py --years {years}"
                      + (f" (run {i + 1} of {repeat})" if repeat > 1 else ""), flush=True)
                t0 = time.perf_counter()
                code = subprocess.call(cmd, env=ENV)
                times[name] += time.perf_counter() - t0
                if code != 0:
                    print(f"bench_{name}.py failed with exit code {code}", file=sys.stderr)
                    sys.exit(code)
                results[name].append(json.loads(out.read_text()))
    return results, times


def goal_rows(results: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every goal row of every script: the run with the median ratio, and min-max over runs.

    A goal skipped in a run (a peer tool not installed) is never met; a goal written as "none"
    (``Report.check``) is met only if no run named an offender."""
    rows = []
    for name, runs in results.items():
        metrics = [r["metric"] for r in runs[0]["rows"] if r.get("limit") is not None]
        for metric in metrics:
            found = [r for run in runs for r in run["rows"] if r["metric"] == metric]
            limit, bound = found[0]["limit"], found[0].get("bound", "")
            label = f"{metric}: {bound}" if bound else f"{metric} <= {limit:g}x"
            measured = sorted((r for r in found if r.get("x") is not None), key=lambda r: r["x"])
            if not measured:
                rows.append({"bench": name, "goal": label, "value": found[-1]["value"],
                             "reference": "", "ratio": "", "min-max": "", "result": "skipped",
                             "runs": 0})
                continue
            mid = measured[(len(measured) - 1) // 2]
            xs = [r["x"] for r in measured]
            spread = f"{min(xs):.2f}-{max(xs):.2f}x" if len(xs) > 1 and not bound else ""
            met = max(xs) <= limit and len(measured) == len(found)
            result = "met" if met else "NOT met"
            if len(measured) < len(found):
                result += f" (skipped in {len(found) - len(measured)} run(s))"
            named = [v for r in measured for v in r["value"].split(", ") if v != "none"]
            value = mid["value"] if not bound else ", ".join(dict.fromkeys(named)) or "none"
            rows.append({"bench": name, "goal": label, "value": value,
                         "reference": mid["reference"],
                         "ratio": mid["ratio"] if bound else f"{statistics.median(xs):.2f}x",
                         "min-max": spread, "result": result, "runs": len(xs)})
    return rows


def summary_rows(results: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The listed rows of each script's last run."""
    rows = []
    for name, runs in results.items():
        by_metric = {r["metric"]: r for r in runs[-1]["rows"]}
        for metric, label in SUMMARY[name]:
            r = by_metric.get(metric)
            if r is not None:
                rows.append({"bench": name, "metric": label, "value": r["value"],
                             "reference": r["reference"], "ratio": r["ratio"]})
    return rows


def readme_section(command: str, goals: str, summary: str, wall: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{os.cpu_count()} cores, {platform.machine()}, Python "
               f"{platform.python_version()}, load average "
               + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return "\n".join([
        BEGIN,
        f"`{command}` on {when} ({machine}). Written by the script; do not edit by hand.",
        "", "Goals of issue 11 (ratio: median over the runs; met only if met in every run):", "",
        "```", goals, "```", "", "Summary (last run):", "", "```", summary, wall, "```", END])


def write_readme(section: str) -> None:
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no section marked {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(head + section + tail, encoding="utf-8")
    print(f"wrote the marked section of {README}")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    p.add_argument("--repeat", type=int, default=1, help="run each script N times (min-max)")
    p.add_argument("--write-readme", action="store_true",
                   help="rewrite the marked section of benchmarks/README.md with this run")
    args = p.parse_args()
    started = time.perf_counter()
    results, times = run_scripts(args.only, args.years, max(args.repeat, 1), args.peers)
    goals = goal_rows(results)
    rows = summary_rows(results)
    total = time.perf_counter() - started
    goals_table = table(goals, ("bench", "goal", "value", "reference", "ratio", "min-max",
                                "result"))
    summary = table(rows, ("bench", "metric", "value", "reference", "ratio"))
    wall = ("wall time: " + ", ".join(f"{n} {secs(t)}" for n, t in times.items())
            + f"; total {secs(total)}")
    print(f"\n== goals of issue 11: {args.years} year(s) of 1-minute bars, one symbol, "
          f"{args.repeat} run(s) (ratios against references measured in the same run) ==")
    print(goals_table)
    print("\n== summary (last run) ==")
    print(summary)
    print(wall)
    if args.write_readme:  # the command that reproduces the figures, without where they went
        shown = [a for i, a in enumerate(sys.argv[1:])
                 if a != "--json" and (i == 0 or sys.argv[i] != "--json")]
        command = " ".join(["python benchmarks/run_all.py", *shown])
        write_readme(readme_section(command, goals_table, summary, wall))
    if args.json is not None:
        args.json.write_text(json.dumps({"goals": goals, "summary": rows, "results": results},
                                        indent=1))


if __name__ == "__main__":
    main()
