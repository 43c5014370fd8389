"""First pin and full re-hash against DVC, on the same 120 monthly Parquet files.

What maps onto what: ``dvc add data/`` hashes every file, copies it into DVC's content-addressed
cache and writes ``data.dvc`` (the pin); ``qmtl-lock resolve`` into an empty store is qmtl-lock's
first pin: it produces the partitions, hashes their canonical columns, writes them into its
content-addressed store and writes ``seamless.lock``. ``dvc status`` with DVC's state wiped
(its hash cache in the site cache dir and ``.dvc/tmp``) re-hashes every file and compares
with ``data.dvc``; ``qmtl-lock verify`` re-reads every stored object, re-hashes it and compares
with the lock. Both sides are whole processes (the console scripts), so start-up and imports
count on both.

The files given to DVC are exactly the objects the resolve wrote (one per month, named by
month), so both tools pin the same bytes. qmtl-lock does more for its pin (it generates the
rows with the synthetic source and runs conformance), which is part of what it is measured on.

DVC is no dependency of qmtl-lock: it is looked for in ``--peers DIR`` (or
``$QMTL_BENCH_PEERS``), then on PATH; without it both goals are printed as skipped. DVC runs with
``DVC_NO_ANALYTICS=1`` and its site cache (``DVC_SITE_CACHE_DIR``) inside the temporary folder.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import (
    ENV,
    START_YEAR,
    Report,
    cli_exe,
    object_paths,
    parser,
    peer_tool,
    run_cmd,
    secs,
    step,
    temp_project,
)

RUNS = 3
DVC_ENV = {**ENV, "DVC_NO_ANALYTICS": "1"}


def dvc(exe: str, *args: str, cwd: Path, site: Path) -> float:
    """Wall time of one ``dvc ARGS`` process, its site cache (where it keeps the hashes it
    computed) in ``site``; stops the benchmark if it fails."""
    env = {**DVC_ENV, "DVC_SITE_CACHE_DIR": str(site)}
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                         f"{proc.stderr}")
    return elapsed


def dvc_repo(exe: str, root: Path, files: list[tuple[str, Path]]) -> Path:
    """A fresh DVC repository (no git) at ``root`` with the files under ``data/`` (not timed)."""
    root.mkdir()
    dvc(exe, "init", "--no-scm", "-q", cwd=root, site=root / "site")
    (root / "data").mkdir()
    for name, path in files:
        shutil.copyfile(path, root / "data" / name)
    return root


def wipe_state(repo: Path) -> None:
    """DVC's memory of file hashes: its site cache (``DVC_SITE_CACHE_DIR``: state and index)
    and ``.dvc/tmp``."""
    shutil.rmtree(repo / "site", ignore_errors=True)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)


def timed_cli(args: list[str], cwd: Path, expect: str) -> float:
    t0 = time.perf_counter()
    out = run_cmd([cli_exe(), *args], cwd=cwd).stdout
    elapsed = time.perf_counter() - t0
    assert expect in out, out
    return elapsed


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rep = Report(f"DVC: first pin and re-hash of {args.years} year(s) of monthly files")
    exe = peer_tool("dvc", args.peers)

    with temp_project(args.years) as project:
        step("warm-up: one `qmtl-lock resolve` of a month (fills the bytecode cache)")
        with temp_project(0, 1) as small:
            run_cmd([cli_exe(), "resolve"], cwd=small)
        step(f"first pin: cold `qmtl-lock resolve` of {args.years} year(s), {RUNS} fresh stores")
        pins = []
        for i in range(RUNS):
            if i:
                shutil.rmtree(project / ".seamless")
                (project / "seamless.lock").unlink()
            pins.append(timed_cli(["resolve"], project, "added"))
        step(f"re-hash: `qmtl-lock verify`, {RUNS} runs")
        verifies = [timed_cli(["verify"], project, "all match the lock") for _ in range(RUNS)]
        paths = [Path(p) for p in object_paths(project)]
        months = [(f"{START_YEAR + i // 12}-{i % 12 + 1:02d}.parquet", p)
                  for i, p in enumerate(paths)]
        size = sum(p.stat().st_size for p in paths)

        adds: list[float] = []
        statuses: list[float] = []
        warm: list[float] = []
        if exe is not None:
            with tempfile.TemporaryDirectory(prefix="qmtl-bench-dvc-") as tmp:
                step(f"`dvc add data` of the {len(paths)} files, {RUNS} fresh repositories")
                for i in range(RUNS):
                    repo = dvc_repo(exe, Path(tmp) / f"repo{i}", months)
                    adds.append(dvc(exe, "add", "-q", "data", cwd=repo, site=repo / "site"))
                step(f"`dvc status` after wiping DVC's state, {RUNS} runs (and one warm)")
                warm.append(dvc(exe, "status", "-q", cwd=repo, site=repo / "site"))
                for _ in range(RUNS):
                    wipe_state(repo)
                    statuses.append(dvc(exe, "status", "-q", cwd=repo, site=repo / "site"))

    pin, verify = statistics.median(pins), statistics.median(verifies)
    rep.row("files / bytes", f"{len(paths)} / {size / 1e6:.1f} MB")
    if exe is None:
        why = "skipped: dvc not installed (--peers DIR)"
        rep.skip("first pin (`qmtl-lock resolve`)", 1.0, why)
        rep.skip("full re-hash (`qmtl-lock verify`)", 1.0, why)
        rep.row("  first pin (`qmtl-lock resolve`)", secs(pin))
        rep.row("  full re-hash (`qmtl-lock verify`)", secs(verify))
    else:
        add, status = statistics.median(adds), statistics.median(statuses)
        rep.goal("first pin (`qmtl-lock resolve`)", pin, "dvc add", add, 1.0)
        rep.goal("full re-hash (`qmtl-lock verify`)", verify, "dvc status, state wiped", status,
                 1.0)
        rep.row("  dvc status, state kept (no re-hash)", secs(warm[0]),
                f"state wiped {secs(status)}", f"{warm[0] / status:.2f}x")
        rep.row("  runs: resolve / dvc add", " ".join(secs(t) for t in pins),
                " ".join(secs(t) for t in adds))
        rep.row("  runs: verify / dvc status", " ".join(secs(t) for t in verifies),
                " ".join(secs(t) for t in statuses))
        rep.note(f"dvc: {exe}; DVC_NO_ANALYTICS=1, cache type default (copy here)")
    rep.note(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
