"""Run every benchmark, each in its own subprocess, and print a compact summary table.

    python benchmarks/run_all.py              # 10 years of 1-minute bars (~5.26M rows)
    python benchmarks/run_all.py --years 1    # quick run
    python benchmarks/run_all.py --only verify check
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ENV, PYTHON, parser, secs, table

HERE = Path(__file__).resolve().parent
SCRIPTS = ("resolve", "verify", "memory", "check")

# The rows that go into the summary, by script: (metric as printed by the script, short label).
SUMMARY = {
    "resolve": [
        ("first resolve", "resolve (empty store)"),
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
        ("qmtl-lock check", "`qmtl-lock check`"),
        ("  check above bare start-up", "  above bare start-up"),
        ("    of which YAML parsing (load_yaml)", "  YAML parsing in check()"),
        ("forbidden modules imported", "  forbidden imports"),
    ],
}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    args = p.parse_args()
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-all-") as tmp:
        for name in args.only:
            out = Path(tmp) / f"{name}.json"
            cmd = [PYTHON, str(HERE / f"bench_{name}.py"), "--years", str(args.years),
                   "--json", str(out)]
            print(f"\n### bench_{name}.py --years {args.years}", flush=True)
            t0 = time.perf_counter()
            code = subprocess.call(cmd, env=ENV)
            times[name] = time.perf_counter() - t0
            if code != 0:
                print(f"bench_{name}.py failed with exit code {code}", file=sys.stderr)
                sys.exit(code)
            results[name] = json.loads(out.read_text())

    rows = []
    for name in args.only:
        by_metric = {r["metric"]: r for r in results[name]["rows"]}
        for metric, label in SUMMARY[name]:
            r = by_metric.get(metric)
            if r is not None:
                rows.append({"bench": name, "metric": label, "value": r["value"],
                             "reference": r["reference"], "ratio": r["ratio"]})
    total = time.perf_counter() - started
    print(f"\n== summary: {args.years} year(s) of 1-minute bars, one symbol "
          f"(ratios against references measured in the same run) ==")
    print(table(rows, ("bench", "metric", "value", "reference", "ratio")))
    print("wall time: " + ", ".join(f"{n} {secs(t)}" for n, t in times.items())
          + f"; total {secs(total)}")
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": rows, "results": results}, indent=1))


if __name__ == "__main__":
    main()
