"""The import graph (DESIGN §2): no cycles anywhere, the engine never imports the surfaces, errors
and flag names are leaves. Counted over every import, deferred and ``TYPE_CHECKING`` ones included,
so a cycle cannot hide inside a function body."""

from __future__ import annotations

import ast
import importlib
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

PACKAGES = ("qmtl_engine", "qmtl_lock")
LEAVES = ("qmtl_engine.errors", "qmtl_engine.flags", "qmtl_engine.clock")


def import_cycles(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return sorted(cycles)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False)


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    assert import_cycles(graph, graph.modules) == []


def test_engine_never_imports_the_surfaces(graph: grimp.ImportGraph) -> None:
    chains = graph.find_shortest_chains(importer="qmtl_engine", imported="qmtl_lock")
    assert chains == set()


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_nothing_of_ours(graph: grimp.ImportGraph, leaf: str) -> None:
    assert graph.find_modules_directly_imported_by(leaf) == set()


def test_the_graph_sees_the_whole_project(graph: grimp.ImportGraph) -> None:
    assert {"qmtl_engine.materialize", "qmtl_engine.sources.files", "qmtl_lock.resolve"} <= \
        graph.modules


def test_the_cycle_finder_finds_deferred_and_type_checking_cycles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule above cannot pass vacuously: cycles through a function body or a
    ``TYPE_CHECKING`` block are found, and a clean chain is not reported."""
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from cyclepkg import b\n",
        "b.py": "from cyclepkg import c\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyclepkg import a\n",
        "d.py": "from cyclepkg import c\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    g = grimp.build_graph("cyclepkg", include_external_packages=False, cache_dir=None)
    assert import_cycles(g, g.modules) == [["cyclepkg.a", "cyclepkg.b", "cyclepkg.c"]]
    sys.modules.pop("cyclepkg", None)


# -- the engine's public API ----------------------------------------------------------------------
ENGINE_INIT = Path(__file__).resolve().parents[1] / "engine" / "__init__.py"


def _isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: the order ruff's RUF022 keeps ``__all__`` in."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_engine_all_is_complete_sorted_and_resolvable() -> None:
    import qmtl_engine

    exports = qmtl_engine._EXPORTS
    assert set(qmtl_engine.__all__) == set(exports)
    assert qmtl_engine.__all__ == sorted(qmtl_engine.__all__, key=_isort_key)
    for name, module in exports.items():
        defined_in = importlib.import_module(f"qmtl_engine.{module}")
        assert getattr(qmtl_engine, name) is getattr(defined_in, name), name


def test_engine_type_checking_imports_match_the_exports() -> None:
    """What mypy sees (the TYPE_CHECKING block) is what runs (the lazy table)."""
    import qmtl_engine

    tree = ast.parse(ENGINE_INIT.read_text(encoding="utf-8"))
    seen: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom) and imp.module:
                    for alias in imp.names:
                        seen[alias.name] = imp.module.removeprefix("qmtl_engine.")
    assert seen == qmtl_engine._EXPORTS


def test_unknown_engine_names_are_attribute_errors() -> None:
    import qmtl_engine

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        qmtl_engine.nope  # noqa: B018


def _engine_imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of the engine in a module's AST."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "qmtl_engine" or node.module.startswith("qmtl_engine.")):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names
                      if a.name.split(".")[0] == "qmtl_engine"]
    return found


SURFACES = sorted((Path(__file__).resolve().parents[1] / "qmtl_lock").rglob("*.py"))


@pytest.mark.parametrize("path", SURFACES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_surfaces_use_only_the_public_engine_api(path: Path) -> None:
    import qmtl_engine

    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [(line, module, names) for line, module, names in _engine_imports(tree)
           if module != "qmtl_engine" or not set(names) <= set(qmtl_engine.__all__)]
    assert not bad, f"import these through qmtl_engine's __all__: {bad}"


def test_the_public_api_scanner_sees_private_imports() -> None:
    tree = ast.parse("from qmtl_engine.store import Store\n"
                     "def f():\n    import qmtl_engine.read\n"
                     "from qmtl_engine import Store\n")
    assert sorted(_engine_imports(tree)) == [(1, "qmtl_engine.store", ["Store"]),
                                     (3, "qmtl_engine.read", []),
                                     (4, "qmtl_engine", ["Store"])]
