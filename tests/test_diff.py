"""``qmtl-lock diff``: what changed between two locks, down to the partitions in the store.

Entry-level changes are tested on locks edited in Python (fast); coverage and fingerprint
changes come from real resolves, so the partitions named come from real snapshot manifests.
``--git REV`` runs against a real temporary git repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from conftest import NOW, Project, expect
from qmtl_engine.ranges import to_ms
from qmtl_engine.store import Store

from qmtl_lock.cli.diff import diff_command
from qmtl_lock.cli.merge_driver import merge_driver_command
from qmtl_lock.diff import coverage_change, diff, field_changes, render_text
from qmtl_lock.lockfile import Lockfile, read_lock, write_lock

JAN = "2024-01 [2024-01-30T00:00:00Z, 2024-02-01T00:00:00Z)"
FEB_EXTENDED = "2024-02 [2024-02-01T00:00:00Z, 2024-02-05T00:00:00Z)"
FEB = "2024-02 [2024-02-01T00:00:00Z, 2024-02-02T00:00:00Z)"


def _group() -> click.Group:
    """The qmtl-lock group with the two team-workflow commands (until cli.py registers them)."""
    from qmtl_lock.cli import cli

    return click.Group("qmtl-lock", commands={**cli.commands, "diff": diff_command,
                                               "merge-driver": merge_driver_command})


def run(project: Project, *args: str) -> Result:
    return project.runner.invoke(_group(), list(args), catch_exceptions=False)


def run_json(project: Project, *args: str, code: int = 1) -> dict[str, Any]:
    result = expect(run(project, *args, "--json"), code)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _keep_old(project: Project) -> Path:
    old = project.root / "old.lock"
    shutil.copyfile(project.lock, old)
    return old


def _symbol(data: dict[str, Any], dataset: str, symbol: str) -> dict[str, Any]:
    ds = next(d for d in data["datasets"] if d["dataset"] == dataset)
    found: dict[str, Any] = next(s for s in ds["symbols"] if s["symbol"] == symbol)
    return found


# -- identical ---------------------------------------------------------------------------------
def test_identical_locks_exit_0(resolved: Project) -> None:
    old = _keep_old(resolved)
    result = expect(run(resolved, "diff", str(old), str(resolved.lock)), 0)
    assert "no differences" in result.stdout
    data = run_json(resolved, "diff", str(old), code=0)  # NEW defaults to the working tree
    assert data["differ"] is False and data["datasets"] == []


# -- entry-level changes (locks edited in Python) ----------------------------------------------
def test_datasets_and_symbols_added_and_removed(resolved: Project) -> None:
    lock = read_lock(resolved.lock)
    crypto, equities = lock.datasets["crypto"], lock.datasets["equities"]
    new_crypto = crypto.with_symbols({"BTCUSDT": crypto.symbols["BTCUSDT"],
                                      "SOLUSDT": crypto.symbols["ETHUSDT"]})
    new_crypto = replace(new_crypto, request={**crypto.request,
                                              "symbols": ["BTCUSDT", "SOLUSDT"]})
    new = Lockfile({"crypto": new_crypto, "fx": equities})
    new_path = resolved.root / "new.lock"
    write_lock(new_path, new)

    result = expect(run(resolved, "diff", str(resolved.lock), str(new_path)), 1)
    out = result.stdout
    assert "+ dataset fx (added: ohlcv.quandl_wiki.us_equity.1d, 2 symbols)" in out
    assert "- dataset equities (removed: ohlcv.quandl_wiki.us_equity.1d, 2 symbols)" in out
    assert "~ dataset crypto" in out
    assert "    + SOLUSDT: [2024-01-30T00:00:00Z, 2024-02-02T00:00:00Z), 4320 rows" in out
    assert "    - ETHUSDT: [2024-01-30T00:00:00Z, 2024-02-02T00:00:00Z), 4320 rows" in out
    assert "request symbols" not in out  # the entries already say it
    assert "1 dataset(s) added, 1 removed, 1 changed" in out

    data = run_json(resolved, "diff", str(resolved.lock), str(new_path))
    assert data["summary"] == {
        "datasets_added": 1, "datasets_removed": 1, "datasets_changed": 1,
        "symbols_added": 3, "symbols_removed": 3, "symbols_changed": 0}
    assert [(d["dataset"], d["change"]) for d in data["datasets"]] == [
        ("crypto", "changed"), ("equities", "removed"), ("fx", "added")]
    sol = _symbol(data, "crypto", "SOLUSDT")
    assert sol["change"] == "added" and sol["coverage"]["change"] == "added"
    assert sol["fingerprint"]["old"] is None
    assert sol["fingerprint"]["new"] == crypto.symbols["ETHUSDT"].dataset_fingerprint


def test_request_preset_and_field_changes() -> None:
    from qmtl_lock.lockfile import DatasetEntry, SymbolEntry

    entry = SymbolEntry("sha256:" + "a" * 64, (0, 86_400_000), 0, 1440, 1, {"gap_bars": 0},
                        {"deadline_ms": 1000, "elapsed_ms": 5, "violation": None}, "default",
                        None)
    request = {"preset": "ohlcv.synthetic.crypto.1m", "symbols": ["X"], "start": "1970-01-01",
               "end": "1970-01-02", "contract_version": "v1", "retention_class": "default",
               "live": {"url": "wss://a"}}
    old = Lockfile({"d": DatasetEntry(request, "sha256:" + "1" * 64, {"X": entry})})
    new_entry = replace(entry, conformance_flags={"gap_bars": 3},
                        expires_at=to_ms("1970-02-01"), retention_class="research-short")
    new = Lockfile({"d": DatasetEntry({**request, "retention_class": "research-short",
                                       "live": {"url": "wss://b"}, "priority": "low"},
                                      "sha256:" + "2" * 64, {"X": new_entry})})
    result = diff(old, new)
    assert result
    ds = result.datasets[0]
    assert [(f.path, f.change, f.old, f.new) for f in ds.request] == [
        ("live.url", "changed", "wss://a", "wss://b"),
        ("priority", "added", None, "low"),
        ("retention_class", "changed", "default", "research-short")]
    assert ds.preset_digest == ("sha256:" + "1" * 64, "sha256:" + "2" * 64)
    sym = ds.symbols[0]
    assert not sym.fingerprint_changed and sym.coverage is None and sym.partitions is None
    assert [(f.path, f.old, f.new) for f in sym.fields] == [
        ("conformance_flags.gap_bars", 0, 3),
        ("expires_at", None, "1970-02-01T00:00:00Z"),
        ("retention_class", "default", "research-short")]
    text = render_text(result)
    assert "request live.url: wss://a → wss://b" in text
    assert "preset definition of ohlcv.synthetic.crypto.1m changed: sha256:111111111111 → " \
           "sha256:222222222222" in text
    assert "conformance_flags.gap_bars: 0 → 3" in text
    assert not diff(old, old) and not diff(new, new)


def test_coverage_change_kinds() -> None:
    assert coverage_change((10, 20), (10, 20)) is None
    assert coverage_change((10, 20), (10, 30)) == "extended"
    assert coverage_change((10, 20), (5, 20)) == "extended"
    assert coverage_change((10, 20), (12, 20)) == "shrunk"
    assert coverage_change((10, 20), (15, 25)) == "moved"


def test_field_changes_report_lists_whole() -> None:
    old = {"accepted_gaps": [{"start": "a", "end": "b"}], "x": {"y": 1}}
    new = {"accepted_gaps": [{"start": "a", "end": "c"}, {"start": "d", "end": "e"}]}
    found = field_changes(old, new)
    assert [(f.path, f.change) for f in found] == [("accepted_gaps", "changed"),
                                                   ("x", "removed")]
    assert found[0].new == new["accepted_gaps"]


# -- coverage and fingerprint changes, partitions from the store --------------------------------
def test_coverage_extended_names_the_changed_partition(resolved: Project) -> None:
    old = _keep_old(resolved)
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-05")
    expect(run(resolved, "resolve"), 0)

    result = expect(run(resolved, "diff", str(old)), 1)
    out = result.stdout
    assert "request end: 2024-02-02 → 2024-02-05" in out
    assert ("coverage extended: [2024-01-30T00:00:00Z, 2024-02-02T00:00:00Z) → "
            "[2024-01-30T00:00:00Z, 2024-02-05T00:00:00Z)") in out
    assert f"~ {FEB_EXTENDED} (1440 → 5760 rows)" in out
    assert f"unchanged: {JAN}" in out
    assert "equities" not in out

    data = run_json(resolved, "diff", str(old))
    btc = _symbol(data, "crypto", "BTCUSDT")
    assert btc["coverage"] == {"change": "extended",
                               "old": ["2024-01-30T00:00:00Z", "2024-02-02T00:00:00Z"],
                               "new": ["2024-01-30T00:00:00Z", "2024-02-05T00:00:00Z"]}
    assert btc["fingerprint"]["old"] != btc["fingerprint"]["new"]
    assert btc["rows"] == {"old": 4320, "new": 8640}
    assert [(c["name"], c["change"], c["old_rows"], c["new_rows"])
            for c in btc["partitions"]["changes"]] == [(FEB_EXTENDED, "changed", 1440, 5760)]
    assert btc["partitions"]["unchanged"] == [JAN]
    assert btc["notes"] == []


def test_coverage_shrunk_names_removed_partitions(resolved: Project) -> None:
    old = _keep_old(resolved)
    resolved.edit_manifest("start: 2011-01-01", "start: 2012-01-01")  # equities: year partitions
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-01")
    expect(run(resolved, "resolve"), 0)

    out = expect(run(resolved, "diff", str(old)), 1).stdout
    assert "- 2011 (252 rows)" in out
    assert "unchanged: 2012" in out
    assert f"- {FEB} (1440 rows)" in out
    assert "coverage shrunk" in out
    data = run_json(resolved, "diff", str(old))
    aapl = _symbol(data, "equities", "AAPL")
    assert aapl["coverage"]["change"] == "shrunk"
    assert aapl["partitions"]["changes"][0]["change"] == "removed"
    assert aapl["partitions"]["unchanged"] == ["2012"]


def test_missing_snapshot_is_a_note_not_an_error(resolved: Project) -> None:
    old = _keep_old(resolved)
    fp = read_lock(old).datasets["crypto"].symbols["BTCUSDT"].dataset_fingerprint
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-05")
    expect(run(resolved, "resolve"), 0)
    Path(Store(str(resolved.store)).snapshot_path(fp)).unlink()

    out = expect(run(resolved, "diff", str(old)), 1).stdout
    assert "coverage extended" in out  # entry-level changes are still there
    assert f"note: old snapshot {fp[:19]} is not in the store" in out
    btc = _symbol(run_json(resolved, "diff", str(old)), "crypto", "BTCUSDT")
    assert btc["partitions"] is None
    assert "is not in the store" in btc["notes"][0]
    eth = _symbol(run_json(resolved, "diff", str(old)), "crypto", "ETHUSDT")
    assert eth["partitions"]["unchanged"] == [JAN]  # the other symbol still gets its detail


def test_without_a_manifest_partitions_come_from_store_option(
        resolved: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _keep_old(resolved)
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-05")
    expect(run(resolved, "resolve"), 0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["diff", str(old), str(resolved.lock)]
    out = expect(run(resolved, *args), 1).stdout
    assert "note: no store given" in out and "--store" in out
    out = expect(run(resolved, *args, "--store", str(resolved.store)), 1).stdout
    assert f"~ {FEB_EXTENDED} (1440 → 5760 rows)" in out


# -- bad input -----------------------------------------------------------------------------------
def test_unreadable_lock_exit_2(resolved: Project) -> None:
    bad = resolved.root / "bad.lock"
    bad.write_text("lock_version: 1\ndatasets: [\n", encoding="utf-8")
    result = expect(run(resolved, "diff", str(bad), str(resolved.lock)), 2)
    assert "bad.lock" in result.stderr
    data = run_json(resolved, "diff", str(resolved.lock), str(resolved.root / "nope.lock"),
                    code=2)
    assert data["ok"] is False and data["error"] == "LockfileError"
    result = expect(run(resolved, "diff", "--git", "HEAD", "a.lock", "b.lock"), 2)
    assert "got two" in result.stderr


# -- --git REV in a real repository ---------------------------------------------------------------
def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 0, f"git {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _git_init(root: Path) -> None:
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.name", "Test User")
    _git(root, "config", "user.email", "test@example.com")
    _git(root, "config", "commit.gpgsign", "false")
    (root / ".gitignore").write_text(".seamless/\n", encoding="utf-8")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "pin data")


def test_git_revision_against_working_tree(resolved: Project,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    _git_init(resolved.root)
    expect(run(resolved, "diff"), 0)  # HEAD vs the working tree: nothing changed yet
    resolved.edit_manifest("symbols: [AAPL, MSFT]", "symbols: [AAPL, IBM]")
    expect(run(resolved, "resolve"), 0)

    for args in (["diff"], ["diff", "--git", "HEAD"], ["diff", "--git", "main", "seamless.lock"]):
        out = expect(run(resolved, *args), 1).stdout
        assert out.startswith(f"diff {'main' if 'main' in args else 'HEAD'}:seamless.lock → "
                              "seamless.lock\n"), out
        assert "+ IBM: [2011-01-01T00:00:00Z, 2013-01-01T00:00:00Z), 502 rows" in out
        assert "- MSFT:" in out
    data = run_json(resolved, "diff", "--git", "HEAD")
    assert data["old"] == "HEAD:seamless.lock"
    assert data["summary"]["symbols_added"] == 1

    _git(resolved.root, "commit", "-q", "-am", "IBM instead of MSFT")
    expect(run(resolved, "diff"), 0)
    out = expect(run(resolved, "diff", "--git", "HEAD~1"), 1).stdout
    assert "+ IBM" in out

    result = expect(run(resolved, "diff", "--git", "no-such-branch"), 2)
    assert "unknown git revision 'no-such-branch'" in result.stderr


def test_git_lock_absent_at_revision_counts_as_added(resolved: Project,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    resolved.lock.rename(resolved.root / "kept.lock")
    _git_init(resolved.root)
    (resolved.root / "kept.lock").rename(resolved.lock)
    data = run_json(resolved, "diff")
    assert data["summary"]["datasets_added"] == 2
    assert "does not exist" in data["notes"][0]


def test_outside_git_needs_two_files(resolved: Project) -> None:
    if _inside_git(resolved.root):
        pytest.skip("the temp directory is inside a git repository")
    result = expect(run(resolved, "diff"), 2)
    assert "not inside a git repository" in result.stderr
    assert "qmtl-lock diff OLD NEW" in result.stderr


def _inside_git(path: Path) -> bool:
    return subprocess.run(["git", "-C", str(path), "rev-parse"], capture_output=True,
                          check=False).returncode == 0


# -- import cost ---------------------------------------------------------------------------------
def test_commands_module_imports_nothing_heavy(tmp_path: Path) -> None:
    """The diff and merge-driver command modules load with `qmtl-lock --help`: they stay light."""
    code = ("import sys, qmtl_lock.cli.diff, qmtl_lock.cli.merge_driver, qmtl_lock.diff, "
            "qmtl_lock.merge; "
            "print(sorted(m for m in ('pyarrow', 'fsspec', 'deepdiff', 'jsonschema') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "QMTL_LOCK_NOW": NOW}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_runner_smoke() -> None:
    result = CliRunner().invoke(diff_command, ["--help"])
    assert result.exit_code == 0 and "--git REV" in result.output


# -- qmtl_lock.git: the one place that runs git --------------------------------------------------
def test_git_file_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qmtl_lock.errors import GitError
    from qmtl_lock.git import GitFile

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    lock = tmp_path / "plain" / "seamless.lock"
    lock.parent.mkdir()
    assert GitFile.find(lock) is None
    with pytest.raises(GitError) as info:
        GitFile.of(lock, otherwise="do the other thing")
    assert "is not inside a git repository" in info.value.what
    assert info.value.fix == "run it inside your repository, or do the other thing"
    assert info.value.exit_code == 2


def test_git_not_installed_is_one_message(resolved: Project, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from qmtl_lock.git import GitFile

    no_git = tmp_path / "no-git-here"
    no_git.mkdir()
    monkeypatch.setenv("PATH", str(no_git))
    assert GitFile.find(resolved.lock) is None  # gc then keeps the working-tree lock alone
    result = expect(run(resolved, "diff"), 2)
    assert "git is not installed (or not on PATH)" in result.stderr
    assert "install git, or compare two files: qmtl-lock diff OLD NEW" in result.stderr
    assert "Traceback" not in result.stderr


def test_git_file_reads_the_lock_at_revisions(resolved: Project,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from qmtl_lock.errors import GitError
    from qmtl_lock.git import GitFile

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    _git_init(resolved.root)
    _git(resolved.root, "tag", "pinned")
    git = GitFile.of(resolved.lock, otherwise="-")
    assert (git.path, git.label("main")) == ("seamless.lock", "main:seamless.lock")
    assert git.has_head()
    assert git.text_at("HEAD") == resolved.lock.read_text(encoding="utf-8")
    assert git.commit("pinned") == _git(resolved.root, "rev-parse", "HEAD").strip()
    assert ("pinned", "refs/tags/pinned") in git.ref_tips()
    assert git.texts_at([]) == {}
    missing = GitFile.of(resolved.root / "other.lock", otherwise="-")
    assert missing.texts_at(["HEAD", "pinned"]) == {"HEAD": None, "pinned": None}
    with pytest.raises(GitError) as info:
        git.commit("--all")  # an option is not a revision
    assert info.value.revision == "--all"
