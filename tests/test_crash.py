"""A resolve killed with SIGKILL leaves the old lock valid and the store readable, and resumes.

DESIGN §6: writes go to a temporary name and are then published, a snapshot is written only after
its objects, the lock is replaced atomically last; finished partitions are checkpointed so a rerun
does not fetch them again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import NOW, Project
from killing import kill_when
from qmtl_engine.fingerprint import partition_digest
from qmtl_engine.store import Store

from qmtl_lock.lockfile import read_lock

SMALL = """\
version: 1
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BTCUSDT]
    start: 2021-01-01
    end: {end}
    contract_version: v1
"""
PARTITIONS = 36  # 2021-01 .. 2023-12, monthly


def _command() -> list[str]:
    exe = shutil.which("qmtl-lock")
    return [exe] if exe else [sys.executable, "-m", "qmtl_lock.cli"]


def _env() -> dict[str, str]:
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    env.pop("CI", None)
    return env


def _final_objects(objects: Path) -> list[Path]:
    return sorted(p for p in objects.rglob("*.parquet") if not p.name.startswith("."))


def _written(store: Path) -> list[Path]:
    """Partition files under a final name (objects are written in place, never staged)."""
    return _final_objects(store / "objects")


@pytest.mark.slow
def test_sigkill_during_resolve_keeps_old_lock_and_resumes(project: Project) -> None:
    # 1. a small committed lock (January 2021 only)
    project.write_manifest(SMALL.format(end="2021-02-01"))
    proc = subprocess.run([*_command(), "resolve"], cwd=project.root, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    old_lock = project.lock.read_bytes()
    baseline = len(_written(project.store))
    assert baseline == 1

    # 2. ask for three years and kill the resolve once a few partitions have been published
    project.write_manifest(SMALL.format(end="2024-01-01"))
    kill_when([*_command(), "resolve"], cwd=project.root, env=_env(),
              ready=lambda: len(_written(project.store)) >= baseline + 4)

    # 3. the old lock is untouched, byte for byte, and nothing half-written has a final name
    assert project.lock.read_bytes() == old_lock
    assert not list(project.root.glob(".seamless.lock.*")) and not list(
        project.root.glob(".seamless*.tmp"))
    store = Store(str(project.store))
    written = _written(project.store)
    assert baseline + 4 <= len(written) < PARTITIONS
    for path in written:
        assert path.parent.name == path.stem[:2]
        table = pq.read_table(path)
        assert partition_digest(table).value == "sha256:" + path.stem
    for path in _final_objects(project.objects):
        store.check_object("sha256:" + path.stem)  # reads, re-hashes and compares with the name
    for snap in store.iter_snapshots():
        s = store.get_snapshot(snap)
        assert all(store.has_object(p.digest) for p in s.partitions)
    # the old lock still loads and verifies
    verify = subprocess.run([*_command(), "verify"], cwd=project.root, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # the checkpoint of the killed job lists what was finished
    jobs = [p for p in (project.store / "jobs").iterdir() if p.is_dir()]
    assert len(jobs) == 1
    done = [json.loads(p.read_text()) for p in jobs[0].glob("*.json")
            if not p.name.startswith(".tmp-")]  # a write the kill cut short is no window
    assert len(done) >= 3  # the first window is reused from the locked snapshot

    # 4. the rerun completes and reuses the checkpointed partitions
    rerun = subprocess.run([*_command(), "resolve", "--json"], cwd=project.root, env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    [change] = json.loads(rerun.stdout)["changes"]
    assert change["action"] == "updated"
    # 1 partition from the old snapshot + every checkpointed one; the rest is fetched
    assert change["detail"].endswith(
        f"fetched {PARTITIONS - 1 - len(done)}, reused {1 + len(done)} partitions"), change
    entry = read_lock(project.lock).datasets["crypto"].symbols["BTCUSDT"]
    assert entry.partitions == PARTITIONS
    assert not [p for p in (project.store / "jobs").rglob("*") if p.is_file()]  # cleaned up
    for snap in store.iter_snapshots():  # every object of every snapshot is published and sound
        for part in store.get_snapshot(snap).partitions:
            store.check_object(part.digest)

    # 5. and the result is the same as an uninterrupted resolve elsewhere
    clean = project.root.parent / "clean"
    clean.mkdir()
    (clean / "seamless.yaml").write_text(SMALL.format(end="2024-01-01"))
    from qmtl_engine.ranges import to_ms

    from qmtl_lock.resolve import PinnedNowClock, resolve

    fresh = resolve(clean / "seamless.yaml", clock=PinnedNowClock(to_ms(NOW)))
    assert (fresh.lock.datasets["crypto"].symbols["BTCUSDT"].dataset_fingerprint
            == entry.dataset_fingerprint)
