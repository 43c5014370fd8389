"""Wall time of the light commands (``check``, ``--help``, ``diff``, a no-op ``resolve``) and the
modules they import.

``check`` runs in pre-commit hooks and CI and reads no data, so it must stay close to bare Python
start-up and must not import pyarrow, fsspec, jsonschema or deepdiff (DESIGN §10). On a resolved
temporary project (setup, not timed: ``--years`` years, then one more month, so that the lock
before the extension gives ``diff`` something to report) this script measures, in the same run:

- the median wall time of each command as a real subprocess (the console script next to the
  interpreter, not a pyenv shim), round-robin, against ``python -c "import click, yaml"`` and
  against ``check`` itself: the goals of issue 11 (``check`` <= 1.5x, ``--help`` <= 1.1x that
  import; ``diff`` of two locks and a no-op ``resolve`` <= 2x ``check``), and what bounds the
  last two (importing the lock's models and the engine's store);
- ``check`` on its full path too (the same files without the project's recorded digests, as in
  a fresh clone), and what the full path needs at least (click, yaml, pydantic's BaseModel);
- which heavy modules are loaded after running ``check``, ``--help`` and the no-op ``resolve`` in
  a fresh subprocess (the light paths build no pydantic model);
- where the import time goes, from ``python -X importtime`` (self time of every module, summed
  by top-level package).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import (
    PYTHON,
    Report,
    cli_exe,
    manifest_text,
    median_cmds,
    parser,
    run_cmd,
    secs,
    step,
    temp_project,
    timed,
)

RUNS = 10
FORBIDDEN = ("pyarrow", "fsspec", "jsonschema", "deepdiff")
WATCH = (*FORBIDDEN, "pandas", "numpy", "exchange_calendars", "pydantic", "yaml", "click")
REFERENCE = "import click, yaml"  # the floor issue 11 names for check and --help
# What the full path of check needs at the least: pydantic is lazy, so import BaseModel too.
DEPS = "import click, yaml; from pydantic import BaseModel"
# What bounds diff and a no-op resolve: reading a lock builds its pydantic models, and naming
# partitions or looking snapshots up opens the engine's store (which imports fsspec).
DIFF_FLOOR = "import click, qmtl_lock.lockfile, qmtl_engine.store"
NOOP_FLOOR = "import click, qmtl_engine.store"

MODULES_PROBE = """
import json, sys
from click.testing import CliRunner
from qmtl_lock.cli import cli
result = CliRunner().invoke(cli, sys.argv[1:])
top = sorted({m.split(".")[0] for m in sys.modules})
ours = sorted(m for m in sys.modules if m.startswith("qmtl_lock.cli."))
print(json.dumps({"exit_code": result.exit_code, "output": result.output, "modules": top,
                  "commands": ours}))
"""

SPLIT_PROBE = """
import json, time
t0 = time.perf_counter()
from qmtl_lock.cli import cli
from qmtl_lock.check import check
t1 = time.perf_counter()
drift = check("seamless.yaml")
t2 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "run": t2 - t1, "drift": bool(drift)}))
"""

IMPORTTIME_PROBE = (
    "import sys; sys.argv = ['qmtl-lock', 'check']\n"
    "from qmtl_lock.cli import main\n"
    "main()\n"
)

_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def import_costs(stderr: str) -> dict[str, float]:
    """Self import seconds of every module, summed by top-level package (stdlib included)."""
    out: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if m:
            out[m.group(4).split(".")[0]] += int(m.group(1)) / 1e6
    return dict(out)


def modules_after(args: list[str], cwd: Path) -> dict[str, Any]:
    """What running ``qmtl-lock ARGS`` in a fresh process left in sys.modules."""
    probe = json.loads(run_cmd([PYTHON, "-c", MODULES_PROBE, *args], cwd=cwd).stdout)
    assert probe["exit_code"] == 0, probe["output"]
    return probe


def without_digest(project: Path, into: Path) -> Path:
    """A copy of the project's seamless.yaml and lock without its local state (as in a fresh
    clone): no digest is recorded there, and check records none where the state folder is
    missing, so ``check`` there takes the full path every time. Check reads no data: no store."""
    into.mkdir()
    for name in ("seamless.yaml", "seamless.lock"):
        shutil.copy(project / name, into / name)
    return into / "seamless.yaml"


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rep = Report("light commands: check, --help, diff, no-op resolve")
    from qmtl_lock.resolve import resolve

    with temp_project(args.years) as project:
        step(f"setup: resolve {args.years} year(s), then one month more (not timed)")
        t_setup, _ = timed(lambda: resolve(project / "seamless.yaml"))
        shutil.copy(project / "seamless.lock", project / "old.lock")
        (project / "seamless.yaml").write_text(manifest_text(args.years, 1), encoding="utf-8")
        resolve(project / "seamless.yaml")
        full = without_digest(project, project / "full")
        exe = cli_exe()
        out = run_cmd([exe, "check"], cwd=project)
        assert "up to date" in out.stdout, out.stdout
        assert "up to date" in run_cmd([exe, "check", "-m", str(full)], cwd=project).stdout
        assert "up to date" in run_cmd([exe, "resolve"], cwd=project).stdout
        assert "+ " in run_cmd([exe, "diff", "old.lock", "seamless.lock"], cwd=project,
                               codes=(1,)).stdout  # names the month added

        step(f"timing subprocesses round-robin, median of {RUNS} each")
        cmds = {"ref": [PYTHON, "-c", REFERENCE], "pass": [PYTHON, "-c", "pass"],
                "check": [exe, "check"], "help": [exe, "--help"],
                "diff": [exe, "diff", "old.lock", "seamless.lock"], "resolve": [exe, "resolve"],
                "full": [exe, "check", "-m", str(full)], "deps": [PYTHON, "-c", DEPS],
                "arrow": [PYTHON, "-c", "import pyarrow.parquet"],
                "diff_floor": [PYTHON, "-c", DIFF_FLOOR], "noop_floor": [PYTHON, "-c", NOOP_FLOOR]}
        t = median_cmds(cmds, RUNS, cwd=project, codes={"diff": (1,)})

        step("modules loaded by check, --help and a no-op resolve (fresh subprocesses)")
        light = {name: modules_after(argv, project) for name, argv in
                 (("check", ["check"]), ("--help", ["--help"]), ("resolve", ["resolve"]))}
        loaded = set(light["check"]["modules"])

        step("in-process split of check: imports vs run (fresh subprocesses, median of 5)")
        splits = [json.loads(run_cmd([PYTHON, "-c", SPLIT_PROBE], cwd=project).stdout)
                  for _ in range(5)]
        assert not any(sp["drift"] for sp in splits)
        t_imports = statistics.median(sp["imports"] for sp in splits)
        t_run = statistics.median(sp["run"] for sp in splits)

        step("python -X importtime of the check command")
        proc = run_cmd([PYTHON, "-X", "importtime", "-c", IMPORTTIME_PROBE], cwd=project,
                       check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        costs = import_costs(proc.stderr)

    ref = f"python -c '{REFERENCE}'"
    rep.goal("`qmtl-lock check`", t["check"], ref, t["ref"], 1.5)
    rep.goal("`qmtl-lock --help`", t["help"], ref, t["ref"], 1.1)
    rep.goal("`qmtl-lock diff` of two locks", t["diff"], "check", t["check"], 2.0)
    rep.goal("no-op `qmtl-lock resolve`", t["resolve"], "check", t["check"], 2.0)
    rep.row("  bound of diff: python -c '" + DIFF_FLOOR + "'", secs(t["diff_floor"]),
            f"check {secs(t['check'])}", f"{t['diff_floor'] / t['check']:.2f}x")
    rep.row("  bound of no-op resolve: python -c '" + NOOP_FLOOR + "'", secs(t["noop_floor"]),
            f"check {secs(t['check'])}", f"{t['noop_floor'] / t['check']:.2f}x")
    rep.row("  check, full path (no digest recorded)", secs(t["full"]), f"{ref} {secs(t['ref'])}",
            f"{t['full'] / t['ref']:.2f}x")
    rep.row("  diff vs the full path of check", secs(t["diff"]), f"full check {secs(t['full'])}",
            f"{t['diff'] / t['full']:.2f}x")
    rep.row("  check vs bare start-up", secs(t["check"]), f"python -c pass {secs(t['pass'])}",
            f"{t['check'] / t['pass']:.2f}x")
    rep.row("  full path above bare start-up", secs(t["full"] - t["pass"]),
            f"import click+yaml+pydantic.BaseModel {secs(t['deps'] - t['pass'])}",
            f"{(t['full'] - t['pass']) / (t['deps'] - t['pass']):.2f}x")
    rep.row("  for scale: python -c 'import pyarrow.parquet'", secs(t["arrow"]),
            f"python -c pass {secs(t['pass'])}", f"{t['arrow'] / t['pass']:.2f}x")
    rep.row("  imports of qmtl_lock.cli + check", secs(t_imports), f"check {secs(t['check'])}",
            f"{t_imports / t['check']:.0%}")
    rep.row("  check() itself, first call", secs(t_run), f"check {secs(t['check'])}",
            f"{t_run / t['check']:.0%}")
    bad = [m for m in FORBIDDEN if m in loaded]
    rep.row("forbidden modules imported", ", ".join(bad) or "none", ", ".join(FORBIDDEN),
            "FAIL" if bad else "ok")
    for name, probe in light.items():
        models = "pydantic" in probe["modules"]
        rep.row(f"  `{name}` builds models (pydantic)", "yes" if models else "no",
                "light path: no", "FAIL" if models else "ok")
    commands = light["--help"]["commands"]
    rep.row("  `--help` imports command modules", ", ".join(commands) or "none", "none",
            "FAIL" if commands else "ok")
    rep.row("watched modules imported", ", ".join(m for m in WATCH if m in loaded) or "none")
    top = sorted(costs.items(), key=lambda kv: -kv[1])[:8]
    total = sum(costs.values())
    rep.row("import time, all modules (-X importtime)", secs(total), f"check {secs(t['check'])}",
            f"{total / t['check']:.0%}")
    for name, s in top:
        rep.row(f"  self time of {name}.*", secs(s), "all imports", f"{s / total:.0%}")
    rep.note(f"setup resolve took {secs(t_setup)}; {len(loaded)} top-level modules loaded by "
             "check; import times come from one -X importtime run (noisier than the medians)")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
