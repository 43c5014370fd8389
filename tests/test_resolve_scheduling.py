"""Scheduling in resolve: low-priority datasets yield, --jobs runs windows at once, same lock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from qmtl_lock.resolve import resolve

MANIFEST = """\
version: 1
datasets:
  a_background:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [AAA, BBB]
    start: 2024-01-01
    end: 2024-02-01
    contract_version: v1
    priority: low
  z_strategy:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [ZZZ]
    start: 2024-01-01
    end: 2024-02-01
    contract_version: v1
"""


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    return tmp_path / "seamless.yaml"


def test_low_priority_datasets_are_materialized_last(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def progress(label: str):  # type: ignore[no-untyped-def]
        order.append(label)
        return lambda done, total: None

    resolve(_project(tmp_path, monkeypatch), progress=progress, jobs=1)  # the queue order
    # alphabetically a_background would come first; priority: low puts it behind z_strategy
    assert order == ["z_strategy/ZZZ", "a_background/AAA", "a_background/BBB"]


def test_high_priority_datasets_go_first(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def progress(label: str):  # type: ignore[no-untyped-def]
        order.append(label)
        return lambda done, total: None

    path = _project(tmp_path, monkeypatch)
    path.write_text(MANIFEST + "    priority: high\n", encoding="utf-8")  # z_strategy: high
    path.write_text(path.read_text(encoding="utf-8").replace("    priority: low\n", ""),
                    encoding="utf-8")
    resolve(path, progress=progress, jobs=1)
    assert order == ["z_strategy/ZZZ", "a_background/AAA", "a_background/BBB"]


def test_jobs_run_windows_concurrently_with_the_same_lock(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    serial_dir = tmp_path / "serial"
    parallel_dir = tmp_path / "parallel"
    serial_dir.mkdir()
    parallel_dir.mkdir()
    serial = resolve(_project(serial_dir, monkeypatch), jobs=1)
    parallel = resolve(_project(parallel_dir, monkeypatch), jobs=3)

    def fingerprints(result: object) -> dict[tuple[str, str], str]:
        lock = result.lock  # type: ignore[attr-defined]
        return {(d, s): e.dataset_fingerprint for d, ds in lock.datasets.items()
                for s, e in ds.symbols.items()}

    assert fingerprints(parallel) == fingerprints(serial)
    assert len(fingerprints(serial)) == 3
    assert (parallel_dir / "seamless.lock").read_bytes() == (serial_dir / "seamless.lock"
                                                              ).read_bytes()


def test_three_threads_have_three_windows_in_flight_at_once() -> None:
    """What --jobs 3 runs: the windows of every request are tasks on one pool."""
    from qmtl_engine import FixedClock, LocalExecutor, TimeRange, load_registry, to_ms
    from qmtl_engine.materialize import Engine, Request
    from qmtl_engine.sources import make_source
    from qmtl_engine.store import Store

    # All three windows must be in flight at once to pass this barrier; run one after another,
    # it would time out and break.
    barrier = threading.Barrier(3, timeout=10)
    inner = make_source("synthetic", {"seed": 1}, base_dir=".")

    class Waiting(type(inner)):  # type: ignore[misc]
        def fetch(self, symbol, window, interval_ms):  # type: ignore[no-untyped-def]
            barrier.wait()
            return inner.fetch(symbol, window, interval_ms)

    preset = load_registry().get("ohlcv.synthetic.crypto.1h")
    engine = Engine(Store("memory://three-at-once"), clock=FixedClock(to_ms("2024-06-01")),
                    source_factory=lambda p: Waiting(inner.options))
    plans = [engine.plan(Request(preset, symbol, TimeRange(to_ms("2024-01-01"),
                                                            to_ms("2024-02-01")), "v1"))
             for symbol in ("AAA", "BBB", "CCC")]
    results = list(engine.run(plans, executor=LocalExecutor(3)))
    assert not barrier.broken
    assert sorted(i for i, _ in results) == [0, 1, 2]
    assert all(not isinstance(r, Exception) for _, r in results)
