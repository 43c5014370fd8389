"""Wall time of ``qmtl-lock check`` and the modules it imports.

``check`` runs in pre-commit hooks and CI and reads no data, so it must stay close to bare Python
start-up and must not import pyarrow, fsspec, jsonschema or deepdiff (DESIGN §10). On a resolved
temporary project (setup, not timed) this script measures, in the same run:

- the median wall time of ``qmtl-lock check`` as a real subprocess (the console script next to
  the interpreter, not a pyenv shim) against ``python -c pass``, and against importing what check
  legitimately needs (click, yaml, pydantic's BaseModel) and what it must avoid (pyarrow.parquet);
- which heavy modules are loaded after invoking ``check`` in-process through click's CliRunner,
  in a fresh subprocess;
- where the import time goes, from ``python -X importtime`` (self time of every module, summed
  by top-level package).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict

from _common import (
    PYTHON,
    Report,
    cli_exe,
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

# What check needs at the least: pydantic is lazy, so import BaseModel to load its machinery.
DEPS = "import click, yaml; from pydantic import BaseModel"

MODULES_PROBE = """
import json, sys
from click.testing import CliRunner
from qmtl_lock.cli import cli
result = CliRunner().invoke(cli, ["check"])
top = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"exit_code": result.exit_code, "output": result.output, "modules": top}))
"""

SPLIT_PROBE = """
import json, time
t0 = time.perf_counter()
from qmtl_lock.cli import cli
from qmtl_lock.check import check
t1 = time.perf_counter()
import qmtl_engine.yamlio, qmtl_lock.manifest, qmtl_lock.lockfile, qmtl_engine.presets
spent = [0.0]
original = qmtl_engine.yamlio.load_yaml
def timed_load(*a, **k):
    s = time.perf_counter()
    try:
        return original(*a, **k)
    finally:
        spent[0] += time.perf_counter() - s
for mod in (qmtl_engine.yamlio, qmtl_lock.manifest, qmtl_lock.lockfile, qmtl_engine.presets):
    if getattr(mod, "load_yaml", None) is original:
        mod.load_yaml = timed_load
t2 = time.perf_counter()
drift = check("seamless.yaml")
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "run": t3 - t2, "yaml": spent[0], "drift": bool(drift)}))
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


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rep = Report("check: `qmtl-lock check` on a project with a lock")
    from qmtl_lock.resolve import resolve

    with temp_project(args.years) as project:
        step(f"setup: resolve {args.years} year(s) (not timed)")
        t_setup, _ = timed(lambda: resolve(project / "seamless.yaml"))
        exe = cli_exe()
        out = run_cmd([exe, "check"], cwd=project)
        assert "up to date" in out.stdout, out.stdout

        step(f"timing subprocesses round-robin, median of {RUNS} each")
        subs = median_cmds({"pass": [PYTHON, "-c", "pass"], "check": [exe, "check"],
                            "deps": [PYTHON, "-c", DEPS],
                            "arrow": [PYTHON, "-c", "import pyarrow.parquet"]}, RUNS, cwd=project)
        t_pass, t_check, t_deps, t_arrow = (subs[k] for k in ("pass", "check", "deps", "arrow"))

        step("modules loaded by check (CliRunner in a fresh subprocess)")
        probe = json.loads(run_cmd([PYTHON, "-c", MODULES_PROBE], cwd=project).stdout)
        assert probe["exit_code"] == 0, probe["output"]
        loaded = set(probe["modules"])

        step("in-process split of check: imports vs run (fresh subprocesses, median of 5)")
        splits = [json.loads(run_cmd([PYTHON, "-c", SPLIT_PROBE], cwd=project).stdout)
                  for _ in range(5)]
        assert not any(sp["drift"] for sp in splits)
        t_imports = statistics.median(sp["imports"] for sp in splits)
        t_run = statistics.median(sp["run"] for sp in splits)
        t_yaml = statistics.median(sp["yaml"] for sp in splits)

        step("python -X importtime of the check command")
        proc = run_cmd([PYTHON, "-X", "importtime", "-c", IMPORTTIME_PROBE], cwd=project,
                       check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        costs = import_costs(proc.stderr)

    rep.row("qmtl-lock check", secs(t_check), f"python -c pass {secs(t_pass)}",
            f"{t_check / t_pass:.2f}x")
    rep.row("  check above bare start-up", secs(t_check - t_pass),
            f"import click+yaml+pydantic.BaseModel {secs(t_deps - t_pass)}",
            f"{(t_check - t_pass) / (t_deps - t_pass):.2f}x")
    rep.row("  for scale: python -c 'import pyarrow.parquet'", secs(t_arrow),
            f"python -c pass {secs(t_pass)}", f"{t_arrow / t_pass:.2f}x")
    rep.row("  imports of qmtl_lock.cli + check", secs(t_imports), f"check {secs(t_check)}",
            f"{t_imports / t_check:.0%}")
    rep.row("  check() itself, first call", secs(t_run), f"check {secs(t_check)}",
            f"{t_run / t_check:.0%}")
    rep.row("    of which YAML parsing (load_yaml)", secs(t_yaml), "check() itself",
            f"{t_yaml / t_run:.0%}")
    bad = [m for m in FORBIDDEN if m in loaded]
    rep.row("forbidden modules imported", ", ".join(bad) or "none", ", ".join(FORBIDDEN),
            "FAIL" if bad else "ok")
    rep.row("watched modules imported", ", ".join(m for m in WATCH if m in loaded) or "none")
    top = sorted(costs.items(), key=lambda kv: -kv[1])[:8]
    total = sum(costs.values())
    rep.row("import time, all modules (-X importtime)", secs(total), f"check {secs(t_check)}",
            f"{total / t_check:.0%}")
    for name, s in top:
        rep.row(f"  self time of {name}.*", secs(s), "all imports", f"{s / total:.0%}")
    rep.note(f"setup resolve took {secs(t_setup)}; {len(loaded)} top-level modules loaded; "
             "import times come from one -X importtime run (noisier than the medians)")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
