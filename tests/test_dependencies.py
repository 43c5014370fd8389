"""Dependencies match use: pyproject.toml declares what engine/ and qmtl_lock/ import, and every
runtime dependency is imported by some module.

Each import is classified by when it runs: ``import`` (when its module is imported), ``call``
(inside a function), ``guarded`` (inside ``try`` with ``except ImportError``, where the code turns
a missing package into an install hint) or ``typing`` (under TYPE_CHECKING). Rules:

* every third-party import of engine/, qmtl_lock/ and tests/ is declared, as a dependency or in
  an extra;
* an unguarded import (``import`` or ``call``) needs a dependency, not an extra: without the
  extra it would fail with a bare ModuleNotFoundError. A module that only its host loads is
  exempt for the host's package (pytest loads the pytest plugin);
* every dependency, and every package of an extra, is imported at run time by some module,
  except the tools of ``test`` and extras declared ahead of the code that will use them.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SHIPPED = ("engine", "qmtl_lock")
FIRST_PARTY = frozenset({"qmtl_engine", "qmtl_lock"})

# import name -> distribution name, where PEP 503 normalization of the import name is not it
DISTRIBUTION_OF = {"yaml": "pyyaml", "prometheus_client": "prometheus-client"}
# modules that only their host loads (through an entry point), with the host's distribution
HOSTED = {"qmtl_lock/pytest_plugin.py": frozenset({"pytest"})}
# extras whose packages tests and tools use, not engine/ or qmtl_lock/
TOOL_EXTRAS = frozenset({"test"})
# extras declared ahead of the code that will import them (S3 store)
PREPARED_EXTRAS = frozenset({"s3"})

RANK = {"typing": 0, "guarded": 1, "call": 2, "import": 3}


@dataclass(frozen=True)
class Found:
    module: str  # top-level import name
    where: str  # file:line
    when: str  # "import", "call", "guarded" or "typing"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"cannot read a distribution name from {requirement!r}"
    return normalize(match.group(0))


def distribution(module: str) -> str:
    return normalize(DISTRIBUTION_OF.get(module, module))


class _Scanner(ast.NodeVisitor):
    """Collects every import of one module, with when it runs."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.when = "import"
        self.found: list[Found] = []

    def _under(self, when: str, nodes: Iterable[ast.AST]) -> None:
        saved = self.when
        self.when = min(saved, when, key=RANK.__getitem__)
        for node in nodes:
            self.visit(node)
        self.when = saved

    def _add(self, name: str, line: int) -> None:
        self.found.append(Found(name.split(".")[0], f"{self.where}:{line}", self.when))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # (its decorators and defaults run at import, but none of ours import anything)
        self._under("call", ast.iter_child_nodes(node))

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else (
            test.attr if isinstance(test, ast.Attribute) else "")
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self._under("typing", node.body)
        self._under(self.when, node.orelse)

    def visit_Try(self, node: ast.Try) -> None:
        caught: set[str] = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {k.id for k in kinds if isinstance(k, ast.Name)}
        guarded = bool(caught & {"ImportError", "ModuleNotFoundError"})
        self._under("guarded" if guarded else self.when, node.body)
        self._under(self.when, [*node.handlers, *node.orelse, *node.finalbody])

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = (func.attr if isinstance(func, ast.Attribute)
                  else func.id if isinstance(func, ast.Name) else "")
        first = node.args[0] if node.args else None
        if called in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                and isinstance(first.value, str):
            self._add(first.value, node.lineno)
        self.generic_visit(node)


def scan(source: str, where: str) -> list[Found]:
    scanner = _Scanner(where)
    scanner.visit(ast.parse(source, filename=where))
    return scanner.found


def third_party(found: Iterable[Found], local: Iterable[str] = ()) -> list[Found]:
    skip = FIRST_PARTY | set(local)
    return [f for f in found if f.module not in sys.stdlib_module_names and f.module not in skip]


def _scan_folder(folder: str, local: Iterable[str] = ()) -> dict[str, list[Found]]:
    """file (relative to the root) -> its third-party imports."""
    out: dict[str, list[Found]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        out[rel] = third_party(scan(path.read_text(encoding="utf-8"), rel), local)
    return out


def shipped_imports() -> dict[str, list[Found]]:
    return {rel: found for folder in SHIPPED for rel, found in _scan_folder(folder).items()}


def undeclared(found: Iterable[Found], declared: Iterable[str]) -> list[str]:
    names = set(declared)
    return sorted({f"{f.where}: {f.module} (distribution {distribution(f.module)})"
                   for f in found if distribution(f.module) not in names})


def unguarded_extras(files: Mapping[str, list[Found]], runtime: Iterable[str]) -> list[str]:
    """Unguarded imports of a package that is not a dependency."""
    names = set(runtime)
    return sorted(f"{f.where}: {f.module} is imported unguarded ({f.when}) but is no dependency"
                  for rel, found in files.items() for f in found
                  if f.when in ("import", "call") and distribution(f.module) not in names
                  and distribution(f.module) not in HOSTED.get(rel, frozenset()))


def unused(declared: Iterable[str], files: Mapping[str, list[Found]]) -> list[str]:
    used = {distribution(f.module) for found in files.values() for f in found
            if f.when != "typing"}
    return sorted(set(declared) - used)


def runtime_dependencies() -> list[str]:
    return [requirement_name(r) for r in PROJECT["dependencies"]]


def extras() -> dict[str, list[str]]:
    return {extra: [requirement_name(r) for r in reqs]
            for extra, reqs in PROJECT["optional-dependencies"].items()}


def declared_anywhere() -> set[str]:
    return {*runtime_dependencies(), *(d for reqs in extras().values() for d in reqs)}


def test_the_scanner_sees_every_import_and_when_it_runs() -> None:
    source = (
        "from __future__ import annotations\n"
        "import numpy.linalg\n"
        "from typing import TYPE_CHECKING\n"
        "from qmtl_engine.errors import X\n"
        "if TYPE_CHECKING:\n"
        "    import pandas\n"
        "try:\n"
        "    import polars\n"
        "except ImportError:\n"
        "    import json\n"
        "def f():\n"
        "    import yaml\n"
        "    importlib.import_module('ccxt')\n"
        "class C:\n"
        "    import click\n"
        "    g = lambda: __import__('deepdiff')\n")
    assert [(f.module, f.when) for f in third_party(scan(source, "m.py"))] == [
        ("numpy", "import"), ("pandas", "typing"), ("polars", "guarded"), ("yaml", "call"),
        ("ccxt", "call"), ("click", "import"), ("deepdiff", "call")]


def test_the_rules_flag_what_they_are_for() -> None:
    """The checks below fail on a bad import (so their passing on the real tree means something)."""
    source = ("import sklearn\n"
              "def f():\n"
              "    import polars\n"
              "    try:\n"
              "        import ccxt\n"
              "    except ImportError:\n"
              "        raise\n")
    files = {"engine/x.py": third_party(scan(source, "engine/x.py"))}
    assert undeclared(files["engine/x.py"], {"polars", "ccxt"}) == [
        "engine/x.py:1: sklearn (distribution sklearn)"]
    assert unguarded_extras(files, {"numpy"}) == [
        "engine/x.py:1: sklearn is imported unguarded (import) but is no dependency",
        "engine/x.py:3: polars is imported unguarded (call) but is no dependency"]
    assert unused({"polars", "jsonschema"}, files) == ["jsonschema"]


def test_shipped_code_imports_third_party_packages() -> None:
    imported = {f.module for found in shipped_imports().values() for f in found}
    assert {"pyarrow", "pydantic", "yaml", "click", "pandas", "ccxt", "pytest"} <= imported


@pytest.mark.parametrize("folder", [*SHIPPED, "tests"])
def test_every_third_party_import_is_declared(folder: str) -> None:
    local = {p.stem for p in (ROOT / folder).glob("*.py")} if folder == "tests" else ()
    found = [f for fs in _scan_folder(folder, local).values() for f in fs]
    problems = undeclared(found, declared_anywhere())
    assert not problems, ("imported but declared neither in [project] dependencies nor in an "
                          "extra of pyproject.toml (add it, or map the import name in "
                          "DISTRIBUTION_OF):\n" + "\n".join(problems))


def test_unguarded_imports_are_dependencies() -> None:
    problems = unguarded_extras(shipped_imports(), runtime_dependencies())
    assert not problems, ("make the package a dependency, or import it inside the function "
                          "that needs it, in `try` with `except ImportError` raising the error "
                          "with its `pip install 'qmtl-lock[EXTRA]'` line:\n"
                          + "\n".join(problems))


def test_every_dependency_is_imported() -> None:
    problems = unused(runtime_dependencies(), shipped_imports())
    assert not problems, (f"declared in [project] dependencies but imported by no module of "
                          f"{'/, '.join(SHIPPED)}/: {problems}; move them to the extra that "
                          "needs them")


@pytest.mark.parametrize("extra", sorted(set(extras()) - TOOL_EXTRAS))
def test_every_extra_is_imported_or_prepared(extra: str) -> None:
    missing = unused(extras()[extra], shipped_imports())
    if extra in PREPARED_EXTRAS:
        assert set(missing) == set(extras()[extra]), (
            f"the code imports part of [{extra}] now: remove it from PREPARED_EXTRAS")
    else:
        assert not missing, f"[{extra}] declares {missing}, which no module imports"
