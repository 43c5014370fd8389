"""Conformance (DESIGN §4): one hand-built fixture per flag, exact counts, canonical output.

Every test builds a small pyarrow table, wraps it in a :class:`RawBatch` and runs
:func:`qmtl_engine.conformance.conform`. It then checks three things: the exact flag counts (every
other flag stays at zero), that the output is canonical, and which bar times were kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qmtl_engine.calendars import get_calendar
from qmtl_engine.conformance import (
    ConformanceReport,
    RawBatch,
    RowMemory,
    TsHints,
    blocking,
    conform,
    infer_epoch_unit,
    normalize_ts,
)
from qmtl_engine.contracts import OHLCV_V1, VALUE_COLUMNS
from qmtl_engine.errors import ConformanceError
from qmtl_engine.flags import FLAG_NAMES
from qmtl_engine.presets import ConformancePreset, PresetRegistry, load_registry
from qmtl_engine.ranges import DAY_MS, HOUR_MS, MINUTE_MS, TimeRange, iso, to_ms

H = HOUR_MS
D = DAY_MS
T0 = to_ms("2024-01-01")
W = TimeRange(T0, T0 + 6 * H)  # six hourly bars
ALL = [T0 + i * H for i in range(6)]
UTC_MS = pa.timestamp("ms", tz="UTC")
CANONICAL = pa.schema([("ts", UTC_MS), *((c, pa.float64()) for c in VALUE_COLUMNS)])
NY = "America/New_York"

# Flags that say the data is wrong (strict-blocking refuses them) and safe normalizations.
DATA_IS_WRONG = {
    "missing_column", "invalid_timestamp", "duplicate_ts", "off_grid_ts", "gap_bars",
    "non_finite", "negative_value", "ohlc_inconsistent", "repeated_bars",
}
SAFE = {"dtype_cast", "ts_unit_inferred", "ts_timezone_normalized", "unsorted_ts",
        "duplicate_rows", "out_of_range", "off_calendar_bars",
        "price_jump"}  # counted where a preset sets a threshold; blocks where it says so

Row = tuple[float, float, float, float, float]


# -- helpers ---------------------------------------------------------------------------------------
def bar(i: int) -> Row:
    """A consistent bar whose values differ from every other ``bar(j)``."""
    return (100.0 + i, 102.0 + i, 99.0 + i, 101.0 + i, 10.0 + i)


def table(ts: Sequence[object] | pa.Array, rows: Sequence[Row] | None = None,
          **overrides: pa.Array) -> pa.Table:
    """A raw table: ``ts`` (epoch ms or an Arrow array), OHLCV rows (default: distinct bars)."""
    n = len(ts)
    rows = [bar(i) for i in range(n)] if rows is None else rows
    assert len(rows) == n
    data: dict[str, pa.Array] = {
        "ts": ts if isinstance(ts, pa.Array) else pa.array(ts, type=UTC_MS)}
    for k, name in enumerate(VALUE_COLUMNS):
        data[name] = pa.array([r[k] for r in rows], type=pa.float64())
    data.update(overrides)
    return pa.table(data)


def run(tbl: pa.Table, *, window: TimeRange = W, interval: int = H, calendar: str = "24x7",
        hints: TsHints | None = None, memory: RowMemory | None = None,
        price_jump_threshold: float | None = None,
        ) -> tuple[pa.Table, ConformanceReport, RowMemory]:
    out, report, mem = conform(RawBatch(tbl, hints or TsHints()), window=window,
                               interval_ms=interval, contract=OHLCV_V1,
                               calendar=get_calendar(calendar), memory=memory,
                               price_jump_threshold=price_jump_threshold)
    assert_canonical(out)
    assert set(report.counts) == set(FLAG_NAMES)
    return out, report, mem


def assert_canonical(out: pa.Table) -> None:
    assert out.schema.equals(CANONICAL), out.schema
    assert out["ts"].null_count == 0
    ts = times(out)
    assert all(b > a for a, b in itertools.pairwise(ts)), "ts must be sorted and unique"


def times(out: pa.Table) -> list[int]:
    return [int(v) for v in out["ts"].cast(pa.int64()).to_pylist()]


def col(out: pa.Table, name: str) -> list[float]:
    return list(out[name].to_pylist())


def rows_of(out: pa.Table) -> list[Row]:
    return list(zip(*(col(out, c) for c in VALUE_COLUMNS), strict=True))


def naive(ms: Sequence[int], unit: str = "ms") -> pa.Array:
    return pa.array(ms, type=pa.timestamp("ms")).cast(pa.timestamp(unit))


# A user catalog naming the built-in conformance presets, so both are reached through the registry.
_CATALOG = """
version: 1
data_presets:
  ohlcv.test.strict.1h:
    kind: ohlcv
    interval_ms: 3600000
    contract: {name: ohlcv, version: v1}
    source: {name: synthetic}
    sla_preset: baseline
    conformance_preset: strict-blocking
  ohlcv.test.dev.1h:
    kind: ohlcv
    interval_ms: 3600000
    contract: {name: ohlcv, version: v1}
    source: {name: synthetic}
    sla_preset: baseline
    conformance_preset: permissive-dev
"""


@pytest.fixture(scope="module")
def registry() -> PresetRegistry:
    return load_registry(extra={"<test catalog>": _CATALOG})


@pytest.fixture(scope="module")
def strict(registry: PresetRegistry) -> ConformancePreset:
    return registry.get("ohlcv.test.strict.1h").conformance


@pytest.fixture(scope="module")
def permissive(registry: PresetRegistry) -> ConformancePreset:
    return registry.get("ohlcv.test.dev.1h").conformance


# -- one fixture per flag --------------------------------------------------------------------------
@dataclass
class Case:
    """A raw table that raises ``flag`` and what conformance must make of it."""

    build: Callable[[], pa.Table]
    counts: dict[str, int]  # exact nonzero counts
    kept: list[int]  # bar times of the output
    hints: TsHints = field(default_factory=TsHints)
    samples: list[int | str] | None = None  # expected samples of the case's flag
    calendar: str = "24x7"
    price_jump_threshold: float | None = None


def _missing_column() -> pa.Table:
    return table(ALL).drop_columns(["volume"])


def _dtype_cast() -> pa.Table:
    return table(ALL, volume=pa.array([10, 11, 12, 13, 14, 15], type=pa.int64()))


def _ts_unit_inferred() -> pa.Table:
    return table(pa.array([t // 1000 for t in ALL], type=pa.int64()))


def _ts_timezone_normalized() -> pa.Table:
    # 2024-01-01T00:00Z is 2023-12-31 19:00 in New York (EST, UTC-5)
    return table(naive([t - 5 * H for t in ALL]))


def _invalid_timestamp() -> pa.Table:
    text = [iso(t)[:16].replace("T", " ") for t in ALL]  # "2024-01-01 00:00"
    return table(pa.array([*text[:3], "not a time", None, *text[3:]]),
                 [*(bar(i) for i in range(3)), bar(90), bar(91), *(bar(i) for i in range(3, 6))])


def _unsorted_ts() -> pa.Table:
    return table(ALL[::-1], [bar(i) for i in range(6)][::-1])


def _duplicate_rows() -> pa.Table:
    rows = [bar(i) for i in range(6)]
    return table([*ALL[:3], ALL[2], *ALL[3:]], [*rows[:3], rows[2], *rows[3:]])


def _duplicate_ts() -> pa.Table:
    rows = [bar(i) for i in range(6)]
    other = (102.0, 104.0, 101.0, 103.5, 12.0)  # same time as bar 2, another close and volume
    return table([*ALL[:3], ALL[2], *ALL[3:]], [*rows[:3], other, *rows[3:]])


def _off_grid_ts() -> pa.Table:
    return table([*ALL[:3], ALL[2] + 30 * MINUTE_MS, *ALL[3:]])


def _gap_bars() -> pa.Table:
    return table([ALL[0], ALL[2], ALL[3], ALL[5]])


def _non_finite() -> pa.Table:
    rows = [bar(i) for i in range(6)]
    rows[1] = (101.0, 103.0, 100.0, math.nan, 11.0)
    rows[3] = (103.0, math.inf, 102.0, 104.0, 13.0)
    return table(ALL, rows)


def _negative_value() -> pa.Table:
    rows = [bar(i) for i in range(6)]
    rows[1] = (101.0, 103.0, -1.0, 102.0, 11.0)  # a negative low (still consistent)
    rows[4] = (104.0, 106.0, 103.0, 105.0, -5.0)  # a negative volume
    return table(ALL, rows)


def _ohlc_inconsistent() -> pa.Table:
    rows = [bar(i) for i in range(6)]
    rows[2] = (102.0, 102.5, 101.0, 103.0, 12.0)  # high below the close
    return table(ALL, rows)


def _repeated_bars() -> pa.Table:
    rows = [bar(i) for i in range(3)]
    return table(ALL, rows + rows)  # bars 0-2 copied under the times of bars 3-5


def _price_jump() -> pa.Table:
    rows = [bar(i) for i in range(6)]
    rows[3] = (103.0, 160.0, 102.0, 155.0, 13.0)  # close 155 after 103: +50.5 %
    return table(ALL, rows)  # and back to 105 after 155: -32.3 %, within 50 %


def _out_of_range() -> pa.Table:
    return table([T0 - H, *ALL, W.end])  # one bar before the window, one at its (open) end


CASES: dict[str, Case] = {
    "missing_column": Case(_missing_column, {"missing_column": 1, "non_finite": 6}, ALL),
    "dtype_cast": Case(_dtype_cast, {"dtype_cast": 6}, ALL),
    "ts_unit_inferred": Case(_ts_unit_inferred, {"ts_unit_inferred": 6}, ALL),
    "ts_timezone_normalized": Case(_ts_timezone_normalized, {"ts_timezone_normalized": 6}, ALL,
                                   hints=TsHints(timezone=NY), samples=ALL[:5]),
    "invalid_timestamp": Case(_invalid_timestamp, {"invalid_timestamp": 2}, ALL,
                              hints=TsHints(format="%Y-%m-%d %H:%M"),
                              samples=["'not a time'", "null"]),  # raw values: no time to show
    "unsorted_ts": Case(_unsorted_ts, {"unsorted_ts": 5}, ALL, samples=ALL[::-1][1:]),
    "duplicate_rows": Case(_duplicate_rows, {"duplicate_rows": 1}, ALL, samples=[ALL[2]]),
    "duplicate_ts": Case(_duplicate_ts, {"duplicate_ts": 1}, ALL, samples=[ALL[2]]),
    "off_grid_ts": Case(_off_grid_ts, {"off_grid_ts": 1}, ALL,
                        samples=[ALL[2] + 30 * MINUTE_MS]),
    "gap_bars": Case(_gap_bars, {"gap_bars": 2}, [ALL[0], ALL[2], ALL[3], ALL[5]],
                     samples=[ALL[1], ALL[4]]),
    "non_finite": Case(_non_finite, {"non_finite": 2}, ALL, samples=[ALL[1], ALL[3]]),
    "negative_value": Case(_negative_value, {"negative_value": 2}, ALL, samples=[ALL[1], ALL[4]]),
    "ohlc_inconsistent": Case(_ohlc_inconsistent, {"ohlc_inconsistent": 1}, ALL,
                              samples=[ALL[2]]),
    "repeated_bars": Case(_repeated_bars, {"repeated_bars": 3}, ALL, samples=ALL[3:]),
    "out_of_range": Case(_out_of_range, {"out_of_range": 2}, ALL, samples=[T0 - H, W.end]),
    # 24x5 keeps New Year's Day closed: six bars the calendar has no slot for, kept
    "off_calendar_bars": Case(lambda: table(ALL), {"off_calendar_bars": 6}, ALL,
                              samples=ALL[:5], calendar="24x5"),
    "price_jump": Case(_price_jump, {"price_jump": 1}, ALL, samples=[ALL[3]],
                       price_jump_threshold=0.5),
}


def test_every_flag_has_a_case() -> None:
    assert set(CASES) == set(FLAG_NAMES)
    assert set(FLAG_NAMES) == DATA_IS_WRONG | SAFE
    assert not DATA_IS_WRONG & SAFE


@pytest.mark.parametrize("flag", FLAG_NAMES)
def test_flag(flag: str) -> None:
    case = CASES[flag]
    out, report, _ = run(case.build(), hints=case.hints, calendar=case.calendar,
                         price_jump_threshold=case.price_jump_threshold)
    assert report.nonzero() == case.counts
    assert times(out) == case.kept
    if case.samples is not None:
        assert report.samples[flag] == case.samples


@pytest.mark.parametrize("flag", FLAG_NAMES)
def test_strict_blocks_wrong_data_and_passes_normalizations(
        flag: str, strict: ConformancePreset, permissive: ConformancePreset) -> None:
    case = CASES[flag]
    _, report, _ = run(case.build(), hints=case.hints, calendar=case.calendar,
                       price_jump_threshold=case.price_jump_threshold)
    expected = {f: n for f, n in case.counts.items() if f in DATA_IS_WRONG}
    assert blocking(report, strict) == expected
    assert (flag in DATA_IS_WRONG) == (flag in blocking(report, strict))
    assert blocking(report, permissive) == {}


def test_builtin_conformance_presets(strict: ConformancePreset,
                                     permissive: ConformancePreset) -> None:
    assert not strict.partial_ok
    assert set(strict.block) == DATA_IS_WRONG
    assert permissive.partial_ok
    assert permissive.block == []


def test_clean_data_has_no_flags() -> None:
    out, report, _ = run(table(ALL))
    assert report.nonzero() == {}
    assert report.summary() == "no flags"
    assert rows_of(out) == [bar(i) for i in range(6)]


# -- timestamps: formats, epoch units, zones -------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "text", "interval", "expected"),
    [
        ("%Y-%m-%d", ["2024-01-02", "2024-01-03"], D, [T0 + D, T0 + 2 * D]),
        ("%d/%m/%Y %H:%M", ["01/01/2024 03:00", "01/01/2024 04:00"], H, [T0 + 3 * H, T0 + 4 * H]),
        ("%Y%m%d %H%M%S", ["20240101 050000"], H, [T0 + 5 * H]),
        # 12-hour clock: 12-AM is midnight, 12-PM is noon
        ("%Y-%m-%d %I-%p", ["2024-01-01 12-AM", "2024-01-01 01-AM", "2024-01-01 11-AM",
                            "2024-01-01 12-PM", "2024-01-01 01-PM", "2024-01-01 11-PM"], H,
         [T0, T0 + H, T0 + 11 * H, T0 + 12 * H, T0 + 13 * H, T0 + 23 * H]),
    ],
)
def test_strings_with_strptime_format(fmt: str, text: list[str], interval: int,
                                      expected: list[int]) -> None:
    window = TimeRange(T0, T0 + 4 * D)
    out, report, _ = run(table(pa.array(text)), window=window, interval=interval,
                         hints=TsHints(format=fmt))
    assert times(out) == expected
    gaps = window.bars(interval) - len(expected)
    assert report.nonzero() == {"gap_bars": gaps}


def test_twelve_hour_clock_in_new_york() -> None:
    text = ["2023-12-31 07-PM", "2023-12-31 08-PM", "2023-12-31 09-PM", "2023-12-31 10-PM",
            "2023-12-31 11-PM", "2024-01-01 12-AM"]
    out, report, _ = run(table(pa.array(text)), hints=TsHints(format="%Y-%m-%d %I-%p",
                                                             timezone=NY))
    assert times(out) == ALL
    assert report.nonzero() == {"ts_timezone_normalized": 6}


@pytest.mark.parametrize("style", [
    "{d}T{h}:00:00", "{d} {h}:00:00", "{d}T{h}:00", "{d}T{h}:00:00.000", "{d}T{h}:00:00Z",
    "{d} {h}:00:00+00:00",
])
def test_iso_strings_without_format(style: str) -> None:
    text = [style.format(d="2024-01-01", h=f"{i:02d}") for i in range(6)]
    out, report, _ = run(table(pa.array(text)))
    assert times(out) == ALL
    assert report.nonzero() == {}


def test_iso_strings_with_an_offset_are_instants() -> None:
    text = [iso(t + 9 * H)[:19] + "+09:00" for t in ALL]  # Tokyo wall clock with its offset
    out, report, _ = run(table(pa.array(text)), hints=TsHints(timezone=NY))
    assert times(out) == ALL  # the offset wins over the zone of naive times
    assert report.nonzero() == {}


def test_date_strings_without_format() -> None:
    text = pa.array(["2024-01-01", "2024-01-02", "2024-01-03"])
    out, report, _ = run(table(text), window=TimeRange(T0, T0 + 3 * D), interval=D)
    assert times(out) == [T0, T0 + D, T0 + 2 * D]
    assert report.nonzero() == {}


def test_one_bad_iso_string_invalidates_only_its_row() -> None:
    text = ["2024-01-01 00:00:00", "2024-01-01 01:00:00", "garbage", "2024-01-01 02:00:00",
            "2024-01-01 03:00:00", "2024-01-01 04:00:00", "2024-01-01 05:00:00"]
    rows = [bar(0), bar(1), bar(50), *(bar(i) for i in range(2, 6))]
    out, report, _ = run(table(pa.array(text), rows))
    assert report.nonzero() == {"invalid_timestamp": 1}
    assert times(out) == ALL
    assert rows_of(out) == [bar(i) for i in range(6)]  # the garbage row is the one dropped


def test_mixed_iso_strings_are_parsed_per_value() -> None:
    # Every ISO shape in one column (offsets or not, fractional seconds or not), with a value
    # that is no time and a null: no single cast reads them all, so each value is parsed alone.
    text = ["2024-01-01T00:00:00Z", "2024-01-01 01:00:00", "not a time",
            "2024-01-01T03:00:00+01:00", None, "2024-01-01T03:00:00.000",
            "2024-01-01 04:00:00.000+00:00", "2024-01-01T10:00+05:00"]
    rows = [bar(0), bar(1), bar(90), bar(2), bar(91), bar(3), bar(4), bar(5)]
    out, report, _ = run(table(pa.array(text), rows))
    assert report.nonzero() == {"invalid_timestamp": 2}
    assert times(out) == ALL
    assert rows_of(out) == [bar(i) for i in range(6)]


def test_mixed_iso_strings_keep_their_fractional_seconds() -> None:
    text = pa.array(["2024-01-01T00:00:00.5", "2024-01-01 01:00:00.250+01:00",
                     "2024-01-01T00:00:00.07Z", "2024-01-01", "2024-01-01 02:00", "garbage"])
    norm = normalize_ts(text, TsHints())
    assert norm.valid.tolist() == [True] * 5 + [False]
    assert norm.ms[:5].tolist() == [T0 + 500, T0 + 250, T0 + 70, T0, T0 + 2 * H]
    assert not norm.sub_ms.any()
    out, report, _ = run(table(text))
    assert report.nonzero() == {"invalid_timestamp": 1, "off_grid_ts": 3, "gap_bars": 4}
    assert report.samples["off_grid_ts"] == [T0 + 500, T0 + 250, T0 + 70]
    assert times(out) == [T0, T0 + 2 * H]


def test_mixed_naive_iso_strings_take_the_time_zone_hint() -> None:
    # Naive values are New York wall clock, values with an offset are instants.
    text = [iso(ALL[0])[:19] + "+00:00", iso(ALL[1] - 5 * H)[:19].replace("T", " "), "garbage",
            *(iso(t - 5 * H)[:16] for t in ALL[2:])]
    out, report, _ = run(table(pa.array(text), [bar(0), bar(1), bar(9), *map(bar, range(2, 6))]),
                         hints=TsHints(timezone=NY))
    assert times(out) == ALL
    assert rows_of(out) == [bar(i) for i in range(6)]
    assert report.counts["invalid_timestamp"] == 1


def test_mixed_naive_iso_strings_count_the_time_zone_change() -> None:
    text = [*(iso(t - 5 * H)[:19].replace("T", " ") for t in ALL), "garbage"]
    _, report, _ = run(table(pa.array(text)), hints=TsHints(timezone=NY))
    assert report.nonzero() == {"invalid_timestamp": 1, "ts_timezone_normalized": 6}


def test_sub_millisecond_iso_string_is_off_grid() -> None:
    text = [iso(t)[:19] for t in ALL]
    text[3] += ".000500"  # 0.5 ms past the hour
    out, report, _ = run(table(pa.array(text)))
    assert report.nonzero() == {"off_grid_ts": 1, "gap_bars": 1}
    assert times(out) == [*ALL[:3], *ALL[4:]]


@pytest.mark.parametrize(("unit", "given_unit"), [
    ("s", False), ("ms", False), ("us", False), ("ns", False), ("s", True), ("us", True)])
def test_epoch_numbers_as_text(unit: str, given_unit: bool) -> None:
    # A CSV column read as text: digits (with blanks around them, and a null) are epochs.
    raw = [f" {int(t * UNIT_SCALE[unit])} " for t in ALL]
    text = pa.array([*raw[:2], None, *raw[2:]])
    rows = [bar(0), bar(1), bar(9), *map(bar, range(2, 6))]
    hints = TsHints(unit=unit if given_unit else None)
    out, report, _ = run(table(text, rows), hints=hints)
    assert times(out) == ALL
    assert report.nonzero() == ({"invalid_timestamp": 1} if given_unit else
                                {"invalid_timestamp": 1, "ts_unit_inferred": 6})


def test_epoch_seconds_with_a_fraction_as_text() -> None:
    text = [f"{t // 1000}.0" for t in ALL]
    text[3] = f"{ALL[3] // 1000}.25"  # a quarter second past the hour
    out, report, _ = run(table(pa.array(text)))
    assert report.nonzero() == {"ts_unit_inferred": 6, "off_grid_ts": 1, "gap_bars": 1}
    assert report.samples["off_grid_ts"] == [ALL[3] + 250]
    assert times(out) == [*ALL[:3], *ALL[4:]]


# -- timestamps in any format Python's datetime.strptime reads -------------------------------------
def python_ms(text: str | None, fmt: str) -> int | None:
    """The oracle: epoch ms of ``text`` as ``datetime.strptime`` reads it (naive = UTC)."""
    if text is None:
        return None
    try:
        dt = datetime.strptime(text, fmt)
    except ValueError:
        return None
    return to_ms(dt)


DUKASCOPY = "%d.%m.%Y %H:%M:%S.%f"  # "Gmt time" of a Dukascopy export
CDD = "%Y-%m-%d %I-%p"  # "Date" of a CryptoDataDownload hourly file
STRPTIME_CASES = [
    # (format, values): each value is expected exactly as Python reads it, or invalid
    (DUKASCOPY, ["01.01.2024 00:00:00.000", "01.01.2024 13:05:00.5", "1.1.2024 0:07:00.000",
                 "01.01.2024  00:08:00.250000", "31.12.2023 23:59:00.999"]),
    (DUKASCOPY, ["31.02.2024 00:00:00.000", "01.13.2024 00:00:00.000", "01.01.2024 00:00:00",
                 "01.01.2024 00:00:00.1234567", "", "garbage", None]),
    (CDD, ["2024-01-01 12-AM", "2024-01-01 01-AM", "2024-01-01 11-AM", "2024-01-01 12-PM",
           "2024-01-01 11-PM", "2024-01-01 11-pm", "2024-01-01 13-PM"]),
    ("%Y-%m-%d", ["2024-02-29", "2023-02-29", "2024-02-30", "2024-04-31", "2024-1-5"]),
    ("%Y-%m-%dT%H:%M:%S.%f%z", ["2024-01-01T01:00:00.250+01:00", "2024-01-01T00:00:00.5Z",
                                "2024-01-01T00:00:00.5"]),
    ("%d %b %Y %H:%M", ["01 Jan 2024 00:00", "01 jan 2024 03:00", "31 Feb 2024 00:00"]),
    ("%a %d %B %Y", ["Mon 01 January 2024", "Tue 01 January 2024", "Mon 01 Janvier 2024"]),
    ("%y%j %H", ["24001 05", "24366 00", "23366 00"]),
    ("%Y-%m-%d %H:%M:%S %Z", ["2024-01-01 00:00:00 UTC", "2024-01-01 00:00:00 GMT"]),
    ("%m/%d/%Y %H:%M:%S.%f", ["01/02/2024 03:04:05.678", "1/2/2024 3:04:05.6"]),
]


@pytest.mark.parametrize(("fmt", "values"), STRPTIME_CASES,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(STRPTIME_CASES)])
def test_strptime_formats_read_as_python_reads_them(fmt: str, values: list[str | None]) -> None:
    norm = normalize_ts(pa.array(values, type=pa.string()), TsHints(format=fmt))
    expected = [python_ms(v, fmt) for v in values]
    got = [int(ms) if ok else None for ms, ok in zip(norm.ms, norm.valid, strict=True)]
    assert got == expected


def test_fractions_finer_than_a_millisecond_are_off_grid() -> None:
    text = pa.array(["01.01.2024 00:00:00.000", "01.01.2024 00:01:00.000500",
                     "01.01.2024 00:02:00.123000", "01.01.2024 00:03:00.000001"])
    norm = normalize_ts(text, TsHints(format=DUKASCOPY))
    assert norm.valid.all()
    assert norm.sub_ms.tolist() == [False, True, False, True]
    assert norm.ms.tolist() == [T0, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS + 123, T0 + 3 * MINUTE_MS]


@settings(max_examples=80, deadline=None)
@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31)),
       st.sampled_from([DUKASCOPY, CDD, "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%Y%m%d%H%M%S.%f",
                        "%b %d %Y %I:%M:%S %p", "%A %d %B %Y %H:%M:%S.%f", "%y-%j %H:%M"]))
def test_any_time_written_with_a_format_reads_back(when: datetime, fmt: str) -> None:
    text = when.strftime(fmt)
    norm = normalize_ts(pa.array([text]), TsHints(format=fmt))
    assert bool(norm.valid[0]) and int(norm.ms[0]) == python_ms(text, fmt)


@pytest.mark.parametrize("fmt", [DUKASCOPY, "%Y-%m-%d %H:%M:%S"])
def test_impossible_dates_are_invalid_not_rolled_over(fmt: str) -> None:
    # pyarrow alone reads 30.02.2024 as 01.03.2024; the row must be refused, not moved.
    good = [datetime(2024, 2, 29, h).strftime(fmt) for h in range(3)]
    bad = datetime(2024, 2, 28, 0).strftime(fmt).replace("28", "30", 1)
    out, report, _ = run(table(pa.array([*good, bad]), [bar(i) for i in range(4)]),
                         window=TimeRange(to_ms("2024-02-29"), to_ms("2024-02-29T03:00")),
                         hints=TsHints(format=fmt))
    assert report.nonzero() == {"invalid_timestamp": 1}
    assert report.samples["invalid_timestamp"] == [repr(bad)]
    assert times(out) == [to_ms("2024-02-29") + h * H for h in range(3)]


def test_a_format_that_reads_nothing_counts_every_row_with_the_raw_values() -> None:
    text = [f"01.01.2024 {h:02d}:00:00.000" for h in range(6)]
    _, report, _ = run(table(pa.array(text)), hints=TsHints(format="%Y-%m-%d %H:%M:%S"))
    assert report.nonzero() == {"invalid_timestamp": 6, "gap_bars": 6}
    assert report.samples["invalid_timestamp"] == [repr(t) for t in text[:5]]
    assert "invalid_timestamp: 6 (first: '01.01.2024 00:00:00.000'," in report.summary()
    assert report.to_dict()["samples"]["invalid_timestamp"][0] == "'01.01.2024 00:00:00.000'"


def test_digits_with_a_format_are_not_epochs() -> None:
    text = pa.array(["20240101", "20240102", "20240103"])
    out, report, _ = run(table(text), window=TimeRange(T0, T0 + 3 * D), interval=D,
                         hints=TsHints(format="%Y%m%d"))
    assert times(out) == [T0, T0 + D, T0 + 2 * D]
    assert report.nonzero() == {}


@pytest.mark.parametrize("bad", ["", "garbage"])
def test_one_bad_epoch_text_invalidates_only_its_row(bad: str) -> None:
    text = [str(t // 1000) for t in ALL]
    out, report, _ = run(table(pa.array([*text[:2], bad, *text[2:]]),
                               [bar(0), bar(1), bar(9), *map(bar, range(2, 6))]))
    assert report.nonzero() == {"invalid_timestamp": 1, "ts_unit_inferred": 6}
    assert times(out) == ALL


@pytest.mark.parametrize("typ", [pa.date32(), pa.date64()])
def test_date_columns(typ: pa.DataType) -> None:
    days = [T0, T0 + D, T0 + 2 * D]
    dates = pa.array(days, type=pa.timestamp("ms")).cast(typ)
    out, report, _ = run(table(dates), window=TimeRange(T0, T0 + 3 * D), interval=D)
    assert times(out) == days
    assert report.nonzero() == {}


def test_date_column_in_a_time_zone_is_local_midnight() -> None:
    dates = pa.array([T0, T0 + D], type=pa.timestamp("ms")).cast(pa.date32())
    out, report, _ = run(table(dates), window=TimeRange(T0, T0 + 2 * D + 5 * H), interval=H,
                         hints=TsHints(timezone=NY))
    assert times(out) == [T0 + 5 * H, T0 + D + 5 * H]
    assert report.counts["ts_timezone_normalized"] == 2


UNIT_SCALE = {"s": 1 / 1000, "ms": 1, "us": 1000, "ns": 1_000_000}


@pytest.mark.parametrize("given_unit", [False, True], ids=["inferred", "given"])
@pytest.mark.parametrize(("unit", "dtype"), [
    (unit, dtype) for dtype in (pa.int64(), pa.float64()) for unit in ("s", "ms", "us", "ns")
    if not (unit == "ns" and dtype == pa.float64())  # float64 cannot hold epoch ns exactly
])
def test_epoch_units(unit: str, given_unit: bool, dtype: pa.DataType) -> None:
    raw = [int(t * UNIT_SCALE[unit]) for t in ALL]
    hints = TsHints(unit=unit if given_unit else None)
    out, report, _ = run(table(pa.array(raw, type=pa.int64()).cast(dtype)), hints=hints)
    assert times(out) == ALL
    assert report.nonzero() == ({} if given_unit else {"ts_unit_inferred": 6})


@pytest.mark.parametrize(("value", "unit"), [
    (1_704_067_200, "s"), (1_704_067_200_000, "ms"), (1_704_067_200_000_000, "us"),
    (1_704_067_200_000_000_000, "ns"), (100_000_000, "s"),  # 1973 in seconds
])
def test_infer_epoch_unit(value: int, unit: str) -> None:
    assert infer_epoch_unit(np.array([value, value + 1], dtype=np.int64)) == unit


def test_given_unit_wins_over_magnitude() -> None:
    # Seconds of 2024 read as milliseconds are January 1970: outside the window, all dropped.
    raw = pa.array([t // 1000 for t in ALL], type=pa.int64())
    out, report, _ = run(table(raw), hints=TsHints(unit="ms"))
    assert out.num_rows == 0
    assert report.nonzero() == {"out_of_range": 6, "gap_bars": 6}


def test_sub_millisecond_epoch_is_off_grid() -> None:
    raw = [t * 1000 for t in ALL]
    raw[3] += 500  # 0.5 ms past the hour
    out, report, _ = run(table(pa.array(raw, type=pa.int64())), hints=TsHints(unit="us"))
    assert report.nonzero() == {"off_grid_ts": 1, "gap_bars": 1}
    assert times(out) == [*ALL[:3], *ALL[4:]]
    assert report.samples["gap_bars"] == [ALL[3]]


@pytest.mark.parametrize(("month", "offset_h"), [("2024-01-15", 5), ("2024-07-15", 4)],
                         ids=["EST", "EDT"])
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_naive_times_in_new_york(month: str, offset_h: int, unit: str) -> None:
    start = to_ms(month)
    utc = [start + i * H for i in range(6)]
    local = naive([t - offset_h * H for t in utc], unit)
    out, report, _ = run(table(local), window=TimeRange(start, start + 6 * H),
                         hints=TsHints(timezone=NY))
    assert times(out) == utc
    assert report.nonzero() == {"ts_timezone_normalized": 6}


def test_naive_strings_in_new_york() -> None:
    text = pa.array([iso(t - 5 * H)[:19] for t in ALL])  # "2023-12-31T19:00:00", ...
    out, report, _ = run(table(text), hints=TsHints(timezone=NY))
    assert times(out) == ALL
    assert report.nonzero() == {"ts_timezone_normalized": 6}


def test_aware_times_in_another_zone_are_converted() -> None:
    aware = pa.array(ALL, type=pa.timestamp("ms", tz=NY))  # same instants, another zone
    out, report, _ = run(table(aware))
    assert times(out) == ALL
    assert report.nonzero() == {"ts_timezone_normalized": 6}


@pytest.mark.parametrize("unit", ["s", "us", "ns"])
def test_utc_times_in_other_units_are_not_flagged(unit: str) -> None:
    ts = pa.array(ALL, type=UTC_MS).cast(pa.timestamp(unit, tz="UTC"))
    out, report, _ = run(table(ts))
    assert times(out) == ALL
    assert report.nonzero() == {}


def test_naive_times_are_utc_by_default() -> None:
    out, report, _ = run(table(naive(ALL)))
    assert times(out) == ALL
    assert report.nonzero() == {}


def test_dst_fold_in_new_york_takes_the_earlier_instant() -> None:
    # 2024-11-03 01:00 local happens twice (EDT, then EST): the earlier instant is taken.
    window = TimeRange(to_ms("2024-11-03T04:00:00Z"), to_ms("2024-11-03T08:00:00Z"))
    local = naive([to_ms(f"2024-11-03T{h:02d}:00:00") for h in (0, 1, 2)])
    out, report, _ = run(table(local), window=window, hints=TsHints(timezone=NY))
    assert times(out) == [to_ms(f"2024-11-03T{h:02d}:00:00Z") for h in (4, 5, 7)]
    assert report.nonzero() == {"ts_timezone_normalized": 3, "gap_bars": 1}
    assert report.samples["gap_bars"] == [to_ms("2024-11-03T06:00:00Z")]


def test_dst_gap_in_new_york_is_off_grid() -> None:
    # 2024-03-10 02:00 local does not exist; it lands just before the jump and is dropped.
    window = TimeRange(to_ms("2024-03-10T06:00:00Z"), to_ms("2024-03-10T08:00:00Z"))
    local = naive([to_ms(f"2024-03-10T{h:02d}:00:00") for h in (1, 2, 3)])
    out, report, _ = run(table(local), window=window, hints=TsHints(timezone=NY))
    assert times(out) == [window.start, window.start + H]
    assert report.nonzero() == {"ts_timezone_normalized": 3, "off_grid_ts": 1}
    assert report.samples["off_grid_ts"] == [window.start + H - 1]


# -- order and duplicates --------------------------------------------------------------------------
def test_one_swapped_pair_is_one_descent() -> None:
    rows = [bar(i) for i in range(6)]
    order = [0, 1, 3, 2, 4, 5]
    out, report, _ = run(table([ALL[i] for i in order], [rows[i] for i in order]))
    assert report.nonzero() == {"unsorted_ts": 1}
    assert report.samples["unsorted_ts"] == [ALL[2]]
    assert rows_of(out) == rows  # every row travels with its own time


def test_descending_file_order_keeps_rows_with_their_times() -> None:
    out, report, _ = run(_unsorted_ts())
    assert rows_of(out) == [bar(i) for i in range(6)]
    assert report.nonzero() == {"unsorted_ts": 5}


def test_identical_duplicates_vs_conflicting_duplicates(strict: ConformancePreset) -> None:
    rows = [bar(i) for i in range(6)]
    changed = (103.0, 105.0, 102.0, 104.5, 13.0)
    ts = [ALL[0], ALL[1], ALL[1], ALL[1], ALL[2], ALL[3], ALL[3], ALL[4], ALL[5]]
    raw = [rows[0], rows[1], rows[1], rows[1], rows[2], rows[3], changed, rows[4], rows[5]]
    out, report, _ = run(table(ts, raw))
    assert report.nonzero() == {"duplicate_rows": 2, "duplicate_ts": 1}
    assert report.samples == {"duplicate_rows": [ALL[1], ALL[1]], "duplicate_ts": [ALL[3]]}
    assert times(out) == ALL
    assert rows_of(out)[3] == changed  # the last row of a conflicting timestamp is kept
    assert blocking(report, strict) == {"duplicate_ts": 1}


def test_identical_duplicates_only_do_not_block(strict: ConformancePreset) -> None:
    _, report, _ = run(_duplicate_rows())
    assert report.nonzero() == {"duplicate_rows": 1}
    assert blocking(report, strict) == {}


def test_duplicates_compare_canonical_bits() -> None:
    # -0.0 equals 0.0 and NaN equals NaN, so these copies are identical rows.
    a = (100.0, 101.0, 99.0, 100.5, -0.0)
    b = (100.0, 101.0, 99.0, 100.5, 0.0)
    c = (100.0, 101.0, 99.0, math.nan, 5.0)
    ts = [ALL[0], ALL[0], ALL[1], ALL[1]]
    out, report, _ = run(table(ts, [a, b, c, c]), window=TimeRange(T0, T0 + 2 * H))
    assert report.nonzero() == {"duplicate_rows": 2, "non_finite": 1}
    assert times(out) == ALL[:2]


def test_duplicates_in_descending_order_keep_the_later_row_of_the_file() -> None:
    first = bar(0)
    second = (100.0, 103.0, 99.0, 102.0, 50.0)
    out, report, _ = run(table([ALL[1], ALL[0], ALL[0]], [bar(1), first, second]),
                         window=TimeRange(T0, T0 + 2 * H))
    assert report.nonzero() == {"unsorted_ts": 1, "duplicate_ts": 1}
    assert rows_of(out) == [second, bar(1)]


# -- values ----------------------------------------------------------------------------------------
def test_negative_zero_nan_and_inf() -> None:
    rows = [bar(i) for i in range(6)]
    rows[0] = (100.0, 102.0, 99.0, 101.0, -0.0)  # -0.0 volume: not negative
    rows[1] = (101.0, 103.0, 100.0, math.nan, 11.0)  # NaN close
    rows[2] = (102.0, math.inf, 101.0, 103.0, 12.0)  # +inf high
    rows[3] = (103.0, 105.0, -math.inf, 104.0, 13.0)  # -inf low: non-finite and negative
    rows[4] = (104.0, 106.0, 103.0, 105.0, math.nan)  # NaN volume
    out, report, _ = run(table(ALL, rows))
    assert report.nonzero() == {"non_finite": 4, "negative_value": 1}
    assert report.samples["non_finite"] == ALL[1:5]
    assert report.samples["negative_value"] == [ALL[3]]
    assert times(out) == ALL  # flagged, not dropped
    volume = col(out, "volume")
    assert volume[0] == 0.0
    assert math.isnan(col(out, "close")[1])
    assert col(out, "high")[2] == math.inf


@pytest.mark.parametrize(
    "row",
    [
        pytest.param((1.0, 3.0, -1.0, 2.0, 12.0), id="low"),
        pytest.param((102.0, 104.0, 101.0, 103.0, -1.0), id="volume"),
        pytest.param((-2.0, 3.0, -4.0, 2.0, 12.0), id="open_and_low"),
        pytest.param((-2.0, -1.0, -4.0, -3.0, -12.0), id="every_column"),
    ],
)
def test_negative_values_count_rows(row: Row) -> None:
    rows = [bar(i) for i in range(6)]
    rows[2] = row  # consistent, so only negative_value is raised, once per row
    out, report, _ = run(table(ALL, rows))
    assert report.nonzero() == {"negative_value": 1}
    assert report.samples["negative_value"] == [ALL[2]]
    assert rows_of(out)[2] == row  # kept as is


@pytest.mark.parametrize(
    "row",
    [
        pytest.param((100.0, 101.0, 99.0, 102.0, 1.0), id="high_below_close"),
        pytest.param((102.0, 101.0, 99.0, 100.0, 1.0), id="high_below_open"),
        pytest.param((100.0, 103.0, 100.5, 102.0, 1.0), id="low_above_open"),
        pytest.param((102.0, 103.0, 100.5, 100.0, 1.0), id="low_above_close"),
        pytest.param((100.0, 99.0, 101.0, 100.0, 1.0), id="high_below_low"),  # all three at once
    ],
)
def test_ohlc_inconsistent_conditions(row: Row) -> None:
    rows = [bar(i) for i in range(6)]
    rows[4] = row
    out, report, _ = run(table(ALL, rows))
    assert report.nonzero() == {"ohlc_inconsistent": 1}  # counted once per row
    assert report.samples["ohlc_inconsistent"] == [ALL[4]]
    assert rows_of(out)[4] == row  # kept


def test_ohlc_boundaries_are_consistent() -> None:
    rows = [(100.0, 102.0, 99.0, 102.0, 1.0),  # high == close
            (100.0, 100.0, 98.0, 99.0, 1.0),  # high == open
            (100.0, 101.0, 100.0, 100.5, 1.0),  # low == open
            (100.0, 100.0, 100.0, 100.0, 1.0)]  # a flat bar with volume
    _, report, _ = run(table(ALL[:4], rows), window=TimeRange(T0, T0 + 4 * H))
    assert report.nonzero() == {}


# -- repeated bars ---------------------------------------------------------------------------------
def test_flat_zero_volume_fills_are_not_repeated_bars() -> None:
    rows = [bar(0), bar(1), *[(101.0, 101.0, 101.0, 101.0, 0.0)] * 4]  # a closed market
    out, report, _ = run(table(ALL, rows))
    assert report.nonzero() == {}
    assert times(out) == ALL


def test_flat_bars_with_volume_that_repeat_are_repeated_bars() -> None:
    rows = [bar(0), bar(1), *[(101.0, 101.0, 101.0, 101.0, 3.0)] * 4]
    _, report, _ = run(table(ALL, rows))
    assert report.nonzero() == {"repeated_bars": 3}


def test_block_copied_under_later_times() -> None:
    rows = [bar(i) for i in range(12)]
    rows[8:11] = rows[2:5]  # a vendor re-sent three bars under later times
    window = TimeRange(T0, T0 + 12 * H)
    out, report, _ = run(table([T0 + i * H for i in range(12)], rows), window=window)
    assert report.nonzero() == {"repeated_bars": 3}
    assert report.samples["repeated_bars"] == [T0 + 8 * H, T0 + 9 * H, T0 + 10 * H]
    assert out.num_rows == 12  # flagged, kept


def test_same_prices_other_volume_are_not_repeated() -> None:
    rows = [bar(i) for i in range(6)]
    rows[5] = (*rows[0][:4], 99.0)
    _, report, _ = run(table(ALL, rows))
    assert report.nonzero() == {}


def test_repeated_bars_across_partitions() -> None:
    first = TimeRange(T0, T0 + 6 * H)
    second = TimeRange(T0 + 6 * H, T0 + 12 * H)
    rows1 = [bar(i) for i in range(6)]
    _, report1, memory = run(table(ALL, rows1), window=first)
    assert report1.nonzero() == {}
    assert isinstance(memory, RowMemory)
    assert memory.hashes.size == 6

    rows2 = [rows1[4], rows1[5], *(bar(i) for i in range(6, 10))]  # starts with a copy
    ts2 = [second.start + i * H for i in range(6)]
    _, with_memory, memory2 = run(table(ts2, rows2), window=second, memory=memory)
    assert with_memory.nonzero() == {"repeated_bars": 2}
    assert with_memory.samples["repeated_bars"] == ts2[:2]
    _, without_memory, _ = run(table(ts2, rows2), window=second)
    assert without_memory.nonzero() == {}

    # The memory of the second partition carries its rows into the third.
    third = TimeRange(second.end, second.end + 6 * H)
    ts3 = [third.start + i * H for i in range(6)]
    rows3 = [*(bar(i) for i in range(20, 25)), rows2[-1]]
    _, report3, _ = run(table(ts3, rows3), window=third, memory=memory2)
    assert report3.nonzero() == {"repeated_bars": 1}


def test_flat_fills_across_partitions_are_not_repeated() -> None:
    flat = (101.0, 101.0, 101.0, 101.0, 0.0)
    _, _, memory = run(table(ALL, [bar(0), *[flat] * 5]))
    ts2 = [W.end + i * H for i in range(6)]
    _, report, _ = run(table(ts2, [flat] * 6), window=TimeRange(W.end, W.end + 6 * H),
                       memory=memory)
    assert report.nonzero() == {}


def _naive_repeats(out: pa.Table, before: set[Row]) -> tuple[list[int], set[Row]]:
    """repeated_bars by definition, one row at a time: the times of the rows (in the output's
    time order) whose values an earlier row or the previous partition had, and this partition's
    values (the next one's memory)."""
    mine: set[Row] = set()
    repeated = []
    for ts, row in zip(times(out), rows_of(out), strict=True):
        if row[0] == row[1] == row[2] == row[3] and row[4] == 0:
            continue  # a flat zero-volume fill
        if row in mine or row in before:
            repeated.append(ts)
        mine.add(row)
    return repeated, mine


_VALUES = st.sampled_from([1.0, 2.0, 3.0, 0.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), _VALUES, _VALUES, _VALUES, _VALUES,
                          st.sampled_from([0.0, 1.0])), max_size=24),
       st.lists(st.tuples(st.integers(0, 11), _VALUES, _VALUES, _VALUES, _VALUES,
                          st.sampled_from([0.0, 1.0])), max_size=24))
def test_repeated_bars_match_their_definition(first: list[tuple[int, ...]],
                                              second: list[tuple[int, ...]]) -> None:
    """Rows with few distinct values, in any order, with duplicates: the sorted-hash shortcut
    counts and samples exactly what a row-by-row reading of the definition finds, within a
    partition and across the boundary."""
    windows = (TimeRange(T0, T0 + 12 * H), TimeRange(T0 + 12 * H, T0 + 24 * H))
    memory, before = None, set[Row]()
    for window, raw in zip(windows, (first, second), strict=True):
        tbl = table([window.start + r[0] * H for r in raw],
                    [tuple(float(v) for v in r[1:]) for r in raw])  # type: ignore[misc]
        out, report, memory = run(tbl, window=window, memory=memory)
        expected, before = _naive_repeats(out, before)
        assert report.counts["repeated_bars"] == len(expected)
        assert report.samples.get("repeated_bars", []) == expected[:5]

# -- window and calendar ---------------------------------------------------------------------------
def test_rows_out_of_the_window_are_dropped() -> None:
    ts = [T0 - D, T0 - 1 * H, *ALL, W.end, W.end + D]
    out, report, _ = run(table(ts))
    assert report.nonzero() == {"out_of_range": 4}
    assert report.samples["out_of_range"] == [T0 - D, T0 - H, W.end, W.end + D]
    assert times(out) == ALL
    assert rows_of(out) == [bar(i) for i in range(2, 8)]


def test_out_of_range_rows_are_not_checked() -> None:
    bad = (1.0, 0.5, 2.0, math.nan, -3.0)  # wrong in every way, but outside the window
    out, report, _ = run(table([T0 - H, *ALL], [bad, *(bar(i) for i in range(6))]))
    assert report.nonzero() == {"out_of_range": 1}
    assert times(out) == ALL


def test_gaps_under_24x7() -> None:
    window = TimeRange(T0, T0 + 2 * D)  # a weekend does not matter around the clock
    kept = [T0 + i * H for i in range(48) if i not in (5, 6, 7, 30)]
    out, report, _ = run(table(kept), window=window)
    assert report.nonzero() == {"gap_bars": 4}
    assert report.samples["gap_bars"] == [T0 + 5 * H, T0 + 6 * H, T0 + 7 * H, T0 + 30 * H]
    assert times(out) == kept


def test_empty_batch_is_all_gaps() -> None:
    out, report, _ = run(table([]))
    assert out.num_rows == 0
    assert report.nonzero() == {"gap_bars": 6}


def test_unaligned_window_expects_grid_points_inside_it() -> None:
    window = TimeRange(T0 + 30 * MINUTE_MS, T0 + 3 * H + 30 * MINUTE_MS)
    out, report, _ = run(table(ALL[1:4]), window=window)
    assert report.nonzero() == {}
    assert times(out) == ALL[1:4]


# NYSE sessions from 2001-09-04 to 2001-09-28: closed on weekends and 11-14 September 2001.
SEPT_2001 = [to_ms(f"2001-09-{d:02d}") for d in (4, 5, 6, 7, 10, 17, 18, 19, 20, 21,
                                                   24, 25, 26, 27, 28)]
SEPT_WINDOW = TimeRange(to_ms("2001-09-01"), to_ms("2001-10-01"))


def test_no_gaps_across_weekends_and_closures_under_xnys() -> None:
    out, report, _ = run(table(SEPT_2001), window=SEPT_WINDOW, interval=D, calendar="XNYS")
    assert report.nonzero() == {}
    assert times(out) == SEPT_2001


def test_missing_session_is_a_gap_under_xnys() -> None:
    kept = [t for t in SEPT_2001 if t != to_ms("2001-09-17")]
    _, report, _ = run(table(kept), window=SEPT_WINDOW, interval=D, calendar="XNYS")
    assert report.nonzero() == {"gap_bars": 1}
    assert report.samples["gap_bars"] == [to_ms("2001-09-17")]


def test_same_bars_under_24x7_count_weekends_and_closures() -> None:
    _, report, _ = run(table(SEPT_2001), window=SEPT_WINDOW, interval=D)
    assert report.nonzero() == {"gap_bars": 30 - 15}
    assert report.samples["gap_bars"] == [to_ms(f"2001-09-{d:02d}") for d in (1, 2, 3, 8, 9)]


def test_holidays_are_not_gaps_under_xnys() -> None:
    # Thanksgiving (22 Nov) and Christmas (25 Dec) 2001
    window = TimeRange(to_ms("2001-11-19"), to_ms("2001-12-29"))
    sessions = [t for t in range(window.start, window.end, D)
                if datetime.fromtimestamp(t / 1000, tz=UTC).weekday() < 5
                and t not in (to_ms("2001-11-22"), to_ms("2001-12-25"))]
    _, report, _ = run(table(sessions), window=window, interval=D, calendar="XNYS")
    assert report.nonzero() == {}
    _, report24, _ = run(table(sessions), window=window, interval=D)
    assert report24.counts["gap_bars"] == (window.end - window.start) // D - len(sessions)


# -- columns and dtypes ----------------------------------------------------------------------------
def test_numeric_columns_of_other_types_are_cast() -> None:
    tbl = table(ALL, open=pa.array([100, 101, 102, 103, 104, 105], type=pa.int32()),
                volume=pa.array(["10", "11", "12", "13", "14", "15"]))
    out, report, _ = run(tbl)
    assert report.nonzero() == {"dtype_cast": 12}
    assert col(out, "open") == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]
    assert col(out, "volume") == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]


def test_null_values_become_nan() -> None:
    tbl = table(ALL, close=pa.array([101.0, None, 103.0, 104.0, 105.0, 106.0]))
    out, report, _ = run(tbl)
    assert report.nonzero() == {"non_finite": 1}
    assert math.isnan(col(out, "close")[1])


def test_optional_columns_are_kept_and_extra_columns_dropped() -> None:
    tbl = table(ALL, trades=pa.array([1, 2, 3, 4, 5, 6]), vendor_note=pa.array(["x"] * 6))
    out, report, _ = conform(RawBatch(tbl), window=W, interval_ms=H, contract=OHLCV_V1,
                             calendar=get_calendar("24x7"))
    assert out.column_names == ["ts", *VALUE_COLUMNS, "trades"]
    assert out.schema.field("trades").type == pa.float64()
    assert report.nonzero() == {"dtype_cast": 6}


def test_missing_timestamp_column_raises() -> None:
    with pytest.raises(ConformanceError) as info:
        run(table(ALL).drop_columns(["ts"]))
    assert info.value.blocking == {"missing_column": 1}
    assert info.value.report.counts["missing_column"] == 1


@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
def test_value_text_that_is_not_a_number_becomes_nan(typ: pa.DataType) -> None:
    text = ["101", "n/a", " 103.5 ", "", None, "-"]
    tbl = table(ALL, close=pa.array(text, type=typ),
                high=pa.array(["200", "1E3", "+2.5e2", ".5e3", "300.", "400"], type=typ))
    out, report, _ = run(tbl)
    # Two text columns are cast; the four close values that are not numbers are NaN.
    assert report.nonzero() == {"dtype_cast": 12, "non_finite": 4}
    assert report.samples["non_finite"] == [ALL[1], ALL[3], ALL[4], ALL[5]]
    close = col(out, "close")
    assert close[0] == 101.0 and close[2] == 103.5
    assert all(math.isnan(v) for v in (close[1], close[3], close[4], close[5]))
    assert col(out, "high") == [200.0, 1000.0, 250.0, 500.0, 300.0, 400.0]
    assert times(out) == ALL


def test_infinity_and_nan_text_are_numbers() -> None:
    tbl = table(ALL, volume=pa.array(["inf", "-Infinity", "NaN", "nan", "10", "1e-3"]))
    out, report, _ = run(tbl)
    assert report.nonzero() == {"dtype_cast": 6, "non_finite": 4, "negative_value": 1}
    volume = col(out, "volume")
    assert volume[:2] == [math.inf, -math.inf] and volume[4:] == [10.0, 0.001]
    assert math.isnan(volume[2]) and math.isnan(volume[3])


def test_value_column_of_a_type_that_cannot_be_cast_is_all_nan() -> None:
    tbl = table(ALL, close=pa.array([[1.0]] * 6))
    out, report, _ = run(tbl)
    assert report.nonzero() == {"dtype_cast": 6, "non_finite": 6}
    assert all(math.isnan(v) for v in col(out, "close"))


def test_unreadable_timestamp_column_raises_naming_the_cause() -> None:
    # The cause is appended to the message after the error is built; str() must still show it.
    tbl = table(pa.array([True] * 6))
    with pytest.raises(ConformanceError) as info:
        run(tbl)
    assert info.value.blocking == {"invalid_timestamp": 6}
    assert "cannot read timestamps of type bool" in str(info.value)
    assert str(info.value) == info.value.render()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=6, max_size=15).filter(lambda xs: set(xs) ==
                                                                    set(range(6))))
def test_any_order_and_copies_of_clean_rows_give_the_same_table(picks: list[int]) -> None:
    out, report, _ = run(table([ALL[i] for i in picks], [bar(i) for i in picks]))
    assert rows_of(out) == [bar(i) for i in range(6)]
    assert times(out) == ALL
    assert set(report.nonzero()) <= {"unsorted_ts", "duplicate_rows"}
    assert report.counts["duplicate_rows"] == len(picks) - 6


# -- reports and the message users read ------------------------------------------------------------
def _many_blocking_flags() -> pa.Table:
    ts = [*ALL[:3], ALL[2], ALL[4], ALL[5], ALL[5] + 15 * MINUTE_MS, W.end + H]
    rows = [
        bar(0),
        (101.0, 103.0, 100.0, 102.0, -4.0),  # negative volume
        bar(2),
        (102.0, 101.0, 103.0, 102.5, 12.0),  # conflicting duplicate, inconsistent too
        (104.0, 106.0, 103.0, math.nan, 14.0),  # NaN close
        bar(0),  # repeats bar 0
        bar(7),  # off grid
        bar(8),  # out of the window
    ]
    return table(ts, rows, volume=pa.array([int(r[4]) for r in rows], type=pa.int64()))


def test_report_summary_snapshot(snapshot, strict: ConformancePreset) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = run(_many_blocking_flags())
    assert report.nonzero() == {
        "dtype_cast": 8, "duplicate_ts": 1, "gap_bars": 1, "negative_value": 1,
        "non_finite": 1, "off_grid_ts": 1, "ohlc_inconsistent": 1, "out_of_range": 1,
        "repeated_bars": 1,
    }
    assert report.summary() == snapshot


def test_conformance_error_message_snapshot(snapshot, strict: ConformancePreset) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = run(_many_blocking_flags())
    blocked = blocking(report, strict)
    assert set(blocked) == {"duplicate_ts", "gap_bars", "negative_value", "non_finite",
                            "off_grid_ts", "ohlc_inconsistent", "repeated_bars"}
    err = ConformanceError(report, blocking=blocked, symbol="BTCUSDT", partition=W.label(),
                           preset="strict-blocking")
    text = str(err)
    assert text == snapshot
    assert "duplicate_ts=1" in text and "permissive-dev" in text
    assert err.exit_code == 3


def test_report_merge_and_dict() -> None:
    _, a, _ = run(_duplicate_ts())
    _, b, _ = run(_gap_bars())
    a.merge(b)
    assert a.nonzero() == {"duplicate_ts": 1, "gap_bars": 2}
    data = a.to_dict()
    assert list(data["counts"]) == sorted(FLAG_NAMES)
    assert data["samples"] == {"duplicate_ts": ["2024-01-01T02:00:00Z"],
                               "gap_bars": ["2024-01-01T01:00:00Z", "2024-01-01T04:00:00Z"]}
    assert ConformanceReport.from_counts(a.nonzero()).nonzero() == a.nonzero()


def test_samples_keep_the_first_five() -> None:
    window = TimeRange(T0, T0 + 24 * H)
    _, report, _ = run(table([T0]), window=window)
    assert report.counts["gap_bars"] == 23
    assert report.samples["gap_bars"] == [T0 + i * H for i in range(1, 6)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=60),
       st.lists(st.integers(0, 2**64 - 1), max_size=60), st.integers(0, 40))
def test_common_keys_are_the_intersection_of_two_sets_of_row_hashes(
        a: list[int], b: list[int], shared: int) -> None:
    from qmtl_engine.conformance import common_keys

    b = b + a[:shared]  # some values in both
    left = np.unique(np.array(a, dtype=np.uint64))
    right = np.unique(np.array(b, dtype=np.uint64))
    got = common_keys(left, right)
    assert got.dtype == np.uint64
    assert got.tolist() == sorted(set(a) & set(b))


@pytest.mark.parametrize(("first", "aware"), [
    ("2024-01-01T00:00:00Z", True), ("2024-01-01 10:00+02:00", True),
    ("2024-01-01T10:00:00.123-0500", True), ("2024-01-01", False),
    ("2024-01-01T00:00:00", False), ("2024-01-01 23:59", False)])
def test_the_likely_whole_column_cast_is_tried_first(first: str, aware: bool) -> None:
    from qmtl_engine.conformance import _ends_with_offset

    assert _ends_with_offset(pa.array([None, first, "junk"])) is aware
