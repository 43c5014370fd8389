"""Every executor goes through one path (partition tasks, then a finalize per request), so the
checks that span partitions and the lock come out the same however the windows ran."""

from __future__ import annotations

from pathlib import Path

import pytest
from qmtl_engine import LocalExecutor, iso, to_ms

from qmtl_lock.lockfile import read_lock
from qmtl_lock.resolve import resolve

NOW = "2024-06-01T00:00:00Z"
CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.crypto.1d:
    kind: ohlcv
    interval_ms: 86400000
    partition: month
    contract: {{name: ohlcv, version: v1}}
    source: {{name: files, options: {{url: "{{symbol}}.csv", ts_format: "%Y-%m-%d"}}}}
    sla_preset: baseline
    conformance_preset: {conformance}
"""
MANIFEST = """\
version: 1
presets: [catalog.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [ABC]
    start: 2024-01-01
    end: 2024-04-01
    contract_version: v1
"""


def _csv(repeat_across_boundary: bool) -> str:
    """Daily bars of January to March 2024; February 1st may repeat January 15th's values."""
    lines = ["ts,open,high,low,close,volume"]
    day = to_ms("2024-01-01")
    for i in range(91):
        o = 100.0 + i
        values = (o, o + 2, o - 1, o + 1, 1000.0 + i)
        if repeat_across_boundary and i == 31:  # 2024-02-01 gets 2024-01-15's bar
            o = 100.0 + 14
            values = (o, o + 2, o - 1, o + 1, 1000.0 + 14)
        lines.append(iso(day + i * 86_400_000)[:10] + "," + ",".join(f"{v:g}" for v in values))
    return "\n".join(lines) + "\n"


def _project(root: Path, *, conformance: str, repeat: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "catalog.yaml").write_text(CATALOG.format(conformance=conformance), encoding="utf-8")
    (root / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    (root / "ABC.csv").write_text(_csv(repeat), encoding="utf-8")
    return root / "seamless.yaml"


EXECUTORS = {"inline": lambda: LocalExecutor(1), "two-threads": lambda: LocalExecutor(2)}


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_bars_repeated_across_a_boundary_are_counted_the_same_by_every_executor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    reference = _project(tmp_path / "reference", conformance="permissive-dev")
    resolve(reference)
    manifest = _project(tmp_path / name, conformance="permissive-dev")
    resolve(manifest, executor=EXECUTORS[name]())
    entry = read_lock(manifest.parent / "seamless.lock").datasets["daily"].symbols["ABC"]
    assert entry.conformance_flags["repeated_bars"] == 1
    assert (manifest.parent / "seamless.lock").read_bytes() == (
        reference.parent / "seamless.lock").read_bytes()


def test_a_boundary_next_to_a_checkpointed_window_is_checked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rerun after an interruption reuses January from its checkpoint and fetches
    February: the repeat across their boundary is found all the same."""
    from qmtl_engine import Engine, Store, TimeRange
    from qmtl_engine.materialize import PartitionTask, run_partition

    from qmtl_lock.manifest import load_manifest

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    manifest = _project(tmp_path / "p", conformance="permissive-dev")
    loaded = load_manifest(manifest)
    ds = loaded.datasets["daily"]
    store = Store(loaded.store_url)
    engine = Engine(store)
    request = ds.engine_request("ABC", TimeRange(ds.start_ms, ds.end_ms()), follows_now=False)
    january = engine.plan(request).partitions[0]
    # a run that got through January only, then died
    run_partition(PartitionTask(store, request, january.window, request.job_key(), "ABC",
                                engine.clock, engine.source_factory))
    rerun = engine.plan(request)
    assert [s.origin for s in rerun.partitions] == ["checkpoint", "", ""]
    result = engine.apply(rerun)
    assert result.flags["repeated_bars"] == 1 and (result.fetched, result.reused) == (2, 1)


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_a_repeat_across_a_boundary_refuses_the_later_partition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from qmtl_engine import ConformanceError

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    manifest = _project(tmp_path / name, conformance="strict-blocking")
    with pytest.raises(ConformanceError) as info:
        resolve(manifest, executor=EXECUTORS[name]())
    assert info.value.blocking == {"repeated_bars": 1}
    assert "first in partition 2024-02" in info.value.where
    # the repeating bar, as every flag shows its first offenders
    assert info.value.report.sample_texts("repeated_bars") == ["2024-02-01T00:00:00Z"]
    assert not (manifest.parent / "seamless.lock").exists()
    store = manifest.parent / ".seamless" / "store"
    assert not [p for p in store.rglob("*") if p.is_file() and "leases" not in p.parts]


class EveryTaskFirst:
    """An executor that runs every task before it reports any: the order of a cluster whose
    client hears back only when all is done. The tasks of one request then find objects the
    tasks of another wrote before that other request is judged."""

    name = "every-task-first"

    def map_unordered(self, fn, items, *, skip=None):  # type: ignore[no-untyped-def]
        results = []
        for i, item in enumerate(items):
            try:
                results.append((i, fn(item)))
            except Exception as exc:  # reported as the task's outcome, like a worker's
                results.append((i, exc))
        yield from results

    def close(self, *, cancel: bool = False) -> None:
        pass


@pytest.mark.parametrize("executor", [EveryTaskFirst(), LocalExecutor(2)],
                         ids=["every-task-first", "two-threads"])
def test_a_refused_symbol_takes_back_only_what_no_published_symbol_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: object) -> None:
    """ABC (refused: a repeat across a boundary) and DEF share January's and March's bars, so
    one object each: taking ABC's writes back must leave DEF's snapshot whole."""
    from qmtl_engine import ConformanceError, Store

    from qmtl_lock.verify import verify

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    manifest = _project(tmp_path / "p", conformance="strict-blocking")
    (manifest.parent / "DEF.csv").write_text(_csv(False), encoding="utf-8")
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("[ABC]", "[ABC, DEF]"),
                        encoding="utf-8")
    with pytest.raises(ConformanceError) as info:
        resolve(manifest, executor=executor)  # type: ignore[arg-type]
    assert info.value.symbol == "ABC"
    only_def = manifest.parent / "only-def"
    only_def.mkdir()
    (only_def / "catalog.yaml").write_bytes((manifest.parent / "catalog.yaml").read_bytes())
    (only_def / "DEF.csv").write_text(_csv(False), encoding="utf-8")
    (only_def / "seamless.yaml").write_text(MANIFEST.replace("[ABC]", "[DEF]"),
                                            encoding="utf-8")
    resolve(only_def / "seamless.yaml")
    expected = Store(str(only_def / ".seamless" / "store"))
    store = Store(str(manifest.parent / ".seamless" / "store"))
    # DEF's three objects and its snapshot stay; ABC's own February object is gone
    assert sorted(store.iter_objects()) == sorted(expected.iter_objects())
    assert sorted(store.iter_snapshots()) == sorted(expected.iter_snapshots())
    lock = manifest.parent / "seamless.lock"
    assert not lock.exists()  # a refusal writes no lock; DEF's snapshot is there to reuse
    (manifest.parent / "ABC.csv").write_text(_csv(False), encoding="utf-8")
    resolve(manifest)
    checked = verify(manifest)
    assert not checked.problems and checked.checked == 2


def test_a_failed_resolve_still_writes_its_report(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`resolve --report` on a refusal: the lock is not written, the report is, with the
    refused symbol's blocking flags and first offenders, and what the others produced."""
    import json

    from click.testing import CliRunner

    from qmtl_lock.cli import cli

    manifest = _project(tmp_path / "p", conformance="strict-blocking")
    (manifest.parent / "DEF.csv").write_text(_csv(False), encoding="utf-8")
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("[ABC]", "[ABC, DEF]"),
                        encoding="utf-8")
    monkeypatch.chdir(manifest.parent)
    result = CliRunner().invoke(cli, ["resolve", "--report", "report.json"],
                                env={"QMTL_LOCK_NOW": NOW}, catch_exceptions=False)
    assert result.exit_code == 3, result.output
    assert not (manifest.parent / "seamless.lock").exists()
    abc, def_ = json.loads((manifest.parent / "report.json").read_text(encoding="utf-8"))
    assert (abc["symbol"], abc["outcome"], abc["error"]) == ("ABC", "failed",
                                                              "ConformanceError")
    assert abc["blocking"] == {"repeated_bars": 1} and abc["exit_code"] == 3
    assert abc["conformance"]["samples"]["repeated_bars"] == ["2024-02-01T00:00:00Z"]
    assert def_["symbol"] == "DEF" and def_["dataset_fingerprint"].startswith("sha256:")


def test_a_range_grown_backward_checks_the_boundary_with_the_locked_windows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned from February first, then from January: February 1st repeats January 15th,
    and the extended lock counts it as a resolve of the whole range does."""
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    reference = _project(tmp_path / "reference", conformance="permissive-dev")
    resolve(reference)
    manifest = _project(tmp_path / "grown", conformance="permissive-dev")
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("start: 2024-01-01", "start: 2024-02-01"), encoding="utf-8")
    resolve(manifest)
    first = read_lock(manifest.parent / "seamless.lock").datasets["daily"].symbols["ABC"]
    assert first.conformance_flags["repeated_bars"] == 0 and first.partitions == 2
    manifest.write_text(text, encoding="utf-8")
    result = resolve(manifest)
    assert [(r["fetched_partitions"], r["reused_partitions"]) for r in result.reports] == [
        (1, 2)]  # February and March come from the first pin
    entry = read_lock(manifest.parent / "seamless.lock").datasets["daily"].symbols["ABC"]
    assert entry.conformance_flags["repeated_bars"] == 1
    assert (manifest.parent / "seamless.lock").read_bytes() == (
        reference.parent / "seamless.lock").read_bytes()


def test_a_locked_window_fetched_again_does_not_count_its_boundary_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """January's object is gone from the store: it is fetched again, and February (locked, its
    flags already counting the repeat across their boundary) is not checked a second time."""
    from qmtl_engine import Store

    from qmtl_lock.verify import verify

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    manifest = _project(tmp_path / "p", conformance="permissive-dev")
    resolve(manifest)
    lock = manifest.parent / "seamless.lock"
    before = lock.read_bytes()
    entry = read_lock(lock).datasets["daily"].symbols["ABC"]
    store = Store(str(manifest.parent / ".seamless" / "store"))
    january = store.get_snapshot(entry.dataset_fingerprint).partitions[0]
    Path(store.object_path(january.digest)).unlink()
    rebuilt = resolve(manifest, frozen=True)  # rebuild what the lock pins
    assert lock.read_bytes() == before
    [report] = rebuilt.reports
    assert (report["fetched_partitions"], report["reused_partitions"]) == (1, 2)
    assert report["conformance"]["counts"]["repeated_bars"] == 1
    snapshot = store.get_snapshot(entry.dataset_fingerprint)
    assert [p.flags.get("repeated_bars", 0) for p in snapshot.partitions] == [0, 1, 0]
    assert not verify(manifest).problems
