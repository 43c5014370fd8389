"""No bar is pinned before it is final: closed, plus the preset's ``stabilization_bars``.

The engine cuts every request at ``closed_before(preset, clock.now_ms())`` before it plans, so
the rule holds whatever the source delivers; each source below has bars past "now" (a vendor
file written to the future, an exchange whose own clock is later than a pinned
``QMTL_LOCK_NOW``, a generator without end). A fixed ``end`` in the future is honoured the way
``end: now`` is: the lock's coverage ends at the last final bar, the request keeps its end,
resolve says the dataset is incomplete, and ``resolve --update`` extends it up to that end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import Project, expect
from qmtl_engine.clock import FixedClock
from qmtl_engine.coverage import closed_before
from qmtl_engine.errors import InputError
from qmtl_engine.materialize import Engine, Request, plan
from qmtl_engine.presets import ResolvedPreset, load_registry
from qmtl_engine.ranges import HOUR_MS, TimeRange, iso, to_ms
from qmtl_engine.sources import make_source
from qmtl_engine.sources.base import Source
from qmtl_engine.store import Store
from test_ccxt import FakeExchange, ccxt
from test_sources import csv_text, synthetic_bars

from qmtl_lock import Lock
from qmtl_lock.lockfile import read_lock

H = HOUR_MS
START = to_ms("2024-01-01")
NOW = "2024-01-03T12:30:00Z"  # the 12:00 bar is still open, 11:00 is closed but not yet final
FINAL_END = to_ms("2024-01-03T11:00:00Z")  # stabilization_bars: 1
LATER = "2024-01-05T06:10:00Z"
FAR = to_ms("2030-01-01")
DATA = TimeRange(START, to_ms("2024-01-08"))  # what every source below holds

CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.crypto.1h:
    kind: ohlcv
    interval_ms: 3600000
    stabilization_bars: 1
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    partition: day
    source: {{name: {source}, options: {options}}}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""


def preset_for(source: str, options: dict[str, object]) -> ResolvedPreset:
    text = CATALOG.format(source=source, options=json.dumps(options))
    return load_registry(extra={"<test catalog>": text}).get("ohlcv.vendor.crypto.1h")


def write_vendor_file(folder: Path, symbol: str = "BTCUSD") -> dict[str, object]:
    """A vendor CSV holding a week of bars, most of them after NOW; the options that read it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{symbol}.csv").write_text(csv_text(synthetic_bars(symbol, DATA, H)))
    return {"url": str(folder / "{symbol}.csv"), "ts_format": "%Y-%m-%d %H:%M:%S",
            "columns": {"ts": "Date", "open": "Open", "high": "High", "low": "Low",
                        "close": "Close", "volume": "Volume"}}


SourceSetup = Callable[[Path], tuple[ResolvedPreset, Callable[[ResolvedPreset], Source]]]


def _synthetic(tmp: Path) -> tuple[ResolvedPreset, Callable[[ResolvedPreset], Source]]:
    preset = preset_for("synthetic", {"seed": 3})
    return preset, lambda p: make_source("synthetic", {"seed": 3}, base_dir=".")


def _files(tmp: Path) -> tuple[ResolvedPreset, Callable[[ResolvedPreset], Source]]:
    options = write_vendor_file(tmp / "vendor")
    return preset_for("files", options), lambda p: make_source("files", options, base_dir=".")


def _ccxt(tmp: Path) -> tuple[ResolvedPreset, Callable[[ResolvedPreset], Source]]:
    # The exchange's clock says the whole week is over; only the engine's clock is pinned.
    exchange = FakeExchange(now=DATA.end + 2 * H, span=DATA)
    return preset_for("ccxt", {"exchange": "fakex"}), lambda p: ccxt(exchange)


SOURCES: dict[str, SourceSetup] = {"synthetic": _synthetic, "files": _files, "ccxt": _ccxt}


# -- the engine: every source is cut at the last final bar ---------------------------------------
@pytest.mark.parametrize("end", [FAR, to_ms("2024-01-04"), FINAL_END + H],
                         ids=["2030", "tomorrow", "the-open-bar"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_no_source_pins_a_bar_before_it_is_final(tmp_path: Path, source: str, end: int) -> None:
    preset, factory = SOURCES[source](tmp_path)
    now = to_ms(NOW)
    assert closed_before(preset, now) == FINAL_END
    engine = Engine(Store(str(tmp_path / "store")), clock=FixedClock(now),
                    source_factory=factory)
    result = engine.materialize(Request(preset, "BTC/USDT" if source == "ccxt" else "BTCUSD",
                                        TimeRange(START, end), "v1", dataset="d"))
    assert (result.coverage.start, result.coverage.end) == (START, FINAL_END)
    assert result.rows == (FINAL_END - START) // H  # every final bar, none after
    table = engine.load(result.fingerprint)
    assert table["ts"].cast(pa.int64()).to_pylist()[-1] == FINAL_END - H
    assert result.snapshot is not None
    assert result.snapshot.header.coverage_end == FINAL_END
    assert result.snapshot.partitions[-1].end == FINAL_END


@pytest.mark.parametrize("source", list(SOURCES))
def test_the_cut_request_gives_the_fingerprint_of_asking_for_it(tmp_path: Path,
                                                                source: str) -> None:
    preset, factory = SOURCES[source](tmp_path)
    clock = FixedClock(to_ms(NOW))
    engine = Engine(Store(str(tmp_path / "store")), clock=clock, source_factory=factory)
    symbol = "BTC/USDT" if source == "ccxt" else "BTCUSD"
    cut = engine.materialize(Request(preset, symbol, TimeRange(START, FAR), "v1"))
    asked = engine.materialize(Request(preset, symbol, TimeRange(START, FINAL_END), "v1"))
    assert cut.fingerprint == asked.fingerprint


def test_the_engine_gives_its_clock_to_the_source(tmp_path: Path) -> None:
    """So ccxt decides which candles are closed by a pinned ``QMTL_LOCK_NOW`` too."""
    clock = FixedClock(to_ms(NOW))
    built: list[Source] = []
    preset, factory = _ccxt(tmp_path)

    def build(p: ResolvedPreset) -> Source:
        built.append(factory(p))
        return built[-1]

    engine = Engine(Store(str(tmp_path / "store")), clock=clock, source_factory=build)
    engine.materialize(Request(preset, "BTC/USDT", TimeRange(START, FINAL_END), "v1"))
    assert [src.wall_clock for src in built] == [clock]


def test_a_request_with_no_final_bar_yet_is_refused(tmp_path: Path) -> None:
    preset, factory = _synthetic(tmp_path)
    engine = Engine(Store(str(tmp_path / "store")), clock=FixedClock(to_ms(NOW)),
                    source_factory=factory)
    with pytest.raises(InputError) as info:
        engine.plan(Request(preset, "BTCUSD", TimeRange(FINAL_END, FAR), "v1", dataset="d"))
    assert info.value.exit_code == 2
    assert info.value.what == ("no bar of d/BTCUSD has closed yet: the first one, at "
                               "2024-01-03T11:00:00Z, is final from 2024-01-03T13:00:00Z")


def test_a_plan_made_for_a_later_clock_is_not_applied(tmp_path: Path) -> None:
    preset, factory = _synthetic(tmp_path)
    store = Store(str(tmp_path / "store"))
    engine = Engine(store, clock=FixedClock(to_ms(NOW)), source_factory=factory)
    ahead = plan(Request(preset, "BTCUSD", TimeRange(START, FAR), "v1", dataset="d"),
                 now_ms=to_ms(LATER))
    with pytest.raises(InputError, match="past the last closed bar 2024-01-03T11:00:00Z"):
        engine.apply(ahead)
    assert not list(store.iter_objects())


# -- the command line: a fixed end in the future -------------------------------------------------
MANIFEST = """\
version: 1
presets: [presets.yaml]
datasets:
  btc:
    preset: ohlcv.vendor.crypto.1h
    symbols: [BTCUSD]
    start: 2024-01-01
    end: {end}
    contract_version: v1
"""


def setup_project(project: Project, end: str) -> None:
    options = write_vendor_file(project.root / "vendor")
    (project.root / "presets.yaml").write_text(
        CATALOG.format(source="files", options=json.dumps(options)))
    project.write_manifest(MANIFEST.format(end=end))


def bounds(project: Project) -> tuple[int, int]:
    return read_lock(project.lock).datasets["btc"].symbols["BTCUSD"].coverage_bounds


@pytest.mark.parametrize("end", ["2030-01-01", "2024-01-04"])
def test_a_fixed_end_in_the_future_pins_what_is_final_and_says_so(project: Project,
                                                                  end: str) -> None:
    setup_project(project, end)
    result = expect(project.run("resolve", env={"QMTL_LOCK_NOW": NOW}), 0)
    assert (f"added     btc/BTCUSD: new dataset; incomplete until {iso(to_ms(end))}: only bars "
            "before 2024-01-03T11:00:00Z are final yet, `qmtl-lock resolve --update` extends "
            "it later") in result.output
    lock = read_lock(project.lock)
    assert lock.datasets["btc"].request["end"] == end  # the request keeps its end
    assert bounds(project) == (START, FINAL_END)
    table = Lock.open(project.lock).load("btc", "BTCUSD")
    assert max(table["ts"].cast(pa.int64()).to_pylist()) == FINAL_END - H
    expect(project.run("check", env={"QMTL_LOCK_NOW": NOW}), 0)
    expect(project.run("verify", env={"QMTL_LOCK_NOW": NOW}), 0)

    # later, a plain resolve keeps the pin (like `end: now`); --locked agrees
    result = expect(project.run("resolve", "--locked", env={"QMTL_LOCK_NOW": LATER}), 0)
    assert "is up to date" in result.output and bounds(project) == (START, FINAL_END)
    expect(project.run("check", env={"QMTL_LOCK_NOW": LATER}), 0)

    # --update extends it, up to the request's end at most
    result = expect(project.run("resolve", "--update", "--json",
                                env={"QMTL_LOCK_NOW": LATER}), 0)
    [change] = json.loads(result.stdout)["changes"]
    later_final = to_ms("2024-01-05T05:00:00Z")
    assert change["action"] == "extended"
    assert bounds(project) == (START, min(later_final, to_ms(end)))
    assert ("incomplete until" in change["detail"]) == (to_ms(end) > later_final)
    expect(project.run("check", env={"QMTL_LOCK_NOW": LATER}), 0)

    # and the extended pin is what a fresh resolve at that time gives
    extended = read_lock(project.lock).datasets["btc"].symbols["BTCUSD"].dataset_fingerprint
    project.lock.unlink()
    expect(project.run("resolve", env={"QMTL_LOCK_NOW": LATER}), 0)
    assert read_lock(project.lock).datasets["btc"].symbols["BTCUSD"].dataset_fingerprint == \
        extended


def test_a_short_coverage_is_still_a_lock_edit_when_the_end_has_passed(project: Project) -> None:
    """Only an end that was in the future when the lock was written may be pinned short."""
    setup_project(project, "2024-01-03")
    expect(project.run("resolve", env={"QMTL_LOCK_NOW": NOW}), 0)
    assert bounds(project) == (START, to_ms("2024-01-03"))
    project.edit_lock("2024-01-03T00:00:00Z]", "2024-01-02T00:00:00Z]")
    result = expect(project.run("check", env={"QMTL_LOCK_NOW": NOW}), 1)
    assert "does not match the request" in result.output
