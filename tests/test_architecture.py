"""Architecture rules (DESIGN §2, §10): the engine knows nothing of the surfaces, and ``check``
stays light enough for a pre-commit hook."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NOW, Project

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
HEAVY = ("pyarrow", "fsspec", "jsonschema", "deepdiff")


def _engine_modules() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module name an AST imports, statically or through importlib/__import__."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = (func.attr if isinstance(func, ast.Attribute)
                      else func.id if isinstance(func, ast.Name) else "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.append((node.lineno, node.args[0].value))
    return names


def test_engine_modules_exist() -> None:
    assert len(_engine_modules()) >= 10


@pytest.mark.parametrize("path", _engine_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_never_imports_qmtl_lock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [(line, name) for line, name in _imported_names(tree)
           if name == "qmtl_lock" or name.startswith("qmtl_lock.")]
    assert not bad, f"{path.relative_to(ROOT)} imports the surface: {bad}"


def test_import_scanner_finds_imports() -> None:
    """The scanner itself sees every form of import (so the rule above cannot pass vacuously)."""
    tree = ast.parse(
        "import qmtl_lock\n"
        "from qmtl_lock.lockfile import x\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('qmtl_lock.cli')\n"
        "    __import__('qmtl_lock')\n")
    assert [n for _, n in _imported_names(tree) if n.startswith("qmtl_lock")] == [
        "qmtl_lock", "qmtl_lock.lockfile", "qmtl_lock.cli", "qmtl_lock"]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_check_does_not_import_heavy_modules(resolved: Project) -> None:
    code = (
        "import sys; from qmtl_lock.cli import cli; from click.testing import CliRunner; "
        f"CliRunner().invoke(cli, ['check', '-m', {str(resolved.manifest)!r}]); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = _python(code, resolved.root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("drift", [False, True], ids=["in_sync", "drift"])
def test_check_really_ran_and_stayed_light(resolved: Project, drift: bool) -> None:
    """Same rule, also proving that check ran to the end (exit code and output)."""
    if drift:
        resolved.edit_manifest("[AAPL, MSFT]", "[AAPL]")
    code = (
        "import json, sys; from qmtl_lock.cli import cli; from click.testing import CliRunner; "
        f"r = CliRunner().invoke(cli, ['check', '--json', '-m', {str(resolved.manifest)!r}]); "
        f"print(json.dumps([r.exit_code, sorted(m for m in {HEAVY!r} if m in sys.modules), "
        "r.output]))"
    )
    proc = _python(code, resolved.root)
    assert proc.returncode == 0, proc.stderr
    exit_code, heavy, output = json.loads(proc.stdout)
    assert exit_code == (1 if drift else 0)
    assert heavy == []
    assert json.loads(output)["ok"] is (not drift)


def test_importing_the_package_is_light() -> None:
    code = (f"import sys, qmtl_lock, qmtl_lock.errors; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = _python(code, ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_no_op_resolve_loads_no_data_libraries(resolved: Project) -> None:
    """Nothing changed: resolve only looks for snapshots, without pyarrow, numpy or pandas."""
    code = (
        "import json, sys; from qmtl_lock.cli import cli; from click.testing import CliRunner; "
        f"r = CliRunner().invoke(cli, ['resolve', '-m', {str(resolved.manifest)!r}]); "
        "print(json.dumps([r.exit_code, r.output, sorted(m for m in "
        "('pyarrow', 'numpy', 'pandas') if m in sys.modules)]))"
    )
    proc = _python(code, resolved.root)
    assert proc.returncode == 0, proc.stderr
    exit_code, output, heavy = json.loads(proc.stdout)
    assert (exit_code, heavy) == (0, [])
    assert output.strip().endswith("seamless.lock is up to date")


# Reading pinned data never loads the materialization stack (DESIGN §2), nor pandas: no data
# command imports pandas unless it returns pandas.
MATERIALIZATION = ("qmtl_engine.materialize", "qmtl_engine.sources", "qmtl_engine.conformance",
                   "qmtl_engine.http", "qmtl_engine.calendars", "qmtl_engine.sla", "tenacity",
                   "exchange_calendars", "pandas")


@pytest.mark.parametrize("call", [
    "lock.load('crypto', 'BTCUSDT')",
    "lock.load('equities', 'AAPL', start='2012-01-01', end='2012-02-01')",
    "lock.load('crypto', 'ETHUSDT', start='2024-01-31T23:00:00Z', end='2024-02-01T01:00:00Z')",
], ids=["whole", "slice", "slice_across_partitions"])
def test_strategy_load_imports_no_materialization_machinery(resolved: Project, call: str) -> None:
    code = (
        "import json, sys; from qmtl_lock import Lock; "
        f"lock = Lock.open({str(resolved.lock)!r}); table = {call}; "
        "print(json.dumps([table.num_rows, sorted(m for m in sys.modules if m.startswith("
        f"{MATERIALIZATION!r}))]))"
    )
    proc = _python(code, resolved.root)
    assert proc.returncode == 0, proc.stderr
    rows, loaded = json.loads(proc.stdout)
    assert rows > 0  # the load really read data
    assert loaded == []


def test_a_failing_load_stays_light_too(resolved: Project) -> None:
    """The error path (objects that are no longer Parquet) loads nothing more."""
    for path in resolved.object_files():
        path.write_bytes(b"PAR1 not Parquet any more PAR1")
    code = (
        "import json, sys; from qmtl_lock import Lock; from qmtl_lock.errors import "
        "IntegrityError\n"
        f"try:\n    Lock.open({str(resolved.lock)!r}).load('crypto', 'BTCUSDT')\n"
        "except IntegrityError as exc:\n    error = type(exc).__name__\n"
        "print(json.dumps([error, sorted(m for m in sys.modules if m.startswith("
        f"{MATERIALIZATION!r}))]))"
    )
    proc = _python(code, resolved.root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["ObjectCorrupted", []]
