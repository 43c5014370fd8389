"""One writer of a project's seamless.lock at a time: two resolves of one project never lose an
update; the second one waits, says so, and gives up with exit 2 after its timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmtl_lock.check import check
from qmtl_lock.cli import cli
from qmtl_lock.lockfile import read_lock
from qmtl_lock.project_lock import ProjectBusy, writing_lock
from qmtl_lock.resolve import resolve

NOW = "2024-06-01T00:00:00Z"
MANIFEST = """\
version: 1
datasets:
  syn1:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [AAA]
    start: 2024-01-01
    end: 2024-01-20
    contract_version: v1
  syn2:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BBB]
    start: 2024-01-01
    end: 2024-01-20
    contract_version: v1
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    return tmp_path


def _resolve_process(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    return subprocess.Popen([sys.executable, "-m", "qmtl_lock.cli", "resolve", *args],
                            cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_resolves_of_one_project_keep_both_updates(project: Path) -> None:
    """Each run updates its own dataset and keeps the other as locked: without one writer at a
    time, the later write drops the earlier one's update."""
    resolve(project / "seamless.yaml")
    (project / "seamless.yaml").write_text(MANIFEST.replace("2024-01-20", "2024-03-20"),
                                           encoding="utf-8")
    one, two = _resolve_process(project, "syn1"), _resolve_process(project, "syn2")
    for proc in (one, two):
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    lock = read_lock(project / "seamless.lock")
    assert sorted(lock.datasets) == ["syn1", "syn2"]
    assert all(lock.datasets[n].symbols for n in ("syn1", "syn2"))
    assert not check(project / "seamless.yaml")


def test_the_second_writer_waits_and_says_so(project: Path) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with writing_lock(project):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    proc = _resolve_process(project)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert "waiting for another qmtl-lock resolve of this project to finish" in line
        assert f"pid {os.getpid()}" in line
        assert not (project / "seamless.lock").exists()  # it waits before reading the lock
    finally:
        release.set()
        holder.join()
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert sorted(read_lock(project / "seamless.lock").datasets) == ["syn1", "syn2"]


def test_a_writer_that_waits_too_long_exits_2_and_changes_nothing(project: Path) -> None:
    resolve(project / "seamless.yaml", datasets=["syn1"])
    before = (project / "seamless.lock").read_bytes()
    with writing_lock(project):
        result = CliRunner().invoke(cli, ["resolve", "--lock-timeout", "0.2", "-m",
                                          str(project / "seamless.yaml")])
        with pytest.raises(ProjectBusy):
            resolve(project / "seamless.yaml", lock_timeout_s=0.1)
    assert result.exit_code == 2, result.output
    assert "another qmtl-lock resolve is writing this project's seamless.lock" in result.output
    assert "--lock-timeout" in result.output
    assert (project / "seamless.lock").read_bytes() == before


def test_read_only_runs_do_not_wait(project: Path) -> None:
    resolve(project / "seamless.yaml")
    with writing_lock(project):
        assert resolve(project / "seamless.yaml", dry_run=True, lock_timeout_s=0.1).dry_run
        result = CliRunner().invoke(cli, ["check", "-m", str(project / "seamless.yaml")])
        assert result.exit_code == 0, result.output


def test_a_killed_writer_leaves_no_stale_lock(project: Path) -> None:
    """The kernel drops an OS file lock with its process: kill -9 blocks nobody."""
    code = ("import sys, time; from pathlib import Path; "
            "from qmtl_lock.project_lock import writing_lock\n"
            "with writing_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(project)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait(10)
    resolve(project / "seamless.yaml", lock_timeout_s=5)
    assert (project / "seamless.lock").exists()


# -- finding seamless.yaml ---------------------------------------------------------------------
@pytest.mark.parametrize("command", [["resolve"], ["check"], ["show"], ["verify"],
                                     ["resolve", "--dry-run"], ["presets"]])
def test_commands_find_seamless_yaml_in_a_parent_folder(project: Path, command: list[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    resolve(project / "seamless.yaml")
    deep = project / "strategies" / "momentum"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert not (deep / "seamless.lock").exists() and not (deep / ".seamless").exists()
    if command == ["show"]:
        assert "syn1" in result.output


def test_an_explicit_manifest_is_not_searched_for(project: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    deep = project / "sub"
    deep.mkdir()
    monkeypatch.chdir(deep)
    result = CliRunner().invoke(cli, ["check", "-m", "seamless.yaml"])
    assert result.exit_code == 2
    assert "seamless.yaml" in result.output


def test_without_any_seamless_yaml_the_error_says_how_to_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "qmtl-lock init" in result.output


# -- the store lease gc respects -----------------------------------------------------------------
def test_a_running_resolve_holds_a_store_lease_until_the_lock_is_written(project: Path) -> None:
    from qmtl_engine import Store

    store = Store(str(project / ".seamless" / "store"))
    seen: list[tuple[str | None, bool]] = []

    def progress(label: str):  # type: ignore[no-untyped-def]
        leases = store.leases()
        seen.append((leases[0].owner if leases else None, (project / "seamless.lock").exists()))
        return lambda done, total: None

    resolve(project / "seamless.yaml", progress=progress)
    assert seen and all(owner is not None and owner.startswith("resolve ") and not locked
                        for owner, locked in seen)
    assert store.leases() == ()  # given back once the lock pins the result
    resolve(project / "seamless.yaml", dry_run=True)
    assert store.leases() == ()


def test_a_no_op_resolve_takes_no_lease(project: Path) -> None:
    from qmtl_engine import Store

    resolve(project / "seamless.yaml")
    store = Store(str(project / ".seamless" / "store"))
    leases_dir = project / ".seamless" / "store" / "leases"
    before = sorted(leases_dir.iterdir()) if leases_dir.exists() else []
    resolve(project / "seamless.yaml")
    after = sorted(leases_dir.iterdir()) if leases_dir.exists() else []
    assert before == after == [] and store.leases() == ()
