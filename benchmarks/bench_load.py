"""The strategy side: ``Lock.load`` against ArcticDB, its peak memory, one month in a fresh process,
and which data commands import pandas.

On a temporary project resolved in setup (not timed), in the same run:

- ``Lock.load`` of the whole range, timed in-process in a child interpreter (one read discarded,
  then the median of 5), against ArcticDB's ``read`` of the same table from an LMDB library
  written in setup, timed the same way in its own interpreter (a peer's: ``--peers``, see
  ``_common.peer_python``). Without arcticdb the goal is printed as skipped;
- the peak memory of one ``Lock.load`` in a fresh process: the RSS high-water mark (``VmHWM``)
  after the load minus the one after the imports and ``Lock.open``, against the loaded table's
  ``nbytes``;
- one month (the range's last) through ``Lock.load(start=, end=)`` in a fresh ``python -c``,
  against ``python -c "import pyarrow.parquet as pq; pq.read_table(F)"`` of that month's object
  file, round-robin, median of 5; and the imports alone of the load path, which bound it;
- pandas: the data commands (cold ``resolve``, a one-day extension, ``verify``, ``show``,
  ``show --gaps``, ``diff``, ``check``, and ``Lock.load`` returning Arrow) run in fresh processes
  under ``python -X importtime`` on a one-month project; none may import pandas.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    DATASET,
    ENV,
    PYTHON,
    SYMBOL,
    Report,
    end_date,
    manifest_text,
    median_cmds,
    object_paths,
    parser,
    peer_python,
    run_cmd,
    secs,
    step,
    temp_project,
    timed,
)

RUNS = 5

# ArcticDB, in its own interpreter: write the table into an LMDB library (setup), or time reads.
ARCTIC = """\
import json, sys, time
from arcticdb import Arctic
mode, uri = sys.argv[1], sys.argv[2]
lib = Arctic(uri).get_library("bench", create_if_missing=True)
if mode == "write":
    import pyarrow.parquet as pq
    lib.write("BTCUSDT", pq.read_table(sys.argv[3]).to_pandas().set_index("ts"))
    sys.exit(0)
kwargs = {} if mode == "pandas" else {"output_format": mode}
lib.read("BTCUSDT", **kwargs)  # discarded: the first read opens the library
times = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter()
    data = lib.read("BTCUSDT", **kwargs).data
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "rows": len(data)}))
"""


def child_load(lock_path: str, runs: int) -> None:
    """Time ``Lock.load`` in this process the way ARCTIC times ``read``."""
    from qmtl_lock import Lock

    lock = Lock.open(lock_path)
    lock.load(DATASET, SYMBOL)  # discarded, as ArcticDB's first read
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        table = lock.load(DATASET, SYMBOL)
        times.append(time.perf_counter() - t0)
    # What bounds it: decoding the same object files alone, with pyarrow's threads.
    import pyarrow.parquet as pq

    paths = Path(lock_path).with_name("objects.txt").read_text(encoding="utf-8").split("\n")
    pq.read_table(paths)
    decode = []
    for _ in range(runs):
        t0 = time.perf_counter()
        pq.read_table(paths)
        decode.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps({"times": times, "decode": decode, "rows": table.num_rows}))


def peak_rss() -> int:
    """This process's RSS high-water mark in bytes: ``VmHWM`` of its own memory map (Linux).
    ``ru_maxrss`` would not do: Linux carries the parent's peak over ``execve``, so a child of a
    process holding the table starts with the parent's peak."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child_memory(lock_path: str) -> None:
    """Peak RSS of one ``Lock.load`` above what the process held before it."""
    import pyarrow as pa
    import pyarrow.compute  # the load path's imports, made before the baseline
    import pyarrow.parquet
    import qmtl_engine.arrow_np
    import qmtl_engine.fingerprint
    import qmtl_engine.read  # noqa: F401

    from qmtl_lock import Lock

    lock = Lock.open(lock_path)
    lock.engine  # noqa: B018  (opens the store)
    before = peak_rss()
    table = lock.load(DATASET, SYMBOL)
    peak = peak_rss()
    print("RESULT " + json.dumps({"before": before, "peak": peak, "nbytes": table.nbytes,
                                  "pool_peak": pa.system_memory_pool().max_memory(),
                                  "rows": table.num_rows}))


def child_result(argv: list[str], cwd: Path) -> dict[str, Any]:
    proc = run_cmd([PYTHON, str(Path(__file__).resolve()), *argv], cwd=cwd)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    data: dict[str, Any] = json.loads(line[len("RESULT "):])
    return data


def imports_pandas(argv: list[str], cwd: Path, codes: tuple[int, ...] = (0,)) -> bool:
    """Whether a fresh ``python -X importtime ARGV`` imported pandas."""
    proc = subprocess.run([PYTHON, "-X", "importtime", *argv], cwd=cwd, env=ENV,
                          capture_output=True, text=True)
    if proc.returncode not in codes:
        raise SystemExit(f"failed ({proc.returncode}): {argv}\n{proc.stdout}\n"
                         f"{proc.stderr[-3000:]}")
    modules = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines()
               if ln.startswith("import time:")}
    return "pandas" in modules


def pandas_offenders() -> list[str]:
    """The data commands that imported pandas, run on a one-month project."""
    load = ("from qmtl_lock import Lock; "
            f"Lock.open('seamless.lock').load({DATASET!r}, {SYMBOL!r}).num_rows")
    offenders = []
    with temp_project(0, 1, prefix="qmtl-bench-pandas-") as project:
        cli = ["-m", "qmtl_lock"]
        if imports_pandas([*cli, "resolve"], project):
            offenders.append("resolve")
        (project / "old.lock").write_bytes((project / "seamless.lock").read_bytes())
        (project / "seamless.yaml").write_text(
            manifest_text(0, 1).replace(f"end: {end_date(0, 1)}", "end: 2015-02-02"),
            encoding="utf-8")
        for name, argv, codes in [
            ("resolve (one-day extension)", [*cli, "resolve"], (0,)),
            ("verify", [*cli, "verify"], (0,)),
            ("show", [*cli, "show"], (0,)),
            ("show --gaps", [*cli, "show", "--gaps", DATASET], (0,)),
            ("diff", [*cli, "diff", "old.lock", "seamless.lock"], (1,)),
            ("check", [*cli, "check"], (0,)),
            ("Lock.load (arrow)", ["-c", load], (0,)),
        ]:
            if imports_pandas(argv, project, codes):
                offenders.append(name)
    return offenders


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", choices=("load", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--lock", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "load":
        child_load(args.lock, RUNS)
        return
    if args.child == "memory":
        child_memory(args.lock)
        return

    rep = Report(f"load: {args.years} year(s) of 1-minute bars, one symbol, fresh processes")
    import pyarrow.parquet as pq

    from qmtl_lock import Lock
    from qmtl_lock.resolve import resolve

    arctic_python = peer_python("arcticdb", args.peers)
    with temp_project(args.years) as project, \
            tempfile.TemporaryDirectory(prefix="qmtl-bench-arctic-") as tmp:
        step(f"setup: resolve {args.years} year(s) (not timed)")
        t_setup, _ = timed(lambda: resolve(project / "seamless.yaml"))
        lock = str(project / "seamless.lock")
        table = Lock.open(lock).load(DATASET, SYMBOL)
        rows, nbytes = table.num_rows, table.nbytes
        paths = object_paths(project)
        (project / "objects.txt").write_text("\n".join(paths), encoding="utf-8")
        last = paths[-1]

        step(f"Lock.load in a child interpreter (1 discarded, median of {RUNS})")
        loaded = child_result(["--child", "load", "--lock", lock], project)
        assert loaded["rows"] == rows
        t_load = statistics.median(loaded["times"])
        t_decode = statistics.median(loaded["decode"])

        arctic: dict[str, float] = {}
        if arctic_python is not None:
            step("setup: write the table into an ArcticDB LMDB library (peer interpreter)")
            full = Path(tmp) / "full.parquet"
            pq.write_table(table, full)
            uri = f"lmdb://{tmp}/lmdb?map_size=4GB"
            run_cmd([arctic_python, "-c", ARCTIC, "write", uri, str(full)])
            for mode in ("pandas", "pyarrow"):
                step(f"ArcticDB read ({mode}) in its own interpreter (1 discarded, median "
                     f"of {RUNS})")
                out = json.loads(run_cmd([arctic_python, "-c", ARCTIC, mode, uri,
                                          str(RUNS)]).stdout)
                assert out["rows"] == rows, (out["rows"], rows)
                arctic[mode] = statistics.median(out["times"])
        del table

        step("peak memory of one Lock.load (fresh process)")
        mem = child_result(["--child", "memory", "--lock", lock], project)

        step("one month in a fresh process vs pq.read_table of its file (median of 5)")
        month_start, month_end = end_date(args.years, -1), end_date(args.years)
        month = (f"from qmtl_lock import Lock; t = Lock.open({lock!r}).load({DATASET!r}, "
                 f"{SYMBOL!r}, start={month_start!r}, end={month_end!r}); "
                 "assert t.num_rows > 0")
        floor = ("import qmtl_lock.runtime, qmtl_lock.lockfile, qmtl_engine.read, "
                 "pyarrow.parquet")
        t = median_cmds({"month": [PYTHON, "-c", month],
                         "parquet": [PYTHON, "-c", "import pyarrow.parquet as pq; "
                                     f"pq.read_table({last!r})"],
                         "imports": [PYTHON, "-c", floor],
                         "pass": [PYTHON, "-c", "pass"]}, runs=5, cwd=project)

    step("pandas: data commands in fresh processes under -X importtime (one-month project)")
    offenders = pandas_offenders()

    # -- report ---------------------------------------------------------------------------------
    rep.row("rows / table size (nbytes)", f"{rows:,} / {mib(nbytes)}")
    if "pandas" in arctic:
        rep.goal("`Lock.load` of the whole range", t_load, "ArcticDB read (LMDB)",
                 arctic["pandas"], 1.5)
        rep.row("  vs ArcticDB read, output_format=pyarrow", secs(t_load),
                f"ArcticDB arrow {secs(arctic['pyarrow'])}",
                f"{t_load / arctic['pyarrow']:.2f}x")
        rep.row("  bound: pq.read_table(object files), threaded", secs(t_decode),
                f"ArcticDB read {secs(arctic['pandas'])}",
                f"{t_decode / arctic['pandas']:.2f}x")
    else:
        rep.skip("`Lock.load` of the whole range", 1.5,
                 "skipped: arcticdb not installed (--peers DIR)")
        rep.row("  `Lock.load` of the whole range (in-process)", secs(t_load),
                f"pq.read_table(object files) {secs(t_decode)}", f"{t_load / t_decode:.2f}x")
    above = mem["peak"] - mem["before"]
    rep.goal("`Lock.load` peak memory", above, "table size", nbytes, 1.5, unit=mib)
    rep.row("  RSS before the load (imports, Lock.open)", mib(mem["before"]))
    rep.row("  pyarrow system pool peak", mib(mem["pool_peak"]), f"table size {mib(nbytes)}",
            f"{mem['pool_peak'] / nbytes:.2f}x")
    rep.goal("one month in a fresh process", t["month"], "pq.read_table process",
             t["parquet"], 2.0)
    rep.row("  bound: python -c 'import " + floor[len("import "):] + "'", secs(t["imports"]),
            f"one month {secs(t['month'])}", f"{t['imports'] / t['month']:.0%}")
    rep.row("  python -c pass", secs(t["pass"]), f"pq.read_table process {secs(t['parquet'])}",
            f"{t['pass'] / t['parquet']:.0%}")
    rep.check("pandas imported by data commands", offenders,
              "resolve, extension, verify, show, --gaps, diff, check, load")
    rep.note(f"setup resolve took {secs(t_setup)}; ArcticDB runs in "
             f"{arctic_python or '(none found)'}; its default read returns pandas, the "
             "pyarrow row is its Arrow output")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
