"""Findings a user can act on (issue 12): a refusal shows each blocking flag's first offending
rows as the source wrote them, with file and line where the source knows them; it says where
the data starts and ends when the requested range reaches past it; ``price_jump`` counts
one-bar moves of close beyond a preset's threshold, across partition boundaries too; and an
``ohlc_inconsistent`` refusal whose rows look like an adjusted close points to ``adjustment:``.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa
import pytest
from conftest import Project, expect
from hypothesis import given, settings
from hypothesis import strategies as st
from pyarrow import csv
from qmtl_engine.calendars import get_calendar
from qmtl_engine.clock import FixedClock
from qmtl_engine.conformance import (
    ConformanceReport,
    RawBatch,
    RowOrigin,
    TsHints,
    conform,
    normalize_ts,
    price_moves,
)
from qmtl_engine.contracts import OHLCV_V1
from qmtl_engine.errors import ConformanceError
from qmtl_engine.materialize import Engine, MaterializeResult, Request
from qmtl_engine.presets import ResolvedPreset, load_registry
from qmtl_engine.ranges import DAY_MS, HOUR_MS, TimeRange, iso, to_ms
from qmtl_engine.sources import make_source
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.options import SourceOptions
from qmtl_engine.store import Store

from qmtl_lock.lockfile import read_lock

NOW = "2024-06-01T00:00:00Z"
H = HOUR_MS
T0 = to_ms("2024-01-01")
DAILY = "ohlcv.vendor.crypto.1d"
CATALOG = """\
version: 1
conformance_presets:
  jumps-block:
    partial_ok: false
    price_jump_threshold: 0.5
    block: [price_jump, duplicate_ts, ohlc_inconsistent, gap_bars, invalid_timestamp]
  jumps-count:
    partial_ok: false
    price_jump_threshold: 0.5
    block: [duplicate_ts]
  strict-no-jumps:
    partial_ok: false
    block: [duplicate_ts, ohlc_inconsistent, gap_bars]
data_presets:
  ohlcv.vendor.crypto.1d:
    kind: ohlcv
    interval_ms: 86400000
    partition: month
    contract: {name: ohlcv, version: v1}
    source: {name: files, options: {url: "{symbol}.csv", ts_format: "%Y-%m-%d"}}
    sla_preset: tolerant-partial
    conformance_preset: CONFORMANCE
"""

Bar = tuple[str, float, float, float, float, float]  # the day as written, then OHLCV


def preset(conformance: str = "jumps-block") -> ResolvedPreset:
    text = CATALOG.replace("CONFORMANCE", conformance)
    return load_registry(extra={"catalog.yaml": text}).get(DAILY)


def daily(start: str, days: int, close: Callable[[int], float] | None = None) -> list[Bar]:
    """Consistent daily bars from ``start``; ``close(i)`` sets a bar's close (high and low
    follow it)."""
    out = []
    for i in range(days):
        c = close(i) if close is not None else 100.0 + i
        o = c - 0.5
        out.append((iso(to_ms(start) + i * DAY_MS)[:10], o, c + 1.0, o - 1.0, c, 1000.0 + i))
    return out


def write_csv(path: Path, bars: Sequence[Bar]) -> list[str]:
    """The vendor file, header first; its lines (line 1 is the header)."""
    lines = ["ts,open,high,low,close,volume"]
    lines += [f"{d},{o:g},{h:g},{lo:g},{c:g},{v:g}" for d, o, h, lo, c, v in bars]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def line_of(lines: list[str], text: str) -> int:
    """The 1-based line of the file that starts with ``text``."""
    [n] = [k + 1 for k, line in enumerate(lines) if line.startswith(text)]
    return n


class LinedCsv(Source):
    """A CSV vendor file whose batches say where each row was read (file and line), as a
    source that reads files does: the seam that shows findings with their lines."""

    name: ClassVar[str] = "lined-csv"
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    HINTS = TsHints(format="%Y-%m-%d")

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        return cls(Path(base_dir) / str(options["path"]))

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        table = csv.read_csv(self.path, convert_options=csv.ConvertOptions(
            column_types={"ts": pa.string()}))
        times = normalize_ts(table["ts"], self.HINTS)
        keep = ~times.valid | ((times.ms >= window.start) & (times.ms < window.end))
        lines = np.arange(2, table.num_rows + 2, dtype=np.int64)[keep]
        origin = RowOrigin((str(self.path),), np.zeros(lines.size, dtype=np.int32), lines)
        return RawBatch(table.filter(pa.array(keep)), self.HINTS, origin)


def engine(tmp: Path, source: Callable[[ResolvedPreset], Source]) -> Engine:
    return Engine(Store(str(tmp / "store")), clock=FixedClock(to_ms(NOW)),
                  source_factory=source)


def lined(path: Path) -> Callable[[ResolvedPreset], Source]:
    return lambda p: LinedCsv(path)


def files(folder: Path) -> Callable[[ResolvedPreset], Source]:
    return lambda p: make_source("files", {"url": str(folder / "{symbol}.csv"),
                                           "ts_format": "%Y-%m-%d"}, base_dir=".")


def run(tmp: Path, source: Callable[[ResolvedPreset], Source], start: str, end: str,
        conformance: str = "jumps-block", symbol: str = "ABC") -> MaterializeResult:
    request = Request(preset(conformance), symbol, TimeRange(to_ms(start), to_ms(end)), "v1",
                      dataset="daily")
    return engine(tmp, source).materialize(request)


def refusal(tmp: Path, source: Callable[[ResolvedPreset], Source], start: str, end: str,
            conformance: str = "jumps-block") -> ConformanceError:
    with pytest.raises(ConformanceError) as caught:
        run(tmp, source, start, end, conformance)
    return caught.value


# -- a refusal shows the first offending rows as the file has them --------------------------------
def _broken_january_february() -> list[Bar]:
    """Two months of daily bars with one conflicting duplicate (2024-01-10), one bar whose
    high is below its close (2024-02-05) and a jump of close from January 31 to February 1,
    written newest first (so every kept row was moved by sorting)."""
    bars = daily("2024-01-01", 60, close=lambda i: 100.0 + i if i < 31 else 200.0 + i)
    d, o, h, lo, c, v = bars[9]
    bars.insert(10, (d, o, h, lo, c + 0.25, v + 1))  # another version of 2024-01-10
    d, o, h, lo, c, v = bars[36]
    assert d == "2024-02-05"
    bars[36] = (d, o, c - 0.5, lo, c, v)  # high below the close
    return bars[::-1]


def test_a_refusal_shows_each_blocking_flags_first_rows_with_file_and_line(
        tmp_path: Path, snapshot: Any) -> None:
    path = tmp_path / "ABC.csv"
    lines = write_csv(path, _broken_january_february())
    err = refusal(tmp_path, lined(path), "2024-01-01", "2024-03-01")
    assert err.blocking == {"duplicate_ts": 1, "ohlc_inconsistent": 1, "price_jump": 1}
    text = str(err).replace(str(tmp_path), "<tmp>")
    # each row is the one of the file's line it names, whatever sorting did to it
    bad = line_of(lines, "2024-02-05")
    assert f"2024-02-05T00:00:00Z ts='2024-02-05' open=234.5 high=234.5 low=233.5 close=235.0 " \
           f"volume=1035 (ABC.csv line {bad})" in text
    first, second = (k + 1 for k, line in enumerate(lines) if line.startswith("2024-01-10"))
    # the later line of the file is the row kept (the last one wins): shown first
    assert f"close=109.0 volume=1009 (ABC.csv line {second}) vs ts='2024-01-10' open=108.5 " \
           f"high=110.0 low=107.5 close=109.25 volume=1010 (ABC.csv line {first})" in text
    # the jump at the boundary is found on the client, where only times and closes are at hand
    assert ("2024-02-01T00:00:00Z close=231.0; close moved +77.7% from the previous close "
            "130.0 at 2024-01-31T00:00:00Z, the last bar before this partition") in text
    assert text == snapshot
    assert not any((tmp_path / "store" / "snapshots").rglob("*.json"))  # nothing published


def test_the_report_of_a_refusal_carries_the_rows_and_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "ABC.csv"
    write_csv(path, daily("2024-01-01", 31, close=lambda i: 100.0 * 2.0 ** i))  # every bar jumps
    err = refusal(tmp_path, lined(path), "2024-01-01", "2024-02-01")
    data = err.to_dict()
    assert data["blocking"] == {"price_jump": 30}
    assert len(data["findings"]["price_jump"]) == 5  # the first few, not all thirty
    assert data["findings"]["price_jump"][0].startswith(
        "2024-01-02T00:00:00Z ts='2024-01-02' open=199.5 ")
    assert "(ABC.csv line 3); close moved +100.0% from the previous close 100.0" in \
        data["findings"]["price_jump"][0]
    assert len(pickle.dumps(err)) < 8_000


def test_a_partition_outcome_with_many_offenders_pickles_small() -> None:
    n = 100_000
    ts = pa.array(np.arange(n, dtype=np.int64) * H + T0, type=pa.timestamp("ms", tz="UTC"))
    close = np.where(np.arange(n) % 2 == 0, 1.0, 3.0)  # every bar moves by +200 % or -67 %
    table = pa.table({"ts": ts, "open": close, "high": close, "low": close, "close": close,
                      "volume": np.ones(n)})
    origin = RowOrigin(("big.csv",), np.zeros(n, dtype=np.int32), np.arange(2, n + 2))
    _, report, _ = conform(RawBatch(table, TsHints(), origin), window=TimeRange(T0, T0 + n * H),
                           interval_ms=H, contract=OHLCV_V1, calendar=get_calendar("24x7"),
                           price_jump_threshold=0.5)
    assert report.counts["price_jump"] == n - 1
    assert len(report.details["price_jump"]) == 5
    assert len(pickle.dumps(report)) < 4_000


@settings(max_examples=60, deadline=None)
@given(st.permutations(list(range(8))), st.lists(st.integers(0, 7), max_size=4),
       st.integers(0, 7))
def test_every_shown_row_is_the_raw_row_it_names(order: list[int], copies: list[int],
                                                 bad: int) -> None:
    """Rows sorted, copied and deduplicated: each finding still names its own raw row."""
    picks = [*order, *copies]
    days = [iso(T0 + i * DAY_MS)[:10] for i in picks]
    close = [100.0 + i for i in picks]
    high = [c + (-1.0 if i == bad else 1.0) for c, i in zip(close, picks, strict=True)]
    tbl = pa.table({"ts": days, "open": [c - 0.5 for c in close], "high": high,
                    "low": [c - 2.0 for c in close], "close": close,
                    "volume": [10.0 + i for i in picks]})
    lines = np.arange(10, 10 + len(picks), dtype=np.int64)
    origin = RowOrigin(("v.csv",), np.zeros(len(picks), dtype=np.int32), lines)
    _, report, _ = conform(RawBatch(tbl, TsHints(format="%Y-%m-%d"), origin),
                           window=TimeRange(T0, T0 + 8 * DAY_MS), interval_ms=DAY_MS,
                           contract=OHLCV_V1, calendar=get_calendar("24x7"))
    shown = [t for texts in report.details.values() for t in texts]
    assert report.details["ohlc_inconsistent"][0].startswith(iso(T0 + bad * DAY_MS))
    for text in shown:
        for line in re.findall(r"\(v\.csv line (\d+)\)", text):
            k = int(line) - 10
            assert f"ts={days[k]!r} open={close[k] - 0.5!r} high={high[k]!r}" in text


# -- where the data starts and ends ----------------------------------------------------------------
def test_a_range_that_starts_before_the_data_says_where_the_data_starts(
        tmp_path: Path, snapshot: Any) -> None:
    write_csv(tmp_path / "ABC.csv", daily("2024-02-10", 51))  # to 2024-03-31
    err = refusal(tmp_path, files(tmp_path), "2024-01-01", "2024-04-01", "strict-no-jumps")
    assert err.blocking == {"gap_bars": 40}
    assert ("the data for ABC starts at 2024-02-10T00:00:00Z and ends at 2024-03-31T00:00:00Z "
            "(as the source lists it); the requested range is "
            "[2024-01-01T00:00:00Z, 2024-04-01T00:00:00Z)") in err.what
    assert err.fix is not None
    assert err.fix.startswith("move the dataset's `start` to 2024-02-10T00:00:00Z or later")
    assert str(err) == snapshot


def test_a_range_that_ends_after_the_data_says_where_the_data_ends(tmp_path: Path) -> None:
    path = tmp_path / "ABC.csv"
    write_csv(path, daily("2024-01-01", 45))  # to 2024-02-14
    err = refusal(tmp_path, lined(path), "2024-01-01", "2024-04-01", "strict-no-jumps")
    # a source that cannot list its data: what the fetched windows held
    assert ("in the requested range [2024-01-01T00:00:00Z, 2024-04-01T00:00:00Z), the data for "
            "ABC starts at 2024-01-01T00:00:00Z and ends at 2024-02-14T00:00:00Z") in err.what
    assert err.fix is not None and err.fix.startswith(
        "move the dataset's `end` to 2024-02-15T00:00:00Z or earlier")


def test_a_range_outside_the_data_says_the_source_gave_nothing_and_where_the_data_is(
        tmp_path: Path) -> None:
    write_csv(tmp_path / "ABC.csv", daily("2024-03-01", 31))
    err = refusal(tmp_path, files(tmp_path), "2023-06-01", "2023-09-01", "strict-no-jumps")
    assert ("the source gave no bars of ABC in the requested range [2023-06-01T00:00:00Z, "
            "2023-09-01T00:00:00Z); the data for ABC starts at 2024-03-01T00:00:00Z and ends "
            "at 2024-03-31T00:00:00Z") in err.what
    assert err.fix is not None and "from 2024-03-01T00:00:00Z to 2024-04-01T00:00:00Z" in err.fix


def test_gaps_inside_the_data_say_nothing_about_its_extent(tmp_path: Path) -> None:
    bars = daily("2024-01-01", 60)
    write_csv(tmp_path / "ABC.csv", bars[:20] + bars[25:])
    err = refusal(tmp_path, files(tmp_path), "2024-01-01", "2024-03-01", "strict-no-jumps")
    assert err.blocking == {"gap_bars": 5}
    assert "starts at" not in str(err) and not err.notes
    assert "gap_bars: 2024-01-21T00:00:00Z, 2024-01-22T00:00:00Z" in err.what


# -- price_jump ------------------------------------------------------------------------------------
def jumps(close: Sequence[float], threshold: float | None = 0.5) -> ConformanceReport:
    n = len(close)
    ts = pa.array([T0 + i * H for i in range(n)], type=pa.timestamp("ms", tz="UTC"))
    values = pa.array(close, type=pa.float64())
    tbl = pa.table({"ts": ts, "open": values, "high": values, "low": values, "close": values,
                    "volume": pa.array([1.0] * n)})
    _, report, _ = conform(RawBatch(tbl), window=TimeRange(T0, T0 + n * H), interval_ms=H,
                           contract=OHLCV_V1, calendar=get_calendar("24x7"),
                           price_jump_threshold=threshold)
    return report


@pytest.mark.parametrize(("close", "count"), [
    ([100.0, 150.0], 0),  # exactly the threshold: not beyond it
    ([100.0, 150.0001], 1),
    ([100.0, 50.0], 0),
    ([100.0, 49.999], 1),
    ([100.0, -1.0], 1),  # a sign flip is a move of more than 100 %
    ([100.0, math.nan, 300.0], 0),  # moves from or to NaN are not judged
    ([100.0, math.inf, 300.0], 0),
    ([0.0, 5.0], 1),  # from zero: an infinite move
    ([0.0, 0.0], 0),
    ([5.0, 0.0], 1),  # to zero: -100 %
])
def test_price_jump_threshold_boundary_and_odd_closes(close: list[float], count: int) -> None:
    report = jumps(close)
    assert report.counts["price_jump"] == count
    assert (report.samples.get("price_jump") or []) == (
        [T0 + H * next(i for i in range(1, len(close)) if _moved(close[i - 1], close[i]))]
        if count else [])


def _moved(prev: float, cur: float, threshold: float = 0.5) -> bool:
    if not (math.isfinite(prev) and math.isfinite(cur)):
        return False
    if prev == 0:
        return cur != 0
    return abs(cur / prev - 1) > threshold


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(0.0), st.just(math.nan)), min_size=0,
                max_size=30),
       st.floats(0.01, 5.0))
def test_price_jumps_are_the_moves_beyond_the_threshold(close: list[float],
                                                        threshold: float) -> None:
    report = jumps(close, threshold)
    expected = [i for i in range(1, len(close)) if _moved(close[i - 1], close[i], threshold)]
    assert report.counts["price_jump"] == len(expected)
    assert report.samples.get("price_jump", []) == [T0 + i * H for i in expected[:5]]


def test_no_threshold_checks_nothing() -> None:
    assert jumps([1.0, 100.0, 1.0], threshold=None).counts["price_jump"] == 0


def test_price_moves_of_arrays() -> None:
    jump, move = price_moves(np.array([100.0, 100.0, 0.0]), np.array([151.0, 120.0, 1.0]), 0.5)
    assert jump.tolist() == [True, False, True]
    assert move[:2] == pytest.approx([0.51, 0.2])


def test_a_jump_across_a_boundary_is_counted_against_the_last_bar_before_it(
        tmp_path: Path) -> None:
    """January has bars, February none, March opens 80 % above January's last close."""
    bars = daily("2024-01-01", 31) + daily("2024-03-01", 31, close=lambda i: 234.0 + i)
    write_csv(tmp_path / "ABC.csv", bars)
    result = run(tmp_path, files(tmp_path), "2024-01-01", "2024-04-01", "jumps-count")
    assert result.flags["price_jump"] == 1
    assert result.report.samples["price_jump"] == [to_ms("2024-03-01")]
    assert "from the previous close 130.0 at 2024-01-31T00:00:00Z" in \
        result.report.details["price_jump"][0]


def test_a_jump_within_bounds_at_the_boundary_is_not_counted(tmp_path: Path) -> None:
    write_csv(tmp_path / "ABC.csv", daily("2024-01-01", 60))
    result = run(tmp_path, files(tmp_path), "2024-01-01", "2024-03-01", "jumps-count")
    assert result.flags["price_jump"] == 0


def test_a_boundary_next_to_a_reused_partition_reads_its_last_close(tmp_path: Path) -> None:
    bars = daily("2024-01-01", 31) + daily("2024-02-01", 29, close=lambda i: 500.0 + i)
    write_csv(tmp_path / "ABC.csv", bars)
    the_engine = engine(tmp_path, files(tmp_path))
    jan = the_engine.materialize(Request(preset("jumps-count"), "ABC",
                                         TimeRange(to_ms("2024-01-01"), to_ms("2024-02-01")),
                                         "v1"))
    assert jan.flags["price_jump"] == 0
    longer = Request(preset("jumps-count"), "ABC",
                     TimeRange(to_ms("2024-01-01"), to_ms("2024-03-01")), "v1")
    both = the_engine.materialize(longer, previous=jan.snapshot)
    assert (both.fetched, both.reused) == (1, 1)
    assert both.flags["price_jump"] == 1
    assert both.report.samples["price_jump"] == [to_ms("2024-02-01")]


@pytest.mark.parametrize(("conformance", "refused"), [("jumps-block", True),
                                                      ("jumps-count", False)])
def test_price_jump_blocks_only_where_the_preset_says_so(tmp_path: Path, conformance: str,
                                                         refused: bool) -> None:
    write_csv(tmp_path / "ABC.csv", daily("2024-01-01", 31, close=lambda i: 300.0 if i == 9
                                          else 100.0))
    if refused:
        err = refusal(tmp_path, files(tmp_path), "2024-01-01", "2024-02-01", conformance)
        assert err.blocking == {"price_jump": 2}  # up to 300, and back down
    else:
        result = run(tmp_path, files(tmp_path), "2024-01-01", "2024-02-01", conformance)
        assert result.flags["price_jump"] == 2


def test_a_preset_without_a_threshold_keeps_its_digest() -> None:
    plain = preset("strict-no-jumps")
    assert "price_jump_threshold" not in plain.definition()["conformance"]
    checked = preset("jumps-count")
    assert checked.definition()["conformance"]["price_jump_threshold"] == 0.5


# -- the lock: price_jump only once counted -------------------------------------------------------
MANIFEST = """\
version: 1
presets: [catalog.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [ABC]
    start: 2024-01-01
    end: START_END
    contract_version: v1
"""


def setup_project(project: Project, conformance: str, bars: Sequence[Bar],
                  end: str = "2024-03-01") -> None:
    (project.root / "catalog.yaml").write_text(CATALOG.replace("CONFORMANCE", conformance),
                                               encoding="utf-8")
    project.write_manifest(MANIFEST.replace("START_END", end))
    write_csv(project.root / "ABC.csv", bars)


@pytest.mark.parametrize(("conformance", "close", "written"), [
    ("strict-no-jumps", lambda i: 100.0 if i != 40 else 400.0, False),  # not checked
    ("jumps-count", lambda i: 100.0 + i, False),  # checked, none found
    ("jumps-count", lambda i: 100.0 if i != 40 else 400.0, True),
])
def test_the_lock_lists_price_jump_only_once_counted(
        project: Project, conformance: str, close: Callable[[int], float],
        written: bool) -> None:
    setup_project(project, conformance, daily("2024-01-01", 60, close=close))
    expect(project.run("resolve"), 0)
    flags = read_lock(project.lock).datasets["daily"].symbols["ABC"].conformance_flags
    assert ("price_jump" in project.lock.read_text()) is written
    assert flags.get("price_jump", 0) == (2 if written else 0)


def test_the_command_line_shows_the_findings_and_the_report_has_them(project: Project) -> None:
    bars = daily("2024-01-01", 60)
    d, o, h, lo, c, v = bars[33]
    bars[33] = (d, o, lo, h, c, v)  # high and low swapped
    setup_project(project, "jumps-block", bars)
    result = expect(project.run("resolve", "--report", "report.json"), 3)
    # the values as the file's columns were read: whole-number closes as integers
    assert "ohlc_inconsistent:\n    2024-02-03T00:00:00Z ts='2024-02-03' open=132.5 " \
           "high=131.5 low=134.0 close=133 volume=1033" in result.stderr
    assert "adjustment" not in result.stderr  # not the mark of an adjusted close
    [report] = json.loads((project.root / "report.json").read_text())
    assert report["outcome"] == "failed"
    assert report["conformance"]["details"]["ohlc_inconsistent"][0].startswith(
        "2024-02-03T00:00:00Z ts='2024-02-03'")


# -- an adjusted close mapped to close ------------------------------------------------------------
YAHOO = """\
Date,Open,High,Low,Close,Adj Close,Volume
2024-01-02,187.15,188.44,183.89,185.64,148.51,82488700
2024-01-03,184.22,185.88,183.43,184.25,147.40,58414500
2024-01-04,182.15,183.09,180.88,181.91,145.53,71983600
2024-01-05,181.99,182.76,180.17,181.18,144.94,62303300
2024-01-08,182.09,185.60,181.50,185.56,148.45,59144500
"""  # a Yahoo daily CSV whose Adj Close carries years of dividends (0.8 of Close)
YAHOO_CATALOG = """\
version: 1
data_presets:
  ohlcv.yahoo.equity.1d:
    kind: ohlcv
    interval_ms: 86400000
    contract: {name: ohlcv, version: v1}
    calendar: XNYS
    source:
      name: files
      options:
        url: "{symbol}.csv"
        ts_format: "%Y-%m-%d"
        columns: {ts: Date, open: Open, high: High, low: Low, close: "CLOSE", volume: Volume}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""
YAHOO_MANIFEST = """\
version: 1
presets: [catalog.yaml]
datasets:
  stocks:
    preset: ohlcv.yahoo.equity.1d
    symbols: [AAPL]
    start: 2024-01-02
    end: 2024-01-09
    contract_version: v1
"""


@pytest.mark.parametrize(("close", "hinted"), [("Adj Close", True), ("Close", False)])
def test_an_adjusted_close_refusal_points_to_the_adjustment_setting(
        project: Project, snapshot: Any, close: str, hinted: bool) -> None:
    text = YAHOO
    if not hinted:  # the raw close, and one high below its open: not only close is off
        text = text.replace("2024-01-03,184.22,185.88", "2024-01-03,184.22,184.00")
    (project.root / "catalog.yaml").write_text(YAHOO_CATALOG.replace("CLOSE", close),
                                               encoding="utf-8")
    project.write_manifest(YAHOO_MANIFEST)
    (project.root / "AAPL.csv").write_text(text, encoding="utf-8")
    result = expect(project.run("resolve"), 3)
    assert "conformance refused the data: ohlc_inconsistent=" in result.stderr
    hint = ("if `close` is an adjusted close (mapped to a column such as `Adj Close`), map it "
            "to the raw close and set `adjustment:` on the preset to ask for adjusted bars (see "
            "docs/sources.md#adjustment)")
    assert (hint in result.stderr) is hinted
    if hinted:
        assert project.scrub(result.stderr) == snapshot


def test_presets_lists_the_price_jump_threshold(project: Project) -> None:
    setup_project(project, "jumps-count", daily("2024-01-01", 60))
    shown = expect(project.run("presets"), 0).output
    assert re.search(r"\n  jumps-count +blocks duplicate_ts; price_jump beyond 0\.5\n", shown)
    assert re.search(r"\n  strict-no-jumps +blocks duplicate_ts, ohlc_inconsistent, gap_bars\n",
                     shown)


def test_several_refused_symbols_show_their_findings_under_each(project: Project) -> None:
    setup_project(project, "jumps-block", daily("2024-01-01", 60, close=lambda i: 100.0 + i
                                                if i != 40 else 400.0))
    project.edit_manifest("symbols: [ABC]", "symbols: [ABC, XYZ]")
    write_csv(project.root / "XYZ.csv", daily("2024-01-01", 60, close=lambda i: 100.0 + i
                                              if i != 20 else 1.0))
    result = expect(project.run("resolve"), 3)
    assert "2 of 2 requests failed" in result.stderr
    assert ("  daily/ABC: conformance refused the data: price_jump=2\n"
            "      price_jump:\n"
            "        2024-02-10T00:00:00Z ts='2024-02-10' ") in result.stderr
    assert ("  daily/XYZ: conformance refused the data: price_jump=2\n"
            "      price_jump:\n"
            "        2024-01-21T00:00:00Z ts='2024-01-21' ") in result.stderr


def test_a_coverage_failure_under_a_permissive_preset_says_where_the_data_starts(
        tmp_path: Path) -> None:
    """Gaps do not block under permissive-dev, but the SLA's min_coverage does: its message
    says where the data lies too."""
    from qmtl_engine import SLAExceeded

    write_csv(tmp_path / "ABC.csv", daily("2024-02-10", 51))  # to 2024-03-31
    text = CATALOG.replace("CONFORMANCE", "permissive-dev").replace(
        "sla_preset: tolerant-partial", "sla_preset: baseline")
    strict_sla = load_registry(extra={"catalog.yaml": text}).get(DAILY)
    request = Request(strict_sla, "ABC", TimeRange(to_ms("2024-01-01"), to_ms("2024-04-01")),
                      "v1", dataset="daily")
    with pytest.raises(SLAExceeded) as caught:
        engine(tmp_path, files(tmp_path)).materialize(request)
    assert "coverage 0.5604 is below min_coverage 0.98" in caught.value.what
    assert "the data for ABC starts at 2024-02-10T00:00:00Z" in caught.value.what
    assert caught.value.fix is not None and caught.value.fix.startswith(
        "move the dataset's `start` to 2024-02-10T00:00:00Z or later; otherwise ")
