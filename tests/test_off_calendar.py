"""Bars at times the calendar says are closed are counted as ``off_calendar_bars`` (issue 12):
backtesting.py's EURUSD sample holds two Friday 17:00 New York bars, the first hour of the 24x5
weekend. They are real rows the vendor sent, so they are kept, and strict-blocking counts them
without refusing. Data without them keeps its lock bytes: the flag is written only once counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from click.testing import CliRunner
from qmtl_engine.calendars import get_calendar
from qmtl_engine.ranges import HOUR_MS, TimeRange, iso, to_ms

from qmtl_lock import Lock
from qmtl_lock.cli import cli
from qmtl_lock.lockfile import read_lock

CATALOG = """\
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
"""
MANIFEST = """\
version: 1
presets: [fx.yaml]
datasets:
  fx:
    preset: ohlcv.vendor.fx.1h
    symbols: [EURUSD]
    start: 2024-01-01
    end: 2024-01-20
    contract_version: v1
"""
SPAN = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-20"))
# 17:00 in New York (EST) on two Fridays: the 24x5 week has closed
FRIDAY_CLOSE = [to_ms("2024-01-05T22:00:00Z"), to_ms("2024-01-12T22:00:00Z")]


def _project(root: Path, extra: list[int]) -> Path:
    hours = np.sort(np.concatenate([get_calendar("24x5").expected(SPAN, HOUR_MS),
                                    np.array(extra, dtype=np.int64)]))
    price = 1.1 + np.arange(hours.size) * 1e-5
    pacsv.write_csv(pa.table({
        "ts": [iso(int(t)) for t in hours], "open": price, "high": price + 1e-4,
        "low": price - 1e-4, "close": price, "volume": np.full(hours.size, 100.0)}),
        root / "EURUSD.csv")
    (root / "fx.yaml").write_text(CATALOG, encoding="utf-8")
    (root / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    return root / "seamless.yaml"


@pytest.fixture(autouse=True)
def _now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    monkeypatch.delenv("CI", raising=False)


def test_friday_close_bars_are_counted_kept_and_not_refused(tmp_path: Path) -> None:
    assert not np.isin(FRIDAY_CLOSE, get_calendar("24x5").expected(SPAN, HOUR_MS)).any()
    manifest = _project(tmp_path, FRIDAY_CLOSE)
    resolved = CliRunner().invoke(cli, ["resolve", "--report", str(tmp_path / "r.json"),
                                        "-m", str(manifest)])
    assert resolved.exit_code == 0, resolved.output
    entry = read_lock(tmp_path / "seamless.lock").datasets["fx"].symbols["EURUSD"]
    assert entry.conformance_flags["off_calendar_bars"] == 2
    assert entry.conformance_flags["gap_bars"] == 0
    table = Lock.open(tmp_path / "seamless.lock").load("fx", "EURUSD")
    assert np.isin(FRIDAY_CLOSE, table["ts"].cast(pa.int64()).to_numpy()).all()  # kept
    assert "2024-01-05T22:00:00Z" in (tmp_path / "r.json").read_text()  # first offenders
    shown = CliRunner().invoke(cli, ["show", "-m", str(manifest)])
    assert "off_calendar_bars=2" in shown.output


def test_data_on_the_calendar_has_no_off_calendar_entry_in_its_lock(tmp_path: Path) -> None:
    manifest = _project(tmp_path, [])
    resolved = CliRunner().invoke(cli, ["resolve", "-m", str(manifest)])
    assert resolved.exit_code == 0, resolved.output
    flags = read_lock(tmp_path / "seamless.lock").datasets["fx"].symbols["EURUSD"] \
        .conformance_flags
    assert "off_calendar_bars" not in flags and flags["gap_bars"] == 0
    assert "off_calendar_bars" not in (tmp_path / "seamless.lock").read_text()
