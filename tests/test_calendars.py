"""Calendars decide what a gap is: FX weeks across DST and Christmas, NYSE holidays and closures,
and gaps a dataset declares as accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from qmtl_engine.calendars import get_calendar
from qmtl_engine.conformance import RawBatch, conform
from qmtl_engine.contracts import OHLCV_V1
from qmtl_engine.errors import PresetError
from qmtl_engine.ranges import DAY_MS, HOUR_MS, TimeRange, iso, to_ms


def bars(times: np.ndarray) -> RawBatch:
    n = times.size
    price = 1.1 + np.arange(n) * 1e-5  # distinct bars: no repeats
    return RawBatch(pa.table({
        "ts": pa.array(times, type=pa.timestamp("ms", tz="UTC")),
        "open": price, "high": price + 1e-4, "low": price - 1e-4, "close": price,
        "volume": np.full(n, 100.0),
    }))


def gaps(times: np.ndarray, window: TimeRange, interval: int, calendar: str,
         accepted: tuple[TimeRange, ...] = ()) -> int:
    _, report, _ = conform(bars(times), window=window, interval_ms=interval, contract=OHLCV_V1,
                           calendar=get_calendar(calendar), accepted_gaps=accepted)
    return report.counts["gap_bars"]


def fx_hours(window: TimeRange) -> np.ndarray:
    """What a real FX hourly file holds: every hour the 24x5 market is open."""
    return get_calendar("24x5").expected(window, HOUR_MS)


# Three weeks around the US DST start (10 March 2024), and Christmas 2023.
DST = TimeRange(to_ms("2024-03-01"), to_ms("2024-03-22"))
XMAS = TimeRange(to_ms("2023-12-18"), to_ms("2023-12-30"))


@pytest.mark.parametrize("window", [DST, XMAS], ids=["dst", "christmas"])
def test_fx_file_has_no_unexpected_gaps_under_the_fx_calendar(window: TimeRange) -> None:
    assert gaps(fx_hours(window), window, HOUR_MS, "24x5") == 0


@pytest.mark.parametrize("window", [DST, XMAS], ids=["dst", "christmas"])
def test_the_same_file_under_24x7_counts_every_closed_hour(window: TimeRange) -> None:
    held = fx_hours(window)
    assert gaps(held, window, HOUR_MS, "24x7") == window.bars(HOUR_MS) - held.size > 0


def test_fx_week_opens_and_closes_at_17_new_york_across_dst() -> None:
    held = {iso(int(t)) for t in fx_hours(DST)}
    # before DST (EST, UTC-5): Friday 8 March closes 22:00 UTC; the last bar opens 21:00
    assert "2024-03-08T21:00:00Z" in held and "2024-03-08T22:00:00Z" not in held
    # after DST (EDT, UTC-4): Sunday 10 March opens 21:00 UTC
    assert "2024-03-10T20:00:00Z" not in held and "2024-03-10T21:00:00Z" in held
    # Friday 15 March (EDT) closes 21:00 UTC
    assert "2024-03-15T20:00:00Z" in held and "2024-03-15T21:00:00Z" not in held


def test_fx_christmas_is_closed() -> None:
    held = {iso(int(t)) for t in fx_hours(XMAS)}
    assert "2023-12-24T21:00:00Z" not in held  # Sunday, but the 25th's trading day
    assert "2023-12-25T12:00:00Z" not in held
    assert "2023-12-25T22:00:00Z" in held  # 17:00 New York on the 25th: open again


def test_an_outage_inside_a_session_is_a_gap() -> None:
    held = fx_hours(DST)
    outage = (held >= to_ms("2024-03-13T10:00:00Z")) & (held < to_ms("2024-03-13T13:00:00Z"))
    assert gaps(held[~outage], DST, HOUR_MS, "24x5") == 3


def test_accepted_gaps_are_not_counted() -> None:
    held = fx_hours(DST)
    outage = (held >= to_ms("2024-03-13T10:00:00Z")) & (held < to_ms("2024-03-13T13:00:00Z"))
    accepted = (TimeRange(to_ms("2024-03-13T10:00:00Z"), to_ms("2024-03-13T12:00:00Z")),)
    assert gaps(held[~outage], DST, HOUR_MS, "24x5", accepted) == 1  # 12:00 is not accepted


def test_nyse_daily_holidays_and_closures_are_not_gaps() -> None:
    xnys = get_calendar("XNYS")
    for start, end in [("2001-09-01", "2001-10-01"), ("2012-10-01", "2012-11-10"),
                       ("2012-12-20", "2013-01-05")]:
        window = TimeRange(to_ms(start), to_ms(end))
        sessions = xnys.expected(window, DAY_MS)
        assert gaps(sessions, window, DAY_MS, "XNYS") == 0
    sessions = {iso(int(t))[:10] for t in xnys.expected(
        TimeRange(to_ms("2001-09-01"), to_ms("2012-12-31")), DAY_MS)}
    closed = ["2001-09-11", "2001-09-12", "2001-09-13", "2001-09-14", "2012-10-29",
              "2012-10-30", "2012-12-25", "2002-01-01"]
    assert not sessions & set(closed)
    assert {"2001-09-10", "2001-09-17", "2012-10-26", "2012-10-31"} <= sessions


def test_unknown_calendar() -> None:
    with pytest.raises(PresetError, match="24x5"):
        get_calendar("MOON")


def test_accepted_gaps_flow_through_resolve_and_check(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A real outage in a vendor file blocks under strict-blocking until it is declared."""
    from qmtl_lock.check import check
    from qmtl_lock.errors import ConformanceError
    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.resolve import resolve

    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    window = TimeRange(to_ms("2024-03-04"), to_ms("2024-03-16"))
    held = fx_hours(window)
    held = held[(held < to_ms("2024-03-13T10:00:00Z")) | (held >= to_ms("2024-03-13T13:00:00Z"))]
    table = bars(held).table
    pacsv.write_csv(table.set_column(0, "ts", pa.array([iso(int(t)) for t in held])),
                     tmp_path / "EURUSD.csv")
    (tmp_path / "fx.yaml").write_text("""\
version: 1
data_presets:
  ohlcv.vendor.fx.1h:
    kind: ohlcv
    interval_ms: 3600000
    contract: {name: ohlcv, version: v1}
    calendar: 24x5
    source: {name: files, options: {url: "{symbol}.csv"}}
    sla_preset: baseline
    conformance_preset: strict-blocking
""", encoding="utf-8")
    manifest = """\
version: 1
presets: [fx.yaml]
datasets:
  fx:
    preset: ohlcv.vendor.fx.1h
    symbols: [EURUSD]
    start: 2024-03-04
    end: 2024-03-16
    contract_version: v1
"""
    (tmp_path / "seamless.yaml").write_text(manifest, encoding="utf-8")
    with pytest.raises(ConformanceError) as info:
        resolve(tmp_path / "seamless.yaml")
    assert info.value.blocking == {"gap_bars": 3}
    (tmp_path / "seamless.yaml").write_text(manifest + """\
    accepted_gaps:
      - {start: "2024-03-13T10:00:00Z", end: "2024-03-13T13:00:00Z", reason: vendor outage}
""", encoding="utf-8")
    resolve(tmp_path / "seamless.yaml")
    lock = read_lock(tmp_path / "seamless.lock")
    entry = lock.datasets["fx"]
    assert entry.symbols["EURUSD"].conformance_flags["gap_bars"] == 0
    assert entry.request["accepted_gaps"] == [{"start": "2024-03-13T10:00:00Z",
                                               "end": "2024-03-13T13:00:00Z",
                                               "reason": "vendor outage"}]
    assert 'reason: "vendor outage"' in (tmp_path / "seamless.lock").read_text()
    assert not check(tmp_path / "seamless.yaml")
    from click.testing import CliRunner

    from qmtl_lock.cli import cli

    shown = CliRunner().invoke(cli, ["show", "--gaps", "fx", "-m",
                                     str(tmp_path / "seamless.yaml")])
    assert shown.exit_code == 0, shown.output
    assert shown.output == ("fx/EURUSD  [2024-03-13T10:00:00Z, 2024-03-13T13:00:00Z)  "
                            "3 bars (accepted)\n")
    (tmp_path / "seamless.yaml").write_text(manifest, encoding="utf-8")  # withdraw it
    drift = check(tmp_path / "seamless.yaml")
    assert [d.detail.split(":")[0] for d in drift.drifts] == ["accepted_gaps changed"]
    as_json = CliRunner().invoke(cli, ["show", "--gaps", "fx", "--json", "-m",
                                       str(tmp_path / "seamless.yaml")])
    assert '"accepted": false' in as_json.output and '"bars": 3' in as_json.output
