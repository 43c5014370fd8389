"""Range algebra on half-open UTC millisecond ranges, and the calendar windows that tile them."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qmtl_engine.errors import RangeError
from qmtl_engine.ranges import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    SECOND_MS,
    TimeRange,
    ceil_to,
    days_in_month,
    default_partition,
    floor_to,
    format_interval,
    iso,
    parse_interval,
    partition_windows,
    to_ms,
    window_containing,
    window_name,
)

FEW = settings(max_examples=50, deadline=None)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Small integers, so that overlaps, adjacency and empty ranges are common.
small_ranges = st.builds(
    lambda start, length: TimeRange(start, start + length),
    st.integers(-40, 60), st.integers(0, 25),
)

# Instants from 1900 to 2200, where calendars and ISO years with four digits behave.
instants = st.integers(to_ms("1900-01-01"), to_ms("2200-01-01"))


def points(ranges: list[TimeRange]) -> set[int]:
    return {ms for r in ranges for ms in range(r.start, r.end)}


def as_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


# -- TimeRange --------------------------------------------------------------------------------

def test_time_range_basics() -> None:
    r = TimeRange(10, 20)
    assert 10 in r and 19 in r and 20 not in r and 9 not in r
    assert "15" not in r and 15.0 not in r
    assert TimeRange(5, 5).empty and not r.empty
    with pytest.raises(RangeError, match="impossible range"):
        TimeRange(20, 10)
    assert r.intersect(TimeRange(20, 30)) is None
    assert r.intersect(TimeRange(15, 30)) == TimeRange(15, 20)
    assert TimeRange(0, DAY_MS).to_json() == ["1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"]
    assert TimeRange(0, DAY_MS).label() == "[1970-01-01T00:00:00Z, 1970-01-02T00:00:00Z)"


@FEW
@given(small_ranges, small_ranges)
def test_intersect_is_the_common_points(a: TimeRange, b: TimeRange) -> None:
    both = a.intersect(b)
    common = points([a]) & points([b])
    assert points([both] if both else []) == common
    assert (both is None) == (not common)
    assert a.intersect(b) == b.intersect(a)


@FEW
@given(small_ranges, st.integers(1, 12))
def test_bars_counts_grid_points(r: TimeRange, interval: int) -> None:
    assert r.bars(interval) == sum(1 for ms in range(r.start, r.end) if ms % interval == 0)


@FEW
@given(st.integers(-10**15, 10**15), st.integers(1, 10**9))
def test_floor_and_ceil(ms: int, interval: int) -> None:
    lo, hi = floor_to(ms, interval), ceil_to(ms, interval)
    assert lo % interval == 0 and hi % interval == 0
    assert lo <= ms <= hi and hi - lo in ((0,) if ms % interval == 0 else (interval,))


def test_bars_literal() -> None:
    day = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-02"))
    assert day.bars(MINUTE_MS) == 1440
    assert day.bars(HOUR_MS) == 24
    assert TimeRange(day.start + 1, day.end).bars(HOUR_MS) == 23
    assert TimeRange(day.start, day.end + 1).bars(HOUR_MS) == 25
    assert TimeRange(day.start, day.start).bars(MINUTE_MS) == 0
    assert TimeRange(day.start + 1, day.start + 2).bars(MINUTE_MS) == 0
    leap_year = TimeRange(to_ms("2024-01-01"), to_ms("2025-01-01"))
    assert leap_year.bars(DAY_MS) == 366


# -- calendar windows -------------------------------------------------------------------------

def calendar_window(ms: int, scheme: str) -> tuple[datetime, datetime]:
    """The window computed independently with datetime arithmetic."""
    dt = as_datetime(ms)
    if scheme == "day":
        start = datetime(dt.year, dt.month, dt.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    if scheme == "month":
        start = datetime(dt.year, dt.month, 1, tzinfo=UTC)
        nxt = datetime(dt.year + dt.month // 12, dt.month % 12 + 1, 1, tzinfo=UTC)
        return start, nxt
    return datetime(dt.year, 1, 1, tzinfo=UTC), datetime(dt.year + 1, 1, 1, tzinfo=UTC)


schemes = st.sampled_from(["day", "month", "year"])
SPAN_MAX = {"day": 40 * DAY_MS, "month": 3 * 366 * DAY_MS, "year": 30 * 366 * DAY_MS}


@FEW
@given(instants, schemes)
def test_window_containing(ms: int, scheme: str) -> None:
    w = window_containing(ms, scheme)  # type: ignore[arg-type]
    assert ms in w
    start, end = calendar_window(ms, scheme)
    assert (as_datetime(w.start), as_datetime(w.end)) == (start, end)
    assert window_containing(w.start, scheme) == w  # type: ignore[arg-type]
    assert window_containing(w.end - 1, scheme) == w  # type: ignore[arg-type]
    assert window_containing(w.end, scheme).start == w.end  # type: ignore[arg-type]


@FEW
@given(data=st.data(), scheme=schemes)
def test_partition_windows_tile_the_span(data: st.DataObject, scheme: str) -> None:
    start = data.draw(instants, label="start")
    end = data.draw(st.integers(start, start + SPAN_MAX[scheme]), label="end")
    span = TimeRange(start, end)
    windows = list(partition_windows(span, scheme))  # type: ignore[arg-type]
    if span.empty:
        assert windows == []
        return
    assert windows[0].start == span.start and windows[-1].end == span.end
    for a, b in itertools.pairwise(windows):
        assert a.end == b.start
    for w in windows:
        assert not w.empty
        full = window_containing(w.start, scheme)  # type: ignore[arg-type]
        assert full.start <= w.start and w.end <= full.end
        assert w == full.intersect(span)
    # only the first and the last window may be clipped
    for w in windows[1:-1]:
        assert w == window_containing(w.start, scheme)  # type: ignore[arg-type]


def test_leap_year_february() -> None:
    feb = window_containing(to_ms("2024-02-15T13:00:00Z"), "month")
    assert feb == TimeRange(to_ms("2024-02-01"), to_ms("2024-03-01"))
    assert (feb.end - feb.start) // DAY_MS == 29 == days_in_month(2024, 2)
    assert window_containing(to_ms("2024-02-29T23:59:59.999Z"), "month") == feb
    assert window_containing(to_ms("2024-02-29T12:00:00Z"), "day") == TimeRange(
        to_ms("2024-02-29"), to_ms("2024-03-01"))
    for year, days in [(2023, 28), (2000, 29), (2100, 28), (1900, 28)]:
        w = window_containing(to_ms(date(year, 2, 10)), "month")
        assert (w.end - w.start) // DAY_MS == days == days_in_month(year, 2)


def test_year_boundary() -> None:
    span = TimeRange(to_ms("2023-12-31T12:00:00Z"), to_ms("2024-01-01T12:00:00Z"))
    new_year = to_ms("2024-01-01")
    for scheme in ("day", "month", "year"):
        assert list(partition_windows(span, scheme)) == [  # type: ignore[arg-type]
            TimeRange(span.start, new_year), TimeRange(new_year, span.end)]
    year = window_containing(new_year, "year")
    assert year == TimeRange(new_year, to_ms("2025-01-01"))
    assert (year.end - year.start) // DAY_MS == 366
    assert window_containing(new_year - 1, "year") == TimeRange(to_ms("2023-01-01"), new_year)
    assert window_containing(new_year - 1, "month") == TimeRange(to_ms("2023-12-01"), new_year)


def test_windows_before_the_epoch() -> None:
    assert window_containing(-1, "day") == TimeRange(-DAY_MS, 0)
    assert window_containing(-1, "month") == TimeRange(to_ms("1969-12-01"), 0)
    assert window_containing(-1, "year") == TimeRange(to_ms("1969-01-01"), 0)


def test_window_names() -> None:
    march = window_containing(to_ms("2024-03-05"), "month")
    assert window_name(march, "month") == "2024-03"
    assert window_name(window_containing(to_ms("2024-03-05"), "day"), "day") == "2024-03-05"
    assert window_name(window_containing(to_ms("2024-03-05"), "year"), "year") == "2024"
    clipped = TimeRange(to_ms("2024-03-05"), march.end)
    assert window_name(clipped, "month") == "2024-03 [2024-03-05T00:00:00Z, 2024-04-01T00:00:00Z)"


def test_default_partition() -> None:
    assert default_partition(SECOND_MS) == "day"
    assert default_partition(MINUTE_MS) == "month"
    assert default_partition(15 * MINUTE_MS) == "month"
    assert default_partition(HOUR_MS) == "year"
    assert default_partition(DAY_MS) == "year"


# -- ISO text and intervals -------------------------------------------------------------------

@FEW
@given(st.integers(to_ms("1000-01-01"), to_ms("9999-12-31T23:59:59.999Z")))
def test_iso_round_trip(ms: int) -> None:
    text = iso(ms)
    assert text.endswith("Z")
    assert ("." in text) == (ms % 1000 != 0)
    assert to_ms(text) == ms
    assert to_ms(as_datetime(ms)) == ms


@FEW
@given(instants, st.integers(-14 * 60, 14 * 60))
def test_to_ms_of_aware_and_naive_datetimes(ms: int, offset_minutes: int) -> None:
    dt = as_datetime(ms)
    shifted = dt.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert to_ms(shifted) == ms
    assert to_ms(dt.replace(tzinfo=None)) == ms
    assert to_ms(shifted.isoformat()) == ms


def test_to_ms_literal() -> None:
    assert to_ms("1970-01-01") == 0
    assert to_ms(date(1970, 1, 2)) == DAY_MS
    assert to_ms("2024-01-01T00:00:00Z") == 1704067200000
    assert to_ms(" 2024-01-01T00:00:00.250Z ") == 1704067200250
    assert to_ms("2024-01-01T01:00:00+01:00") == 1704067200000
    assert to_ms(1704067200000) == 1704067200000
    assert iso(1704067200000) == "2024-01-01T00:00:00Z"
    assert iso(1704067200250) == "2024-01-01T00:00:00.250Z"
    assert iso(-1) == "1969-12-31T23:59:59.999Z"
    for bad in ["yesterday", "2024-13-01", "", True]:
        with pytest.raises(RangeError):
            to_ms(bad)  # type: ignore[arg-type]


units = st.sampled_from([("s", SECOND_MS), ("m", MINUTE_MS), ("h", HOUR_MS), ("d", DAY_MS),
                         ("w", 7 * DAY_MS)])


@FEW
@given(st.integers(1, 10**6), units)
def test_parse_interval(n: int, unit: tuple[str, int]) -> None:
    suffix, size = unit
    ms = parse_interval(f"{n}{suffix}")
    assert ms == n * size
    canonical = format_interval(ms)
    assert parse_interval(canonical) == ms
    assert format_interval(parse_interval(canonical)) == canonical


@FEW
@given(st.integers(1, 10**9))
def test_format_interval_round_trip(seconds: int) -> None:
    ms = seconds * SECOND_MS
    text = format_interval(ms)
    assert parse_interval(text) == ms
    # the largest unit that divides: no smaller unit is used where a larger one fits
    number = int(text[:-1])
    larger = {"s": 60, "m": 60, "h": 24, "d": 7, "w": None}[text[-1]]
    assert larger is None or number % larger != 0


def test_intervals_literal() -> None:
    assert [format_interval(parse_interval(t)) for t in ["60s", "90s", "15m", "24h", "14d"]] == [
        "1m", "90s", "15m", "1d", "2w"]
    assert format_interval(1500) == "1500ms"
    for bad in ["", "0m", "1", "m", "1M", "1.5h", "-1m", "1ms", "1 m", "1y"]:
        with pytest.raises(RangeError, match="invalid interval"):
            parse_interval(bad)


@pytest.mark.parametrize("text", ["1m\n", "1m\r\n", "\n1m", " 1m", "1m ", "1m\t"])
def test_interval_with_surrounding_whitespace_is_refused(text: str) -> None:
    with pytest.raises(RangeError, match="invalid interval"):
        parse_interval(text)


@pytest.mark.parametrize(("ms", "text"), [
    (to_ms(date(999, 6, 1)), "0999-06-01T00:00:00Z"),
    (to_ms("0001-01-01"), "0001-01-01T00:00:00Z"),
    (to_ms("0099-12-31T23:59:59.999Z"), "0099-12-31T23:59:59.999Z"),
    (to_ms("0999-12-31T23:59:59.001Z"), "0999-12-31T23:59:59.001Z"),
])
def test_iso_before_year_1000_has_four_digit_years(ms: int, text: str) -> None:
    assert iso(ms) == text
    assert to_ms(iso(ms)) == ms


@FEW
@given(st.integers(to_ms("0001-01-01"), to_ms("0999-12-31T23:59:59.999Z")))
def test_iso_round_trip_before_year_1000(ms: int) -> None:
    text = iso(ms)
    assert len(text) in (20, 24) and text[4] == "-"
    assert to_ms(text) == ms
