"""Merging seamless.lock: the three-way logic per dataset and symbol, the ``merge-driver``
command, and a real ``git merge`` in a temporary repository configured with the driver."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from conftest import Project, expect
from qmtl_engine.ranges import DAY_MS

from qmtl_lock.cli.diff import diff_command
from qmtl_lock.cli.merge_driver import merge_driver_command
from qmtl_lock.lockfile import (
    DatasetEntry,
    Lockfile,
    SymbolEntry,
    parse_lock,
    read_lock,
    render,
)
from qmtl_lock.merge import Conflict, merge

ROOT = Path(__file__).resolve().parents[1]


# -- building locks ------------------------------------------------------------------------------
def _entry(fp: str, days: int = 2) -> SymbolEntry:
    return SymbolEntry(
        dataset_fingerprint="sha256:" + fp * 64, coverage_bounds=(0, days * DAY_MS), as_of=0,
        rows=days * 1440, partitions=1, conformance_flags={"gap_bars": 0},
        sla={"deadline_ms": 60000, "elapsed_ms": 1, "violation": None},
        retention_class="default", expires_at=None)


def _ds(symbols: dict[str, SymbolEntry], digest: str = "d", **request: object) -> DatasetEntry:
    req: dict[str, object] = {
        "preset": "ohlcv.synthetic.crypto.1m", "symbols": sorted(symbols),
        "start": "1970-01-01", "end": "1970-01-03", "contract_version": "v1",
        "retention_class": "default", "priority": "normal", **request}
    return DatasetEntry(req, "sha256:" + digest * 64, symbols)


def _lock(**datasets: DatasetEntry) -> Lockfile:
    return Lockfile(dict(datasets))


BASE = _lock(a=_ds({"X": _entry("0"), "Y": _entry("1")}), b=_ds({"Z": _entry("2")}))


def _both_ways(base: Lockfile, ours: Lockfile, theirs: Lockfile) -> Lockfile:
    """Merge both ways round: a clean merge must not depend on which side is ours."""
    one, two = merge(base, ours, theirs), merge(base, theirs, ours)
    assert one.clean and two.clean, (one.conflicts, two.conflicts)
    assert render(one.lock) == render(two.lock)
    return one.lock


# -- three-way logic -----------------------------------------------------------------------------
def test_each_side_changes_a_different_dataset() -> None:
    ours = _lock(a=_ds({"X": _entry("3"), "Y": _entry("1")}), b=BASE.datasets["b"])
    theirs = _lock(a=BASE.datasets["a"], b=_ds({"Z": _entry("4")}))
    merged = _both_ways(BASE, ours, theirs)
    assert merged.datasets["a"] == ours.datasets["a"]
    assert merged.datasets["b"] == theirs.datasets["b"]


def test_unchanged_and_identical_changes_are_clean() -> None:
    assert _both_ways(BASE, BASE, BASE) == BASE
    same = _lock(a=_ds({"X": _entry("5", 3), "Y": _entry("6", 3)}, end="1970-01-04"),
                 b=BASE.datasets["b"])
    assert _both_ways(BASE, same, same) == same


def test_same_data_resolved_apart_is_the_same_change() -> None:
    """Both branches made the same manifest edit and resolved it at different times."""
    def later(e: SymbolEntry) -> SymbolEntry:
        return replace(e, as_of=DAY_MS, expires_at=30 * DAY_MS,
                       sla={"deadline_ms": 60000, "elapsed_ms": 99, "violation": None})

    ours = _lock(a=_ds({"X": _entry("5", 3), "Y": _entry("6", 3)}, end="1970-01-04"),
                 b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": later(_entry("5", 3)), "Y": later(_entry("6", 3))},
                         end="1970-01-04"), b=BASE.datasets["b"])
    result = merge(BASE, ours, theirs)
    assert result.clean and result.lock == ours
    other_data = _lock(a=_ds({"X": _entry("7", 3), "Y": _entry("6", 3)}, end="1970-01-04"),
                       b=BASE.datasets["b"])
    assert [c.who for c in merge(BASE, ours, other_data).conflicts] == ["a/X"]


def test_dataset_added_and_removed() -> None:
    added = _lock(**BASE.datasets, c=_ds({"W": _entry("7")}))
    removed = _lock(a=BASE.datasets["a"])
    merged = _both_ways(BASE, added, removed)
    assert sorted(merged.datasets) == ["a", "c"]
    # added on both sides: identical is fine, different is a conflict
    assert _both_ways(BASE, added, added) == added
    other = _lock(**BASE.datasets, c=_ds({"W": _entry("8")}))
    result = merge(BASE, added, other)
    assert [(c.dataset, c.symbol) for c in result.conflicts] == [("c", "W")]


def test_both_change_one_symbol_differently_is_a_conflict() -> None:
    ours = _lock(a=_ds({"X": _entry("3"), "Y": _entry("1")}), b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": _entry("4"), "Y": _entry("1")}), b=_ds({"Z": _entry("5")}))
    result = merge(BASE, ours, theirs)
    assert not result.clean
    assert [(c.dataset, c.symbol) for c in result.conflicts] == [("a", "X")]
    assert "both branches changed the entry differently" in result.conflicts[0].what
    assert "fingerprint ours sha256:333333333333" in result.conflicts[0].what
    assert result.lock.datasets["a"] == ours.datasets["a"]  # the conflicting dataset is ours
    assert result.lock.datasets["b"] == theirs.datasets["b"]  # the rest is still merged


def test_both_change_one_request_key_differently_is_a_conflict() -> None:
    ours = _lock(a=_ds({"X": _entry("3", 3), "Y": _entry("4", 3)}, end="1970-01-04"),
                 b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": _entry("5", 4), "Y": _entry("6", 4)}, end="1970-01-05"),
                   b=BASE.datasets["b"])
    result = merge(BASE, ours, theirs)
    lines = [c.line() for c in result.conflicts]
    assert lines[0] == ("a: both branches changed the request's end: ours '1970-01-04', "
                        "theirs '1970-01-05'")
    assert [c.who for c in result.conflicts] == ["a", "a/X", "a/Y"]
    assert "coverage ours [1970-01-01T00:00:00Z, 1970-01-04T00:00:00Z), theirs " \
           "[1970-01-01T00:00:00Z, 1970-01-05T00:00:00Z)" in lines[1]


def test_different_symbols_added_to_one_dataset_merge() -> None:
    ours = _lock(a=_ds({"X": _entry("0"), "Y": _entry("1"), "V": _entry("7")}),
                 b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": _entry("0"), "Y": _entry("1"), "W": _entry("8")}),
                   b=BASE.datasets["b"])
    merged = _both_ways(BASE, ours, theirs).datasets["a"]
    assert sorted(merged.symbols) == ["V", "W", "X", "Y"]
    assert merged.request["symbols"] == ["V", "W", "X", "Y"]
    assert list(merged.request) == list(ours.datasets["a"].request)  # key order kept
    # one side removes a symbol the other left alone
    fewer = _lock(a=_ds({"X": _entry("0")}), b=BASE.datasets["b"])
    merged = _both_ways(BASE, fewer, theirs).datasets["a"]
    assert merged.request["symbols"] == ["W", "X"]


def test_entry_resolved_for_an_older_request_is_a_conflict() -> None:
    """Ours moved the range (every entry changed); theirs added W for the old range."""
    ours = _lock(a=_ds({"X": _entry("3", 3), "Y": _entry("4", 3)}, end="1970-01-04"),
                 b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": _entry("0"), "Y": _entry("1"), "W": _entry("8")}),
                   b=BASE.datasets["b"])
    result = merge(BASE, ours, theirs)
    assert [c.who for c in result.conflicts] == ["a/W"]
    assert result.conflicts[0].what == (
        "the entry from their branch was resolved for another request than the merged one: "
        "our branch changed end")
    # a change that does not touch the data (priority) merges with the new symbol
    calm = _lock(a=_ds({"X": _entry("0"), "Y": _entry("1")}, priority="low"),
                 b=BASE.datasets["b"])
    merged = _both_ways(BASE, calm, theirs).datasets["a"]
    assert merged.request["priority"] == "low" and "W" in merged.symbols
    # a preset definition change makes the other side's new entry stale too
    digest = _lock(a=_ds({"X": _entry("0"), "Y": _entry("1")}, digest="e"),
                   b=BASE.datasets["b"])
    assert [c.who for c in merge(BASE, digest, theirs).conflicts] == ["a/W"]


def test_retention_change_merges_with_a_new_symbol() -> None:
    """Retention does not decide the data: the new symbol takes the merged class and its TTL,
    as resolve would give it (as_of kept, expires_at moved)."""
    day = DAY_MS
    short = {s: replace(_entry(fp), as_of=5 * day, retention_class="research-short",
                        expires_at=35 * day) for s, fp in (("X", "0"), ("Y", "1"))}
    ours = _lock(a=_ds(short, retention_class="research-short"), b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": _entry("0"), "Y": _entry("1"),
                          "W": replace(_entry("8"), as_of=2 * day)}), b=BASE.datasets["b"])
    merged = _both_ways(BASE, ours, theirs).datasets["a"]
    assert merged.request["retention_class"] == "research-short"
    assert sorted(merged.symbols) == ["W", "X", "Y"]
    w = merged.symbols["W"]
    assert (w.retention_class, w.as_of, w.expires_at) == ("research-short", 2 * day, 32 * day)
    assert w.dataset_fingerprint == theirs.datasets["a"].symbols["W"].dataset_fingerprint


def test_removed_on_one_side_changed_on_the_other() -> None:
    gone = _lock(b=BASE.datasets["b"])
    changed = _lock(a=_ds({"X": _entry("3"), "Y": _entry("1")}), b=BASE.datasets["b"])
    result = merge(BASE, gone, changed)
    assert result.conflicts == [Conflict(
        "a", None, "the dataset was removed on our branch but changed on their branch")]
    assert "a" not in result.lock.datasets  # ours removed it and stays so
    flipped = merge(BASE, changed, gone)
    assert "removed on their branch but changed on our branch" in flipped.conflicts[0].what


# -- the merge-driver command on files -----------------------------------------------------------
def _files(tmp_path: Path, base: Lockfile | None, ours: Lockfile, theirs: Lockfile,
           ) -> tuple[Path, Path, Path]:
    paths = tmp_path / "O", tmp_path / "A", tmp_path / "B"
    paths[0].write_text("" if base is None else render(base), encoding="utf-8")
    paths[1].write_text(render(ours), encoding="utf-8")
    paths[2].write_text(render(theirs), encoding="utf-8")
    return paths


def _driver(*paths: Path) -> Result:
    return CliRunner().invoke(merge_driver_command, [str(p) for p in paths],
                              catch_exceptions=False)


def test_driver_writes_the_merge_to_ours(tmp_path: Path) -> None:
    ours = _lock(a=_ds({"X": _entry("3"), "Y": _entry("1")}), b=BASE.datasets["b"])
    theirs = _lock(a=BASE.datasets["a"], b=_ds({"Z": _entry("4")}))
    o, a, b = _files(tmp_path, BASE, ours, theirs)
    result = expect(_driver(o, a, b), 0)
    assert result.output == ""
    assert a.read_text(encoding="utf-8") == render(merge(BASE, ours, theirs).lock)
    assert parse_lock(a.read_text(encoding="utf-8"), "A").datasets["b"] == theirs.datasets["b"]


def test_driver_conflict_keeps_ours_and_names_each_entry(tmp_path: Path) -> None:
    ours = _lock(a=_ds({"X": _entry("3"), "Y": _entry("1")}), b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": _entry("4"), "Y": _entry("1")}), b=BASE.datasets["b"])
    o, a, b = _files(tmp_path, BASE, ours, theirs)
    before = a.read_bytes()
    result = expect(_driver(o, a, b), 1)
    assert a.read_bytes() == before  # still our lock: parseable, no markers
    assert "<<<<<<<" not in a.read_text(encoding="utf-8")
    err = result.stderr
    assert "seamless.lock: 1 conflicting change; the merge kept our version" in err
    assert "    a/X: both branches changed the entry differently" in err
    assert "`qmtl-lock resolve`" in err and "git add seamless.yaml seamless.lock" in err


def test_driver_with_empty_ancestor_and_bad_input(tmp_path: Path) -> None:
    ours = _lock(a=BASE.datasets["a"])
    theirs = _lock(b=BASE.datasets["b"])
    o, a, b = _files(tmp_path, None, ours, theirs)  # both branches added the lock
    expect(_driver(o, a, b), 0)
    assert sorted(parse_lock(a.read_text(encoding="utf-8"), "A").datasets) == ["a", "b"]

    before = a.read_bytes()
    b.write_text("lock_version: 1\ndatasets: {a: 1}\n", encoding="utf-8")
    result = expect(_driver(o, a, b), 2)
    assert "their version of seamless.lock" in result.stderr
    assert a.read_bytes() == before


# -- a real git merge ----------------------------------------------------------------------------
def _group() -> click.Group:
    from qmtl_lock.cli import cli

    return click.Group("qmtl-lock", commands={**cli.commands, "diff": diff_command,
                                               "merge-driver": merge_driver_command})


def _run(project: Project, *args: str) -> Result:
    return project.runner.invoke(_group(), list(args), catch_exceptions=False)


def _git(root: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env,
                          check=False)
    if ok:
        assert proc.returncode == 0, f"git {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture
def repo(resolved: Project) -> Project:
    """The resolved project as a git repository using the qmtl-lock merge driver."""
    root = resolved.root
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.name", "Test User")
    _git(root, "config", "user.email", "test@example.com")
    _git(root, "config", "commit.gpgsign", "false")
    _git(root, "config", "merge.qmtl-lock.name", "qmtl-lock lockfile merge")
    _git(root, "config", "merge.qmtl-lock.driver",
         f"{shlex.quote(sys.executable)} -m qmtl_lock.cli.merge_driver %O %A %B")
    (root / ".gitattributes").write_text("seamless.lock merge=qmtl-lock\n", encoding="utf-8")
    (root / ".gitignore").write_text(".seamless/\n", encoding="utf-8")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "pin data")
    return resolved


def _branch(project: Project, name: str, old: str, new: str, *, append: str = "") -> None:
    """On a new branch from main: edit seamless.yaml (replace, then append), resolve, commit."""
    _git(project.root, "checkout", "-q", "-b", name, "main")
    text = project.manifest.read_text(encoding="utf-8")
    assert old in text
    project.write_manifest(text.replace(old, new, 1) + append)
    expect(_run(project, "resolve"), 0)
    _git(project.root, "commit", "-q", "-am", name)


EQUITIES_IBM = """\
  equities_ibm:
    preset: ohlcv.quandl_wiki.us_equity.1d
    symbols: [IBM]
    start: 2012-01-01
    end: 2013-01-01
    contract_version: v1
"""
HOURLY = """\
  hourly:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [BTCUSDT]
    start: 2024-01-01
    end: 2024-01-08
    contract_version: v1
"""


def _text_merge_conflicts(root: Path, ours: str, theirs: str) -> bool:
    """Would git's built-in text merge conflict on seamless.lock?"""
    folder = root / ".seamless" / "textmerge"
    folder.mkdir(parents=True)
    for name, rev in (("base", "main"), ("ours", ours), ("theirs", theirs)):
        (folder / name).write_text(_git(root, "show", f"{rev}:seamless.lock").stdout,
                                   encoding="utf-8")
    proc = _git(folder, "merge-file", "-p", "ours", "base", "theirs", ok=False)
    return proc.returncode != 0


def test_git_merge_of_different_datasets_is_clean(repo: Project) -> None:
    """Both branches add a dataset that sorts last in the lock: a text merge would conflict."""
    _branch(repo, "add-ibm", "datasets:\n", "datasets:\n" + EQUITIES_IBM)
    _branch(repo, "add-hourly", "", "", append=HOURLY)
    assert _text_merge_conflicts(repo.root, "add-ibm", "add-hourly")

    _git(repo.root, "checkout", "-q", "add-ibm")
    merged = _git(repo.root, "merge", "--no-edit", "add-hourly")
    assert "CONFLICT" not in merged.stdout + merged.stderr
    lock = read_lock(repo.lock)
    assert sorted(lock.datasets) == ["crypto", "equities", "equities_ibm", "hourly"]

    # the merged lock is exactly what resolve makes of the merged seamless.yaml
    text = repo.lock.read_bytes()
    expect(_run(repo, "check"), 0)
    expect(_run(repo, "resolve", "--locked"), 0)
    expect(_run(repo, "resolve"), 0)
    assert repo.lock.read_bytes() == text
    expect(_run(repo, "diff"), 0)  # HEAD (the merge commit) vs the working tree
    out = expect(_run(repo, "diff", "--git", "main"), 1).stdout
    assert "+ dataset equities_ibm" in out and "+ dataset hourly" in out


def test_git_merge_of_symbols_added_to_one_dataset(repo: Project) -> None:
    """The request's symbol list and the entries of one dataset change on both branches."""
    _branch(repo, "sol", "symbols: [BTCUSDT, ETHUSDT]", "symbols: [BTCUSDT, ETHUSDT, SOLUSDT]")
    _branch(repo, "ada", "symbols: [BTCUSDT, ETHUSDT]", "symbols: [ADAUSDT, BTCUSDT, ETHUSDT]")
    _git(repo.root, "checkout", "-q", "sol")
    merged = _git(repo.root, "merge", "--no-edit", "ada", ok=False)
    # seamless.yaml conflicts as text (one line), the lock merges
    assert "CONFLICT (content): Merge conflict in seamless.yaml" in merged.stdout
    assert "Merge conflict in seamless.lock" not in merged.stdout
    repo.write_manifest(_git(repo.root, "show", "main:seamless.yaml").stdout.replace(
        "symbols: [BTCUSDT, ETHUSDT]", "symbols: [ADAUSDT, BTCUSDT, ETHUSDT, SOLUSDT]"))
    text = repo.lock.read_bytes()
    expect(_run(repo, "resolve", "--locked"), 0)
    assert repo.lock.read_bytes() == text


def test_git_merge_of_a_new_symbol_and_a_retention_change(repo: Project) -> None:
    """One branch adds a symbol, the other changes the retention class: the lock merges, and
    the result is what resolve makes of the merged seamless.yaml."""
    _branch(repo, "sol", "symbols: [BTCUSDT, ETHUSDT]", "symbols: [BTCUSDT, ETHUSDT, SOLUSDT]")
    _branch(repo, "long", "retention_class: research-short", "retention_class: research-long")
    _git(repo.root, "checkout", "-q", "sol")
    merged = _git(repo.root, "merge", "--no-edit", "long", ok=False)
    out = merged.stdout + merged.stderr
    assert "Merge conflict in seamless.lock" not in out, out
    assert "CONFLICT" not in out, out
    lock = read_lock(repo.lock)
    assert {e.retention_class for e in lock.datasets["crypto"].symbols.values()} == {
        "research-long"}
    text = repo.lock.read_bytes()
    expect(_run(repo, "check"), 0)
    expect(_run(repo, "resolve", "--locked"), 0)
    assert repo.lock.read_bytes() == text


def test_git_merge_of_the_same_dataset_changed_twice_conflicts(repo: Project) -> None:
    _branch(repo, "three-days", "end: 2024-02-02", "end: 2024-02-03")
    ours = repo.lock.read_bytes()
    _branch(repo, "four-days", "end: 2024-02-02", "end: 2024-02-04")
    _git(repo.root, "checkout", "-q", "three-days")

    merged = _git(repo.root, "merge", "--no-edit", "four-days", ok=False)
    assert merged.returncode != 0
    out = merged.stdout + merged.stderr
    assert "CONFLICT (content): Merge conflict in seamless.lock" in out
    assert ("crypto: both branches changed the request's end: ours '2024-02-03', "
            "theirs '2024-02-04'") in out
    assert "crypto/BTCUSDT: both branches changed the entry differently" in out
    assert "crypto/ETHUSDT" in out and "qmtl-lock resolve" in out
    assert repo.lock.read_bytes() == ours  # our lock, still valid
    read_lock(repo.lock)
    status = _git(repo.root, "status", "--porcelain").stdout
    assert "UU seamless.lock" in status

    # the fix the message gives: settle seamless.yaml, resolve, add
    repo.write_manifest(_git(repo.root, "show", "four-days:seamless.yaml").stdout)
    expect(_run(repo, "resolve"), 0)
    _git(repo.root, "add", "seamless.yaml", "seamless.lock")
    _git(repo.root, "commit", "-q", "--no-edit")
    assert read_lock(repo.lock).datasets["crypto"].request["end"] == "2024-02-04"


def test_python_dash_m_runs_the_driver(tmp_path: Path) -> None:
    ours = _lock(a=_ds({"X": _entry("3"), "Y": _entry("1")}), b=BASE.datasets["b"])
    theirs = _lock(a=_ds({"X": _entry("4"), "Y": _entry("1")}), b=BASE.datasets["b"])
    o, a, b = _files(tmp_path, BASE, ours, theirs)
    shutil.copyfile(a, tmp_path / "A.before")
    proc = subprocess.run([sys.executable, "-m", "qmtl_lock.cli.merge_driver",
                           str(o), str(a), str(b)],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "a/X: both branches changed the entry differently" in proc.stderr
    assert a.read_bytes() == (tmp_path / "A.before").read_bytes()
