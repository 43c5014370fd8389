"""A one-day extension against a full resolve, both as whole ``qmtl-lock resolve`` processes.

Issue 11: moving the manifest's ``end`` by one day must cost at most a tenth of resolving the
whole range cold, start-up and imports included. In the same run:

- a full cold ``qmtl-lock resolve`` of ``--years`` years into an empty store, as a real
  subprocess (the console script next to the interpreter), in three fresh projects (median);
- three one-day extensions, one after another, in one of those projects (``end`` moves from
  2025-01-01 to 01-02, 01-03, 01-04 for ten years): each fetches, checks and stores the open
  month again and reads the month before it (repeated bars across the boundary), median;
- what bounds the extension: a no-op ``qmtl-lock resolve`` (start-up, imports, lock and store
  lookups, no data), importing the libraries any fetching resolve needs (pyarrow, numpy, fsspec,
  pydantic, yaml, click) and ``python -c pass``, round-robin, median of 5.
"""

from __future__ import annotations

import shutil
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

from _common import (
    PYTHON,
    Report,
    cli_exe,
    end_date,
    manifest_text,
    median_cmds,
    parser,
    run_cmd,
    secs,
    step,
    temp_project,
)

RUNS = 3
# What a resolve that fetches anything imports at the least: the libraries of fetch, conformance,
# Parquet and the store, and of the lock's models and the command line.
LIBRARIES = "import pyarrow.parquet, pyarrow.compute, numpy, fsspec, pydantic, yaml, click"


def timed_cmd(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = run_cmd(cmd, cwd=cwd).stdout
    return time.perf_counter() - t0, out


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rep = Report(f"extension: one day after {args.years} year(s), whole processes")
    exe = cli_exe()
    end = date.fromisoformat(end_date(args.years))

    with temp_project(args.years) as project:
        step("warm-up: one `qmtl-lock resolve` of a month (fills the bytecode cache, not timed)")
        with temp_project(0, 1) as small:
            run_cmd([exe, "resolve"], cwd=small)

        step(f"full cold `qmtl-lock resolve` of {args.years} year(s), {RUNS} fresh projects")
        fulls = []
        for i in range(RUNS):
            if i:  # a fresh, empty store each time
                shutil.rmtree(project / ".seamless")
                (project / "seamless.lock").unlink()
            t, out = timed_cmd([exe, "resolve"], project)
            assert "added" in out, out
            fulls.append(t)

        step(f"{RUNS} one-day extensions, one after another")
        extensions = []
        manifest = project / "seamless.yaml"
        base = manifest_text(args.years)
        for day in range(1, RUNS + 1):
            new_end = (end + timedelta(days=day)).isoformat()
            manifest.write_text(base.replace(f"end: {end.isoformat()}", f"end: {new_end}"),
                                encoding="utf-8")
            t, out = timed_cmd([exe, "resolve"], project)
            assert "updated" in out and "fetched 1," in out, out
            extensions.append(t)

        step("bounds: no-op `qmtl-lock resolve`, the libraries' imports, `python -c pass` "
             "(median of 5)")
        t = median_cmds({"noop": [exe, "resolve"], "libs": [PYTHON, "-c", LIBRARIES],
                         "pass": [PYTHON, "-c", "pass"]}, runs=5, cwd=project)

    full, ext = statistics.median(fulls), statistics.median(extensions)
    rep.goal("one-day extension (`qmtl-lock resolve`)", ext, "full cold resolve", full, 0.1)
    rep.row("  full cold resolve, min-max of runs", f"{secs(min(fulls))}-{secs(max(fulls))}")
    rep.row("  extensions, min-max of runs", f"{secs(min(extensions))}-{secs(max(extensions))}")
    rep.row("  bound: no-op `qmtl-lock resolve`", secs(t["noop"]), f"extension {secs(ext)}",
            f"{t['noop'] / ext:.0%}")
    rep.row(f"  bound: python -c '{LIBRARIES}'", secs(t["libs"]), f"extension {secs(ext)}",
            f"{t['libs'] / ext:.0%}")
    rep.row("  library imports against the goal", secs(t["libs"]),
            f"0.1x full resolve {secs(full / 10)}", f"{t['libs'] / (full / 10):.2f}x")
    rep.row("  bound: python -c pass", secs(t["pass"]), f"extension {secs(ext)}",
            f"{t['pass'] / ext:.0%}")
    work = ext - t["noop"]
    rep.row("  extension above a no-op resolve (imports of pyarrow & co, work)", secs(work),
            f"full cold resolve {secs(full)}", f"{work / full:.2f}x")
    rep.note("the extension refetches the open month (monthly partitions) and reads the month "
             "before it; a no-op resolve is what every resolve process pays before any data")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
