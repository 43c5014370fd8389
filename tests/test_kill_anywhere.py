"""``kill -9`` at random moments of a real ``qmtl-lock resolve`` (20 times, seeded): the old lock
stays byte for byte (or the new one is complete), and the next plan fetches nothing that was
finished — not a checkpointed partition, not a symbol whose snapshot was published before the
lock could be written. Every rerun ends with the fingerprints of an uninterrupted resolve.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qmtl_engine import TimeRange, window_name

from qmtl_lock.lockfile import read_lock
from qmtl_lock.resolve import resolve

NOW = "2024-06-01T00:00:00Z"
SYMBOLS = ("AAA", "BBB", "CCC")
MANIFEST = """\
version: 1
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [AAA, BBB, CCC]
    start: 2021-01-01
    end: {end}
    contract_version: v1
"""
TARGET_END = "2021-07-01"  # six monthly partitions per symbol
KILLS = 20


def _env() -> dict[str, str]:
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    env.pop("CI", None)
    return env


def _start(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "qmtl_lock.cli", "resolve"], cwd=root,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _finished(store: Path) -> dict[str, set[str]]:
    """Per symbol, the partitions the killed run finished: checkpointed windows, and every
    window of a symbol whose snapshot it published (named by a reference)."""
    done: dict[str, set[str]] = {s: set() for s in SYMBOLS}
    for window in (store / "jobs").glob("*/*.json"):  # jobs/<key>/<start>-<end>.json
        if window.name.startswith(".tmp-"):
            continue  # a write the kill cut short: no window (pathlib's glob matches dot files)
        data = json.loads(window.read_text(encoding="utf-8"))
        symbol = data["request"].split("/")[-1]
        done[symbol].add(window_name(TimeRange(data["start"], data["end"]), "month"))
    for ref in (store / "refs").glob("*.json"):
        symbol = json.loads(ref.read_text(encoding="utf-8"))["request"].split("/")[-1]
        done[symbol] |= {f"2021-{m:02d}" for m in range(1, 7)}
    return done


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], float]:
    """A project with January locked, the fingerprints of a clean six-month resolve, and how
    long an uninterrupted six-month `qmtl-lock resolve` takes here (the kill window)."""
    os.environ["QMTL_LOCK_NOW"] = NOW
    base = tmp_path_factory.mktemp("kill-template")
    (base / "seamless.yaml").write_text(MANIFEST.format(end="2021-02-01"), encoding="utf-8")
    resolve(base / "seamless.yaml")
    clean = tmp_path_factory.mktemp("kill-clean")
    shutil.copytree(base, clean, dirs_exist_ok=True)
    (clean / "seamless.yaml").write_text(MANIFEST.format(end=TARGET_END), encoding="utf-8")
    started = time.monotonic()
    proc = _start(clean)
    assert proc.wait(timeout=120) == 0
    took = time.monotonic() - started
    entries = read_lock(clean / "seamless.lock").datasets["crypto"].symbols
    return base, {s: e.dataset_fingerprint for s, e in entries.items()}, took


@pytest.mark.slow
def test_kill_9_anywhere_loses_no_lock_and_no_finished_work(
        template: tuple[Path, dict[str, str], float], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base, expected, took = template
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    rng = random.Random(20261201)
    old_lock = (base / "seamless.lock").read_bytes()
    outcomes = {"old lock kept": 0, "new lock complete": 0}
    symbols_finished_before_the_lock = 0
    for i in range(KILLS):
        root = tmp_path / f"run{i}"
        shutil.copytree(base, root)
        (root / "seamless.yaml").write_text(MANIFEST.format(end=TARGET_END), encoding="utf-8")
        proc = _start(root)
        time.sleep(rng.uniform(0.1, 0.95) * took)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        lock_bytes = (root / "seamless.lock").read_bytes()
        if lock_bytes == old_lock:
            outcomes["old lock kept"] += 1
        else:  # the kill came after the lock was replaced: then it is the whole new lock
            entries = read_lock(root / "seamless.lock").datasets["crypto"].symbols
            assert {s: e.dataset_fingerprint for s, e in entries.items()} == expected
            outcomes["new lock complete"] += 1
            continue
        finished = _finished(root / ".seamless" / "store")
        symbols_finished_before_the_lock += sum(len(w) == 6 for w in finished.values())
        plan = resolve(root / "seamless.yaml", dry_run=True)
        for change in plan.changes:
            fetch = {line.split()[1] for line in change.plan if line.startswith("fetch")}
            assert change.symbol is not None
            assert not fetch & finished[change.symbol], (i, change.symbol, fetch, finished)
            assert "2021-01" not in fetch  # locked before the run began
        if i % 5 == 0:  # and the rerun completes with the clean result
            resolve(root / "seamless.yaml")
            entries = read_lock(root / "seamless.lock").datasets["crypto"].symbols
            assert {s: e.dataset_fingerprint for s, e in entries.items()} == expected
        shutil.rmtree(root)
    assert sum(outcomes.values()) == KILLS
    assert outcomes["old lock kept"] >= KILLS // 2, outcomes
    assert symbols_finished_before_the_lock > 0  # the seed reaches the window refs/ covers


def test_a_failed_lock_write_costs_no_refetch(template: tuple[Path, dict[str, str], float],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every symbol finished, then the lock could not be replaced: the rerun fetches nothing."""
    from click.testing import CliRunner
    from fs_faults import immutable

    from qmtl_lock.cli import cli

    base, expected, _ = template
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    root = tmp_path / "project"
    shutil.copytree(base, root)
    (root / "seamless.yaml").write_text(MANIFEST.format(end=TARGET_END), encoding="utf-8")
    old_lock = (root / "seamless.lock").read_bytes()
    with immutable(root / "seamless.lock"):
        failed = CliRunner().invoke(cli, ["resolve", "-m", str(root / "seamless.yaml")])
    assert failed.exit_code == 3, failed.output
    assert (root / "seamless.lock").read_bytes() == old_lock
    rerun = resolve(root / "seamless.yaml")
    assert [c.detail.rsplit("; ", 1)[-1] for c in rerun.changes] == [
        "fetched 0, reused 6 partitions"] * len(SYMBOLS)
    entries = read_lock(root / "seamless.lock").datasets["crypto"].symbols
    assert {s: e.dataset_fingerprint for s, e in entries.items()} == expected
    assert not list((root / ".seamless" / "store" / "refs").glob("*.json"))  # pinned: dropped
