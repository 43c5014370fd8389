"""The built wheel, installed for real: no generic top-level name, and a user's own ``engine/``
package next to seamless.yaml does not shadow ours (issue 8).

The wheel is built offline from this checkout (no build isolation) and installed with
``--no-deps --no-index`` into a fresh virtualenv. The third-party dependencies come from the
running interpreter's site-packages through a plain directory line in a ``.pth`` file of the
venv: ``site`` appends such a directory to ``sys.path`` without processing the ``.pth`` files
inside it, so an editable install of qmtl-lock living there (its ``__editable__`` finder) stays
out of the venv. Each test checks that from inside the venv, so a leak fails instead of passing
on the checkout's code.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import NOW

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
DIST_INFO = f"qmtl_lock-{VERSION}.dist-info"
# folder in the repository -> import name in the wheel
PACKAGE_DIRS = {"engine": "qmtl_engine", "qmtl_lock": "qmtl_lock"}
# what a build leaves behind or a run caches: never part of the sources being shipped
NOT_SOURCES = ("__pycache__", "*.pyc", ".git", ".seamless", "build", "dist", "*.egg-info",
               ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis")

pytestmark = pytest.mark.slow

MANIFEST = """\
version: 1
store: .seamless/store
datasets:
  btc_1h:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [BTCUSDT]
    start: 2024-01-01
    end: 2024-01-08
    contract_version: v1
  equities:
    preset: ohlcv.quandl_wiki.us_equity.1d
    symbols: [AAPL]
    start: 2012-01-01
    end: 2013-01-01
    contract_version: v1
"""
BTC_ROWS = 7 * 24
AAPL_ROWS = 250  # NYSE sessions of 2012 (Sandy closed it on 29 and 30 October)

# The user's own trading code: a package named `engine` with an `errors` module, the very names
# that the distribution used to install at the top level.
USER_ENGINE = {
    "engine/__init__.py": '"""The user\'s own trading engine."""\nOWNER = "user"\n',
    "engine/errors.py": "class OrderRejected(Exception):\n    pass\n",
}

LOAD_SNIPPET = """\
import json, sys
from qmtl_lock import Lock
lock = Lock.open("seamless.lock")
rows = {"btc_1h": lock.load("btc_1h", "BTCUSDT").num_rows,
        "equities": lock.load("equities", "AAPL").num_rows}
engine_before = "engine" in sys.modules  # qmtl-lock never imports a module named engine
import engine
from engine.errors import OrderRejected
import qmtl_engine, qmtl_lock
print(json.dumps({"rows": rows, "engine_before": engine_before, "owner": engine.OWNER,
                  "engine": engine.__file__, "engine_errors": sys.modules["engine.errors"].__file__,
                  "rejected": OrderRejected.__module__,
                  "qmtl_engine": qmtl_engine.__file__, "qmtl_lock": qmtl_lock.__file__}))
"""

USER_TEST = f"""\
import sys
from pathlib import Path

import engine.errors
import qmtl_lock.pytest_plugin


def test_locked_data_loads_through_the_lock(locked_data):
    assert locked_data.load("btc_1h", "BTCUSDT").num_rows == {BTC_ROWS}
    assert locked_data.load("equities", "AAPL").num_rows == {AAPL_ROWS}


def test_engine_is_the_users_own():
    assert Path(engine.errors.__file__).parent.parent == Path(__file__).parent
    assert engine.OWNER == "user"


def test_the_plugin_comes_from_the_venvs_distribution(request):
    plugin = qmtl_lock.pytest_plugin
    assert Path(plugin.__file__).is_relative_to(sys.prefix)
    mine = [dist for module, dist in request.config.pluginmanager.list_plugin_distinfo()
            if module is plugin]
    assert len(mine) == 1, mine
    assert Path(mine[0].locate_file("")).is_relative_to(sys.prefix), mine[0].locate_file("")
    assert request.config.pluginmanager.get_plugin("qmtl_lock") is plugin
"""


@dataclass(frozen=True)
class Venv:
    root: Path
    wheel: Path
    site_packages: Path
    base_dirs: tuple[Path, ...]  # the running interpreter's site-packages, exposed to the venv

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def qmtl_lock(self) -> Path:
        return self.root / "bin" / "qmtl-lock"

    def env(self) -> dict[str, str]:
        """os.environ without what would put the checkout or another environment on sys.path."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONSTARTUP",
                             "VIRTUAL_ENV", "CI")
               and not k.startswith("PYTEST_")}
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["QMTL_LOCK_NOW"] = NOW
        return env

    def run(self, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=120)


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (
        f"{proc.args} exited {proc.returncode}\n--- stdout:\n{proc.stdout}\n"
        f"--- stderr:\n{proc.stderr}")
    return proc


def _without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _build_wheel(out: Path, scratch: Path) -> Path:
    """Build from a copy, so the build's own leftovers (build/, *.egg-info) stay out of the
    checkout; offline, with the build backend already installed here."""
    src = scratch / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    _ok(subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                        "--outdir", str(out), str(src)],
                       env=_without_pythonpath(), capture_output=True, text=True, timeout=300))
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtualenv with only the wheel installed, seeing the base's third-party packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp / "dist", tmp)
    root = tmp / "venv"
    python = str(root / "bin" / "python")
    # No pip in the venv (ensurepip costs seconds): this interpreter's pip installs into it.
    _ok(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)],
                       capture_output=True, text=True, timeout=120))
    _ok(subprocess.run([sys.executable, "-m", "pip", "--python", python, "install",
                        "--no-deps", "--no-index", "--no-compile", "--disable-pip-version-check",
                        "--quiet", str(wheel)],
                       env=_without_pythonpath(), capture_output=True, text=True, timeout=300))
    purelib = _ok(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        env=_without_pythonpath(), capture_output=True, text=True))
    site_packages = Path(purelib.stdout.strip())
    base_dirs = tuple(dict.fromkeys(
        Path(sysconfig.get_path(key)) for key in ("purelib", "platlib")))
    (site_packages / "_base_site_packages.pth").write_text(
        "".join(f"{d}\n" for d in base_dirs), encoding="utf-8")
    return Venv(root, wheel, site_packages, base_dirs)


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A strategy project with its own `engine/` package next to seamless.yaml."""
    root = tmp_path / "strategy"
    for name, text in {**USER_ENGINE, "seamless.yaml": MANIFEST,
                       "pytest.ini": "[pytest]\n", "test_strategy.py": USER_TEST}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def _source_files() -> set[str]:
    """Every file of engine/ and qmtl_lock/ as its path in the wheel."""
    names: set[str] = set()
    for folder, package in PACKAGE_DIRS.items():
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT / folder)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                names.add(f"{package}/{rel.as_posix()}")
    return names


def test_the_wheel_ships_our_packages_under_their_own_names(venv: Venv) -> None:
    with zipfile.ZipFile(venv.wheel) as whl:
        names = set(whl.namelist())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(whl.read(f"{DIST_INFO}/entry_points.txt").decode())
    assert {n.split("/", 1)[0] for n in names} == {"qmtl_engine", "qmtl_lock", DIST_INFO}
    assert not any(n.startswith("engine/") for n in names)
    assert {"qmtl_engine/data/presets.yaml", "qmtl_engine/data/quandl_wiki_stocks.csv.gz",
            "qmtl_engine/py.typed", "qmtl_lock/py.typed"} <= names
    assert {n for n in names if not n.startswith(DIST_INFO)} == _source_files()
    assert dict(entry_points["console_scripts"]) == {"qmtl-lock": "qmtl_lock.cli:main"}
    assert dict(entry_points["pytest11"]) == {"qmtl_lock": "qmtl_lock.pytest_plugin"}


def test_the_venv_runs_the_wheel_not_the_checkout(venv: Venv, tmp_path: Path) -> None:
    code = textwrap.dedent("""\
        import importlib.metadata as md, json, sys
        import pyarrow, qmtl_engine, qmtl_lock
        print(json.dumps({
            "path": sys.path, "prefix": sys.prefix,
            "files": [qmtl_engine.__file__, qmtl_lock.__file__],
            "pyarrow": pyarrow.__file__,
            "editable": sorted(m for m in sys.modules if "__editable__" in m)
                        + [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
            "dist": str(md.distribution("qmtl-lock").locate_file("")),
        }))
        """)
    seen = json.loads(_ok(venv.run(venv.python, "-c", code, cwd=tmp_path)).stdout)
    assert Path(seen["prefix"]) == venv.root
    assert all(Path(f).is_relative_to(venv.site_packages) for f in seen["files"]), seen["files"]
    assert Path(seen["dist"]) == venv.site_packages
    assert seen["editable"] == []  # the base's .pth files were not processed
    assert str(ROOT) not in seen["path"] and f"{ROOT}/typings" not in seen["path"]
    # the dependencies do come from the base, after the venv's own site-packages
    assert any(Path(seen["pyarrow"]).is_relative_to(d) for d in venv.base_dirs)
    assert seen["path"].index(str(venv.site_packages)) < seen["path"].index(str(venv.base_dirs[0]))


def test_a_users_own_engine_package_does_not_shadow_ours(venv: Venv, user_project: Path) -> None:
    resolved = _ok(venv.run(venv.qmtl_lock, "resolve", cwd=user_project))
    assert (user_project / "seamless.lock").is_file(), resolved.stdout

    seen = json.loads(_ok(venv.run(venv.python, "-c", LOAD_SNIPPET, cwd=user_project)).stdout)
    assert seen["rows"] == {"btc_1h": BTC_ROWS, "equities": AAPL_ROWS}
    assert seen["engine_before"] is False
    assert seen["owner"] == "user" and seen["rejected"] == "engine.errors"
    assert Path(seen["engine"]) == user_project / "engine" / "__init__.py"
    assert Path(seen["engine_errors"]) == user_project / "engine" / "errors.py"
    for ours in ("qmtl_engine", "qmtl_lock"):
        assert Path(seen[ours]).is_relative_to(venv.site_packages), seen[ours]

    tested = _ok(venv.run(venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          cwd=user_project))
    assert "3 passed" in tested.stdout, tested.stdout
