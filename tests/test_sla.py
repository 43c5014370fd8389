"""SLA budgets, driven by an injected clock: every phase and every on_violation mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qmtl_engine.clock import FixedClock
from qmtl_engine.conformance import RawBatch
from qmtl_engine.errors import SLAExceeded
from qmtl_engine.materialize import Engine, Request
from qmtl_engine.presets import OnViolation, ResolvedPreset, SLAPreset, load_registry
from qmtl_engine.ranges import HOUR_MS, TimeRange, to_ms
from qmtl_engine.sla import SLATimer
from qmtl_engine.sources import make_source
from qmtl_engine.sources.base import Source
from qmtl_engine.store import Store

NOW = to_ms("2024-06-01T00:00:00Z")


class SlowSource(Source):
    """The synthetic source, but every fetch costs ``ms`` on the injected clock."""

    name = "slow"

    def __init__(self, inner: Source, clock: FixedClock, ms: float,
                 drop: set[int] | None = None) -> None:
        self.inner, self.clock, self.ms, self.drop = inner, clock, ms, drop or set()

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> SlowSource:
        raise NotImplementedError  # built directly by the tests

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        self.clock.advance(self.ms)
        batch = self.inner.fetch(symbol, window, interval_ms)
        if self.drop:  # lose some bars, to push coverage down
            ts = batch.table["ts"].cast("int64").to_pylist()
            keep = [i for i, t in enumerate(ts) if i not in self.drop]
            return RawBatch(batch.table.take(keep), batch.hints)
        return batch


def preset_with(**sla: Any) -> ResolvedPreset:
    base = load_registry().get("ohlcv.synthetic.crypto.1h")
    policy = SLAPreset(**{"on_violation": "fail_fast", **sla})
    return ResolvedPreset(base.id, base.data.model_copy(update={
        "conformance_preset": "permissive-dev"}), load_registry().get(
        "ohlcv.synthetic.crypto.1h").conformance.model_copy(update={"partial_ok": True}),
        policy, base.base_dir, base.catalog)


def run(preset: ResolvedPreset, *, fetch_ms: float = 0, years: int = 3,
        drop: set[int] | None = None, follows_now: bool = False,
        end: int | None = None) -> Any:
    clock = FixedClock(NOW)
    inner = make_source("synthetic", {"seed": 1}, base_dir=".")
    engine = Engine(Store("memory://sla-" + str(id(preset)) + str(fetch_ms)), clock=clock,
                    source_factory=lambda p: SlowSource(inner, clock, fetch_ms, drop))
    start = to_ms("2021-01-01")
    stop = end if end is not None else to_ms(f"{2021 + years}-01-01")
    return engine.materialize(Request(preset, "BTCUSDT", TimeRange(start, stop), "v1",
                                      dataset="d", follows_now=follows_now))


def test_within_budget_records_elapsed_and_no_violation() -> None:
    result = run(preset_with(total_deadline_ms=10_000), fetch_ms=100)
    assert result.sla.violation is None
    assert result.sla.deadline_ms == 10_000
    assert result.sla.elapsed_ms == 300  # three yearly partitions at 100 ms each


def test_fail_fast_total_deadline_raises_with_its_data() -> None:
    """The budgets hold for each partition fetch (a multi-year range on a slow store must not
    fail a budget meant for one fetch): 1 s per yearly window fits 1.5 s, 2 s does not."""
    assert run(preset_with(total_deadline_ms=1_500), fetch_ms=1_000).sla.violation is None
    with pytest.raises(SLAExceeded) as info:
        run(preset_with(total_deadline_ms=1_500), fetch_ms=2_000)
    err = info.value
    assert (err.phase, err.budget_ms, err.elapsed_ms) == ("total", 1_500, 2_000)
    assert (err.dataset, err.symbol) == ("d", "BTCUSDT")
    assert "total deadline exceeded" in str(err) and "partial_fill" in str(err)


def test_fail_fast_backfill_budget() -> None:
    assert run(preset_with(max_wait_backfill_ms=250), fetch_ms=100).sla.violation is None
    with pytest.raises(SLAExceeded) as info:
        run(preset_with(max_wait_backfill_ms=250), fetch_ms=300)
    assert info.value.phase == "backfill" and info.value.elapsed_ms == 300


def test_storage_budget_counts_only_store_time() -> None:
    # fetching is slow, but the store is instant: the storage budget holds
    result = run(preset_with(max_wait_storage_ms=1, on_violation="partial_fill"),
                 fetch_ms=5_000)
    assert result.sla.violation is None


def test_fail_fast_keeps_the_window_that_finished_late_and_skips_the_rest() -> None:
    """A failed deadline never discards finished work: the late window is stored and
    checkpointed, the windows after it are not fetched, and the rerun fetches only those."""
    clock = FixedClock(NOW)
    inner = make_source("synthetic", {"seed": 1}, base_dir=".")
    store = Store("memory://sla-late")
    fetched: list[TimeRange] = []

    class Counting(SlowSource):
        def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
            fetched.append(window)
            return super().fetch(symbol, window, interval_ms)

    engine = Engine(store, clock=clock, source_factory=lambda p: Counting(inner, clock, 2_000))
    request = Request(preset_with(total_deadline_ms=1_500), "X",
                      TimeRange(to_ms("2021-01-01"), to_ms("2024-01-01")), "v1")
    with pytest.raises(SLAExceeded):
        engine.materialize(request)
    assert len(fetched) == 1 and len(list(store.iter_objects())) == 1
    assert list(store.iter_snapshots()) == []
    assert len(store.read_checkpoints(request.job_key())) == 1

    fetched.clear()
    patient = Engine(store, clock=clock, source_factory=lambda p: Counting(inner, clock, 1_000))
    result = patient.materialize(request)
    assert (result.fetched, result.reused, len(fetched)) == (2, 1, 2)
    assert store.read_checkpoints(request.job_key()) == {}


def test_partial_fill_records_the_violation_and_writes() -> None:
    result = run(preset_with(total_deadline_ms=1_500, on_violation="partial_fill"),
                 fetch_ms=2_000)
    assert result.sla.violation == "total deadline exceeded: 2000 ms spent, budget 1500 ms"
    assert result.fingerprint.startswith("sha256:")


def test_min_coverage_is_a_violation() -> None:
    with pytest.raises(SLAExceeded) as info:
        run(preset_with(min_coverage=0.999), years=1, drop=set(range(100)))
    assert info.value.phase == "coverage"
    assert "coverage 0.9886 is below min_coverage 0.999" in str(info.value)


def test_staleness_applies_to_data_that_follows_now() -> None:
    preset = preset_with(max_lag_seconds=3_600, on_violation="partial_fill")
    end = NOW - 3 * HOUR_MS
    stale = run(preset, years=1, end=end, follows_now=True)
    assert stale.sla.violation == "data is 10800 s behind now, max_lag_seconds is 3600"
    fixed = run(preset, years=1, end=end, follows_now=False)  # a fixed range is never stale
    assert fixed.sla.violation is None


def test_on_violation_is_an_enum_and_bad_values_fail_at_load() -> None:
    assert SLAPreset(on_violation="hold").on_violation is OnViolation.HOLD
    with pytest.raises(ValueError):
        SLAPreset(on_violation="retry_forever")


def test_timer_phases_accumulate() -> None:
    clock = FixedClock(NOW)
    timer = SLATimer(SLAPreset(max_wait_live_ms=50, on_violation="partial_fill"), clock,
                     dataset=None, symbol="X")
    for _ in range(3):
        with timer.phase("live"):
            clock.advance(20)
    timer.checkpoint()
    assert timer.spent["live"] == 60
    assert timer.result().violation == "live budget exceeded: 60 ms spent, budget 50 ms"


def test_partial_fill_fails_check_strict_and_hold_keeps_the_old_pin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qmtl_lock.check import check
    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.resolve import resolve

    catalog = """\
version: 1
sla_presets:
  tiny: {{max_lag_seconds: 60, on_violation: {mode}}}
data_presets:
  ohlcv.synthetic.lagging.1h:
    kind: ohlcv
    interval_ms: 3600000
    stabilization_bars: 5
    contract: {{name: ohlcv, version: v1}}
    source: {{name: synthetic, options: {{seed: 3}}}}
    sla_preset: tiny
    conformance_preset: strict-blocking
"""
    manifest = """\
version: 1
presets: [p.yaml]
datasets:
  lagging:
    preset: ohlcv.synthetic.lagging.1h
    symbols: [X]
    start: 2024-05-01
    end: now
    contract_version: v1
"""
    (tmp_path / "seamless.yaml").write_text(manifest, encoding="utf-8")
    (tmp_path / "p.yaml").write_text(catalog.format(mode="partial_fill"), encoding="utf-8")
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    resolve(tmp_path / "seamless.yaml")  # 5 stabilization bars always lag more than 60 s
    entry = read_lock(tmp_path / "seamless.lock").entry("lagging", "X")
    assert entry is not None and "behind now" in str(entry.sla["violation"])
    assert not check(tmp_path / "seamless.yaml")
    strict = check(tmp_path / "seamless.yaml", strict=True)
    assert [d.kind for d in strict.drifts] == ["sla"]

    (tmp_path / "p.yaml").write_text(catalog.format(mode="hold"), encoding="utf-8")
    before = (tmp_path / "seamless.lock").read_text()
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-02T00:00:00Z")
    result = resolve(tmp_path / "seamless.yaml", update=True)
    assert [c.action for c in result.changes] == ["held"]
    after = read_lock(tmp_path / "seamless.lock").entry("lagging", "X")
    assert after is not None
    assert after.dataset_fingerprint == entry.dataset_fingerprint
    assert after.coverage_bounds == entry.coverage_bounds
    assert (tmp_path / "seamless.lock").read_text() != before  # only the preset digest moved
