"""Shared helpers of the benchmark scripts (not a package: the scripts put this folder on sys.path).

Every figure a script prints is paired with a reference measured in the same run, so the numbers
can be compared across machines as ratios. Absolute seconds are printed too, but only next to
their reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NOW = "2026-01-01T00:00:00Z"
PRESET = "ohlcv.synthetic.crypto.1m"
SYMBOL = "BTCUSDT"
DATASET = "bench"
START_YEAR = 2015

# Determinism: the pinned clock is used in-process and handed to every subprocess.
os.environ["QMTL_LOCK_NOW"] = NOW
# Subprocesses keep compiled bytecode, as an installed package does (pip compiles it): with
# PYTHONDONTWRITEBYTECODE set and an editable checkout, every start-up would compile qmtl_lock
# from source while the references import compiled packages. The cache lives outside the tree.
PYCACHE = Path(tempfile.gettempdir()) / "qmtl-bench-pycache"
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "QMTL_LOCK_NOW": NOW, "CI": "1", "PYTHONPYCACHEPREFIX": str(PYCACHE)}

PYTHON = sys.executable


def cli_exe() -> str:
    """The real ``qmtl-lock`` console script next to this interpreter (not a pyenv shim)."""
    local = Path(sys.executable).with_name("qmtl-lock")
    if local.exists():
        return str(local)
    found = shutil.which("qmtl-lock")
    if found is None:
        raise SystemExit("qmtl-lock is not installed (pip install -e .)")
    return found


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--years", type=int, default=10,
                   help="years of 1-minute bars to resolve, from 2015-01-01 (default 10)")
    p.add_argument("--json", type=Path, default=None,
                   help="also write the summary rows to this JSON file (used by run_all.py)")
    p.add_argument("--peers", type=Path, default=os.environ.get("QMTL_BENCH_PEERS") or None,
                   help="folder of the peer tools' executables (a venv's bin/ holding dvc and a "
                   "python that imports arcticdb); default $QMTL_BENCH_PEERS, then PATH")
    return p


# -- peers: tools compared with, never dependencies ---------------------------------------------
def peer_tool(name: str, peers: Path | None) -> str | None:
    """The executable ``name`` from the peers folder, else from PATH; None when absent."""
    if peers is not None and (Path(peers) / name).exists():
        return str(Path(peers) / name)
    return shutil.which(name)


def peer_python(module: str, peers: Path | None) -> str | None:
    """An interpreter that imports ``module``: the peers folder's python first (so a peer's own
    dependencies never meet ours), else this one; None when neither does."""
    candidates = [str(Path(peers) / "python")] if peers is not None else []
    candidates.append(sys.executable)
    for python in candidates:
        if Path(python).exists() and subprocess.run(
                [python, "-c", f"import {module}"], capture_output=True).returncode == 0:
            return python
    return None


# -- projects -----------------------------------------------------------------------------------
def end_date(years: int, months: int = 0) -> str:
    """ISO date ``years`` years and ``months`` months after START_YEAR-01-01."""
    total = years * 12 + months
    return f"{START_YEAR + total // 12}-{total % 12 + 1:02d}-01"


def manifest_text(years: int, months: int = 0) -> str:
    return (
        "version: 1\n"
        "store: .seamless/store\n"
        "datasets:\n"
        f"  {DATASET}:\n"
        f"    preset: {PRESET}\n"
        f"    symbols: [{SYMBOL}]\n"
        f"    start: {START_YEAR}-01-01\n"
        f"    end: {end_date(years, months)}\n"
        "    contract_version: v1\n"
    )


@contextmanager
def temp_project(years: int, months: int = 0,
                 prefix: str = "qmtl-bench-") -> Iterator[Path]:
    """A temporary directory with a seamless.yaml asking for ``years`` years and ``months``
    months of bars from START_YEAR-01-01; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        (root / "seamless.yaml").write_text(manifest_text(years, months), encoding="utf-8")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def expected_rows(years: int, months: int = 0) -> int:
    from datetime import date

    days = (date.fromisoformat(end_date(years, months)) - date(START_YEAR, 1, 1)).days
    return days * 24 * 60


def object_paths(project: Path) -> list[str]:
    """Store paths of the partition objects pinned by the project's lock, in partition order."""
    from qmtl_engine.store import Store

    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.manifest import load_manifest

    loaded = load_manifest(project / "seamless.yaml")
    lock = read_lock(loaded.lock_path)
    store = Store(loaded.store_url)
    paths = []
    for entry in lock.datasets.values():
        for sym in entry.symbols.values():
            snap = store.get_snapshot(sym.dataset_fingerprint)
            paths += [store.object_path(p.digest) for p in snap.partitions]
    return paths


# -- timing -------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_time(fn: Callable[[], Any], runs: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(runs))


def run_cmd(cmd: Sequence[str], cwd: Path | None = None, check: bool = True,
            codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; with ``check``, stop the benchmark unless it exits with one of ``codes``."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode not in codes:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stdout}\n{proc.stderr}")
    return proc


def median_cmds(cmds: dict[str, Sequence[str]], runs: int, cwd: Path | None = None,
                warmup: int = 1, codes: dict[str, Sequence[int]] | None = None,
                ) -> dict[str, float]:
    """Median wall time of each real subprocess, run round-robin (after ``warmup`` discarded
    rounds, which also fill the bytecode cache), so that load from elsewhere on the machine hits
    every command alike. ``codes`` names the exit codes a command may end with (default 0)."""
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    for i in range(warmup + runs):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            run_cmd(cmd, cwd, codes=(codes or {}).get(name, (0,)))
            if i >= warmup:
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in samples.items()}


# -- reporting ----------------------------------------------------------------------------------
@dataclass
class Row:
    metric: str
    value: str
    reference: str = ""
    ratio: str = ""
    goal: str = ""  # for a goal of issue 11: "<= 1.5x", and whether this run met it
    x: float | None = None  # the ratio as a number (run_all.py takes min-max over runs)
    limit: float | None = None  # the goal's bound on x
    bound: str = ""  # how the goal is written when it is no ratio ("none": x counts offenders)


@dataclass
class Report:
    """Collects the summary rows of one script; prints them and optionally writes them as JSON."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, metric: str, value: str, reference: str = "", ratio: str = "") -> None:
        self.rows.append(Row(metric, value, reference, ratio))

    def goal(self, metric: str, value: float, reference_name: str, reference: float,
             limit: float, unit: Callable[[float], str] | None = None) -> None:
        """A goal of issue 11: ``value / reference`` must stay at or below ``limit``. Both are
        measured in the same run; run_all.py collects every goal row of every script."""
        show = unit or secs
        x = value / reference
        self.rows.append(Row(metric, show(value), f"{reference_name} {show(reference)}",
                             f"{x:.2f}x", goal_text(x, limit), x, limit))

    def skip(self, metric: str, limit: float, why: str) -> None:
        """A goal that could not be measured in this run (a peer tool is not installed): printed
        with the reason, never counted as met."""
        self.rows.append(Row(metric, why, "", "", f"<= {limit:g}x: skipped", None, limit))

    def check(self, metric: str, offenders: Sequence[str], reference: str) -> None:
        """A goal that names what breaks it (``offenders``, which must be none)."""
        text = ", ".join(offenders) or "none"
        self.rows.append(Row(metric, text, reference, str(len(offenders)),
                             "none: " + ("NOT met" if offenders else "met"),
                             float(len(offenders)), 0.0, "none"))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, json_path: Path | None) -> None:
        print()
        print(f"== {self.title} ==")
        print(table([asdict(r) for r in self.rows]))
        for n in self.notes:
            print(f"note: {n}")
        if json_path is not None:
            json_path.write_text(json.dumps({"title": self.title,
                                             "rows": [asdict(r) for r in self.rows],
                                             "notes": self.notes}, indent=1))


def goal_text(x: float, limit: float) -> str:
    return f"<= {limit:g}x: " + ("met" if x <= limit else "NOT met")


def table(rows: list[dict[str, Any]], columns: Sequence[str] = ("metric", "value", "reference",
                                                                "ratio", "goal")) -> str:
    """The rows as an aligned text table; columns empty in every row are left out."""
    columns = [c for i, c in enumerate(columns)
               if i == 0 or any(r.get(c) not in (None, "") for r in rows)]
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip(),
             "  ".join("-" * widths[c] for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def secs(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def step(text: str) -> None:
    print(f"  .. {text}", flush=True)
