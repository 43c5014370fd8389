"""The light paths of issue 11: ``check`` and a no-op ``resolve`` answer from a digest of the
lock and its inputs recorded in sync (``.seamless/in-sync.digests``) without building a model,
and take the full path whenever an input differs or no digest vouches for them; ``--help`` lists
the commands without importing them; ``diff`` compares fields without deepdiff."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.utils import make_default_short_help
from conftest import NOW, Project, expect

from qmtl_lock import inputs
from qmtl_lock.check import check, lock_digest
from qmtl_lock.cli import COMMANDS, SUMMARIES, LazyGroup
from qmtl_lock.diff import field_changes
from qmtl_lock.inputs import (
    Inputs,
    current_lock,
    digests_path,
    plain_store,
    read_inputs,
    recorded_digests,
)
from qmtl_lock.lockfile import read_lock
from qmtl_lock.manifest import load_manifest
from qmtl_lock.resolve import resolve


def _forget(project: Project) -> None:
    """What a fresh clone has: no digest recorded."""
    digests_path(project.manifest).unlink(missing_ok=True)


def _probe(project: Project, *args: str) -> tuple[int, str, list[str]]:
    """``qmtl-lock ARGS`` in a fresh process: exit code, output, and which of fsspec, pydantic,
    yaml and the engine's store it loaded."""
    code = (
        "import json, sys; from qmtl_lock.cli import cli; from click.testing import CliRunner; "
        f"r = CliRunner().invoke(cli, {list(args)!r}); "
        "print(json.dumps([r.exit_code, r.output, sorted(m for m in "
        "('fsspec', 'pydantic', 'yaml', 'qmtl_engine.store') if m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                          text=True, env={**os.environ, "QMTL_LOCK_NOW": NOW}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    exit_code, output, loaded = json.loads(proc.stdout)
    return exit_code, output, loaded


# -- resolve records the digest -------------------------------------------------------------------
def test_resolve_records_the_digest_of_the_inputs_and_the_lock(resolved: Project) -> None:
    found = read_inputs(resolved.manifest)
    assert found is not None
    assert recorded_digests(resolved.manifest) == [found.digest(resolved.lock.read_bytes())]
    assert resolved.lock.read_text(encoding="utf-8").splitlines()[2] == "datasets:"  # as before


def test_the_same_inputs_give_the_same_lock_and_digest_anywhere(resolved: Project,
                                                               tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "seamless.yaml").write_bytes(resolved.manifest.read_bytes())
    resolve(elsewhere / "seamless.yaml")
    assert (elsewhere / "seamless.lock").read_bytes() == resolved.lock.read_bytes()
    assert recorded_digests(elsewhere / "seamless.yaml") == recorded_digests(resolved.manifest)


# -- check --------------------------------------------------------------------------------------
def test_check_in_sync_builds_no_model(resolved: Project) -> None:
    exit_code, output, loaded = _probe(resolved, "check")
    assert (exit_code, output.strip(), loaded) == (0, "seamless.lock is up to date", [])
    exit_code, output, loaded = _probe(resolved, "check", "--strict", "--json")
    assert (exit_code, json.loads(output), loaded) == (0, {"ok": True, "drift": []}, [])


def test_check_with_drift_takes_the_full_path(resolved: Project) -> None:
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    exit_code, output, loaded = _probe(resolved, "check")
    assert exit_code == 1 and "end changed" in output
    assert "pydantic" in loaded


@pytest.mark.parametrize("edit", ["none recorded", "garbage recorded", "crlf"])
def test_check_without_a_recorded_digest_decides_on_the_full_path(resolved: Project,
                                                                  edit: str) -> None:
    """No digest (a fresh clone) sends check down the full path, which finds the lock in sync
    and records the digest for the next check; line ends that git may rewrite keep it."""
    if edit == "none recorded":
        _forget(resolved)
    elif edit == "garbage recorded":
        digests_path(resolved.manifest).write_bytes(b"sha256:zz\n\xff\n")
    else:
        for path in (resolved.manifest, resolved.lock):
            path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    exit_code, output, loaded = _probe(resolved, "check")
    assert exit_code == 0 and output.strip() == "seamless.lock is up to date"
    assert ("pydantic" in loaded) is (edit != "crlf")
    assert "pydantic" not in _probe(resolved, "check")[2]  # recorded by the full path


def test_check_creates_no_state_folder(resolved: Project) -> None:
    shutil.rmtree(resolved.root / ".seamless")
    expect(resolved.run("check"), 0)
    assert not (resolved.root / ".seamless").exists()


def test_an_edited_lock_is_drift_with_its_digest_recorded(resolved: Project) -> None:
    resolved.edit_lock("end: 2024-02-02", "end: 2024-02-03")  # the request
    assert current_lock(resolved.manifest) is None
    text = expect(resolved.run("check"), 1).output
    assert "end changed" in text


def test_every_input_is_in_the_digest(resolved: Project, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    found = read_inputs(resolved.manifest)
    assert found is not None
    body = resolved.lock.read_bytes()
    digest = found.digest(body)
    changed = [found.digest(body + b"\n"),
               dataclasses.replace(found, manifest=found.manifest + b"#\n").digest(body),
               dataclasses.replace(found, builtin=found.builtin + b"#\n").digest(body),
               dataclasses.replace(found, catalogs=(("c.yaml", b"version: 1\n"),)).digest(body),
               dataclasses.replace(found, catalogs=(("d.yaml", b"version: 1\n"),)).digest(body)]
    monkeypatch.setattr(inputs, "__version__", "0.0.0+other")
    changed.append(found.digest(body))
    monkeypatch.undo()
    assert found.digest(body) == digest
    edited = Path(inputs.__file__).with_name("symbols.py")  # any source file of qmtl-lock
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    try:
        changed.append(found.digest(body))
    finally:
        os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len({digest, *changed}) == 1 + len(changed)


def test_strict_check_trusts_the_digest_only_without_recorded_violations() -> None:
    clean = inputs.CurrentLock(Inputs(b"", (), b""), b"        sla:\n          violation: null\n")
    held = dataclasses.replace(clean, text=b"        sla:\n          violation: \"late\"\n")
    assert not clean.may_record_violation()
    assert held.may_record_violation()


def test_a_user_catalog_is_an_input(project: Project) -> None:
    from test_cli import _custom_project

    _custom_project(project)
    expect(project.run("resolve"), 0)
    assert current_lock(project.manifest) is not None
    _custom_project(project, seed=8)  # the catalog changes, seamless.yaml does not
    assert current_lock(project.manifest) is None
    assert [d.kind for d in check(project.manifest).drifts] == ["preset"]


# -- when resolve records no digest ---------------------------------------------------------------
def test_a_partial_resolve_that_leaves_drift_records_no_digest(resolved: Project) -> None:
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    resolved.edit_manifest("end: 2013-01-01", "end: 2012-12-01")
    expect(resolved.run("resolve", "crypto"), 0)
    assert current_lock(resolved.manifest) is None
    assert {d.dataset for d in check(resolved.manifest).drifts} == {"equities"}
    expect(resolved.run("resolve"), 0)
    assert current_lock(resolved.manifest) is not None


def test_a_catalog_list_the_light_reader_cannot_tell_records_no_digest(project: Project) -> None:
    (project.root / "cat.yaml").write_text("version: 1\n", encoding="utf-8")
    project.write_manifest('"pre\\x73ets": [cat.yaml]\n' + project.manifest.read_text())
    assert load_manifest(project.manifest).manifest.presets == ["cat.yaml"]
    assert load_manifest(project.manifest).inputs is None
    expect(project.run("resolve"), 0)
    assert recorded_digests(project.manifest) == []
    expect(project.run("check"), 0)


def test_a_store_the_light_reader_reads_otherwise_records_no_digest(project: Project) -> None:
    project.edit_manifest("store: .seamless/store", "store: .seamless/st#ore")
    assert plain_store(project.manifest.read_bytes()) == ".seamless/st"
    assert load_manifest(project.manifest).manifest.store == ".seamless/st#ore"
    expect(project.run("resolve"), 0)
    assert recorded_digests(project.manifest) == []
    assert "seamless.lock is up to date" in expect(project.run("resolve"), 0).output


def test_a_lock_that_resolve_would_rewrite_records_no_digest(resolved: Project) -> None:
    """check finds no drift in a request key it does not know, but resolve drops it: the
    light no-op resolve must not answer for such a lock."""
    resolved.edit_lock("      priority: normal\n", "      priority: normal\n      note: kept?\n")
    _forget(resolved)
    expect(resolved.run("check"), 0)
    assert current_lock(resolved.manifest) is None
    assert expect(resolved.run("resolve"), 0).output == "wrote seamless.lock\n"
    assert "note" not in resolved.lock.read_text(encoding="utf-8")
    assert current_lock(resolved.manifest) is not None


def test_an_entry_with_another_retention_class_records_no_digest(resolved: Project) -> None:
    loaded, lock = load_manifest(resolved.manifest), read_lock(resolved.lock)
    assert lock_digest(loaded, lock) == recorded_digests(resolved.manifest)[0]
    crypto = lock.datasets["crypto"]
    moved = dataclasses.replace(crypto.symbols["BTCUSDT"], retention_class="research-long")
    edited = dataclasses.replace(lock, datasets={
        **lock.datasets, "crypto": crypto.with_symbols({**crypto.symbols, "BTCUSDT": moved})})
    assert lock_digest(loaded, edited) is None


@pytest.mark.parametrize(("calendar", "recorded"), [("XNYS", True), ("XNYS-next-year", False)])
def test_a_calendar_only_a_library_knows_records_no_digest(resolved: Project, calendar: str,
                                                           recorded: bool) -> None:
    """Whether such a catalog loads depends on the installed calendar library, which no digest
    covers (the catalogs are given as the models' inputs here)."""
    loaded, lock = load_manifest(resolved.manifest), read_lock(resolved.lock)
    assert loaded.inputs is not None
    catalog = ("version: 1\ndata_presets:\n  ohlcv.x.y.1d:\n"
               f"    calendar: {calendar}\n").encode()
    loaded = dataclasses.replace(loaded, inputs=dataclasses.replace(
        loaded.inputs, catalogs=(("cat.yaml", catalog),)))
    assert (lock_digest(loaded, lock) is not None) is recorded


# -- resolve --------------------------------------------------------------------------------------
def test_a_no_op_resolve_builds_no_model(resolved: Project) -> None:
    exit_code, output, loaded = _probe(resolved, "resolve")
    assert (exit_code, output.strip()) == (0, "seamless.lock is up to date")
    assert loaded == []  # it looks the snapshot manifests up on disk, nothing more


def test_a_no_op_resolve_opens_the_store_only_when_options_ask_for_it(resolved: Project) -> None:
    manifest = resolved.manifest.read_text(encoding="utf-8")
    store_line = next(line for line in manifest.splitlines() if line.startswith("store:"))
    folder = (resolved.root / store_line.split(":", 1)[1].split("#")[0].strip()).resolve()
    resolved.manifest.write_text(manifest.replace(store_line, f"store: file://{folder}"),
                                 encoding="utf-8")
    expect(resolved.run("resolve"), 0)  # the store's URL is an input: the lock is rewritten
    exit_code, output, loaded = _probe(resolved, "resolve")
    assert (exit_code, output.strip()) == (0, "seamless.lock is up to date")
    assert loaded == []  # file:// is this machine's disk too
    resolved.manifest.write_text(
        manifest.replace(store_line,
                         f"store: {{url: 'file://{folder}', options: {{auto_mkdir: true}}}}"),
        encoding="utf-8")
    expect(resolved.run("resolve"), 0)
    exit_code, output, loaded = _probe(resolved, "resolve")
    assert exit_code == 0 and "qmtl_engine.store" in loaded  # options go to fsspec: opened


def test_a_missing_snapshot_sends_resolve_down_the_full_path(resolved: Project) -> None:
    before = resolved.lock.read_bytes()
    snapshot = sorted(resolved.snapshots.rglob("*.json"))[0]
    snapshot.unlink()
    out = expect(resolved.run("resolve"), 0).output
    assert "restored" in out
    assert snapshot.exists() and resolved.lock.read_bytes() == before


@pytest.mark.parametrize("args", [["--json"], ["--dry-run"], ["crypto"], ["--update"]])
def test_resolve_with_options_takes_the_full_path(resolved: Project, args: list[str]) -> None:
    exit_code, _, loaded = _probe(resolved, "resolve", *args)
    assert exit_code == 0 and "pydantic" in loaded


def test_resolve_locked_takes_the_light_path_too(resolved: Project) -> None:
    exit_code, output, loaded = _probe(resolved, "resolve", "--locked")
    assert (exit_code, output.strip(), "pydantic" in loaded) == (
        0, "seamless.lock is up to date", False)


def test_the_light_no_op_says_what_the_full_path_says(resolved: Project) -> None:
    light = expect(resolved.run("resolve"), 0).output
    _forget(resolved)
    assert current_lock(resolved.manifest) is None
    full = expect(resolved.run("resolve"), 0).output
    assert light == full == "seamless.lock is up to date\n"
    assert current_lock(resolved.manifest) is not None  # recorded again


# -- --help ---------------------------------------------------------------------------------------
def test_summaries_are_the_commands_short_help() -> None:
    loaded = click.Group(commands={name: LazyGroup(lazy_subcommands=COMMANDS).commands[name]
                                   for name in COMMANDS})
    assert set(SUMMARIES) == set(COMMANDS)
    for name, command in loaded.commands.items():
        for limit in range(20, 140, 7):
            assert make_default_short_help(SUMMARIES[name], limit).strip() == \
                command.get_short_help_str(limit), (name, limit)


@pytest.mark.parametrize("width", [50, 80, 120])
def test_help_lists_the_commands_as_click_would(width: int) -> None:
    light = LazyGroup(name="qmtl-lock", lazy_subcommands=COMMANDS, summaries=SUMMARIES)
    full = LazyGroup(name="qmtl-lock", lazy_subcommands=COMMANDS)
    out = []
    for group, formatter in ((light, LazyGroup.format_commands),
                             (full, click.Group.format_commands)):  # click's, imports each one
        help_formatter = click.HelpFormatter(width=width)
        formatter(group, click.Context(group), help_formatter)
        out.append(help_formatter.getvalue())
    assert out[0] == out[1] and "resolve" in out[0]
    assert not light.commands._loaded  # type: ignore[attr-defined]


def test_help_imports_no_command(tmp_path: Path) -> None:
    code = ("import json, sys; from qmtl_lock.cli import cli; from click.testing import CliRunner; "
            "r = CliRunner().invoke(cli, ['--help']); "
            "print(json.dumps([r.exit_code, sorted(m for m in sys.modules "
            "if m.startswith('qmtl_lock.') or m == 'pydantic')]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [0, ["qmtl_lock._version", "qmtl_lock.cli"]]


# -- diff ---------------------------------------------------------------------------------------
def test_field_changes_walks_mappings_and_compares_types() -> None:
    old = {"a": {"b": 1, "c": {"d": True}}, "e": 1, "f": [1, {"g": 2}], "h": {"i": 1}}
    new = {"a": {"b": 1.0, "c": {"d": 1}, "x": None}, "e": 1, "f": [1, {"g": 3}], "h": 5}
    found = [(f.path, f.change, f.old, f.new) for f in field_changes(old, new)]
    assert found == [("a.b", "changed", 1, 1.0), ("a.c.d", "changed", True, 1),
                     ("a.x", "added", None, None), ("f", "changed", old["f"], new["f"]),
                     ("h", "changed", {"i": 1}, 5)]
    assert field_changes({"a": 1}, {"a": 1.0}) == []  # equal values of other types alone
