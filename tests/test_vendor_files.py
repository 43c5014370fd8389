"""Vendor exports through the real command line: each file in its vendor's exact layout, written
on disk, declared with a user preset of the files source, resolved with ``qmtl-lock resolve``.

What must hold (issue 9, "nothing wrong gets pinned"): a vendor's timestamp format in Python
strptime codes reads every row; a row whose time cannot be read is counted as
``invalid_timestamp`` (refused by strict-blocking) and named by its raw text; a format that reads
nothing fails instead of locking an empty table; and one file is never pinned as several symbols.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import Project, expect
from qmtl_engine.contracts import VALUE_COLUMNS
from qmtl_engine.ranges import HOUR_MS, MINUTE_MS, TimeRange, to_ms
from test_sources import fmt_time, synthetic_bars

from qmtl_lock import Lock
from qmtl_lock.lockfile import read_lock

CATALOG = """\
version: 1
data_presets:
  {pid}:
    kind: ohlcv
    interval_ms: {interval}
    stabilization_bars: 0
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    partition: day
    source: {{name: files, options: {options}}}
    sla_preset: baseline
    conformance_preset: {conformance}
"""

MANIFEST = """\
version: 1
presets: [presets.yaml]
datasets:
  {dataset}:
    preset: {pid}
    symbols: {symbols}
    start: {start}
    end: {end}
    contract_version: v1
"""


@dataclass(frozen=True)
class Vendor:
    """One vendor's export layout: file name, banner, header, time format, row order."""

    pid: str
    interval: int
    filename: str  # with {symbol}
    banner: str
    header: str
    ts_format: str
    columns: dict[str, str]
    newest_first: bool = False
    symbol_column: str | None = None

    def text(self, symbol: str, bars: pa.Table) -> str:
        cols = [bars[c].to_pylist() for c in ("ts", *VALUE_COLUMNS)]
        rows = list(zip(*cols, strict=True))
        lines = [self.banner] if self.banner else []
        lines.append(self.header)
        for ts, *values in reversed(rows) if self.newest_first else rows:
            when = fmt_time(ts, self.ts_format)
            if "%f" in self.ts_format:  # strftime writes 6 digits; the vendor writes 3
                when = when[:-3]
            fields = [when, *(repr(v) for v in values)]
            if self.symbol_column:  # CryptoDataDownload: Unix ms first, the symbol third
                fields = [str(ts), fields[0], symbol, *fields[1:]]
            lines.append(",".join(fields))
        return "\n".join(lines) + "\n"

    def options(self, root: Path, **overrides: object) -> dict[str, object]:
        opts: dict[str, object] = {"url": str(root / "vendor" / self.filename),
                                   "skip_rows": 1 if self.banner else 0,
                                   "columns": self.columns, "ts_format": self.ts_format}
        if self.symbol_column:
            opts["symbol_column"] = self.symbol_column
        opts.update(overrides)
        return opts


OHLCV = {"open": "Open", "high": "High", "low": "Low", "close": "Close"}
DUKASCOPY = Vendor(
    pid="ohlcv.dukascopy.fx.1m", interval=MINUTE_MS, filename="{symbol}_Candlestick_1_M.csv",
    banner="", header="Gmt time,Open,High,Low,Close,Volume",
    ts_format="%d.%m.%Y %H:%M:%S.%f", columns={"ts": "Gmt time", **OHLCV, "volume": "Volume"})
CDD = Vendor(
    pid="ohlcv.cdd.crypto.1h", interval=HOUR_MS, filename="Bitstamp_{symbol}_1h.csv",
    banner="https://www.CryptoDataDownload.com",
    header="Unix Timestamp,Date,Symbol,Open,High,Low,Close,Volume BTC",
    ts_format="%Y-%m-%d %I-%p", columns={"ts": "Date", **OHLCV, "volume": "Volume BTC"},
    newest_first=True, symbol_column="Symbol")
SPAN = {DUKASCOPY.pid: TimeRange(to_ms("2024-01-01"), to_ms("2024-01-03")),
        CDD.pid: TimeRange(to_ms("2024-01-01"), to_ms("2024-01-08"))}


def setup(project: Project, vendor: Vendor, *, conformance: str = "strict-blocking",
          symbols: tuple[str, ...] = ("EURUSD",), edit: Callable[[str], str] = lambda t: t,
          combined: str | None = None, **options: object) -> dict[str, pa.Table]:
    """Write the vendor files (one per symbol, and with ``combined`` also one holding every
    symbol), the catalog and the manifest; return the bars of each symbol."""
    span = SPAN[vendor.pid]
    folder = project.root / "vendor"
    folder.mkdir(exist_ok=True)
    expected, texts = {}, []
    for i, symbol in enumerate(symbols):
        bars = synthetic_bars(symbol, span, vendor.interval, seed=20 + i)
        expected[symbol] = bars
        texts.append(edit(vendor.text(symbol, bars)))
        (folder / vendor.filename.replace("{symbol}", symbol)).write_text(texts[-1])
    if combined:
        skip = 1 + bool(vendor.banner)
        (folder / combined).write_text(texts[0] + "".join(
            t.split("\n", skip)[skip] for t in texts[1:]))
    (project.root / "presets.yaml").write_text(CATALOG.format(
        pid=vendor.pid, interval=vendor.interval, conformance=conformance,
        options=json.dumps(vendor.options(project.root, **options))))
    project.write_manifest(MANIFEST.format(
        dataset="fx", pid=vendor.pid, symbols=json.dumps(list(symbols)),
        start=fmt_time(span.start, "%Y-%m-%d"), end=fmt_time(span.end, "%Y-%m-%d")))
    return expected


def flags(project: Project, symbol: str) -> dict[str, int]:
    entry = read_lock(project.lock).datasets["fx"].symbols[symbol]
    return {k: v for k, v in entry.conformance_flags.items() if v}


# -- every row of a vendor's export is read ------------------------------------------------------
@pytest.mark.parametrize("conformance", ["strict-blocking", "permissive-dev"])
@pytest.mark.parametrize(("vendor", "symbol", "expected_flags"), [
    (DUKASCOPY, "EURUSD", {}),
    (CDD, "BTCUSD", {"unsorted_ts": 7 * 23}),  # newest first: 23 descents per day
], ids=["dukascopy", "cryptodatadownload"])
def test_vendor_export_locks_every_row(project: Project, vendor: Vendor, symbol: str,
                                       expected_flags: dict[str, int], conformance: str) -> None:
    bars = setup(project, vendor, conformance=conformance, symbols=(symbol,))[symbol]
    expect(project.run("resolve"), 0)
    assert flags(project, symbol) == expected_flags
    table = Lock.open(project.lock).load("fx", symbol)
    assert table.num_rows == bars.num_rows == SPAN[vendor.pid].bars(vendor.interval)
    assert table["ts"].cast(pa.int64()).equals(bars["ts"])
    for c in VALUE_COLUMNS:
        assert table[c].equals(bars[c]), c


# -- a row whose time cannot be read is counted and named ----------------------------------------
BROKEN = {"02.01.2024 10:00:00.000": "02.01.2024 10:00:00:000",  # a colon for the dot
          "02.01.2024 10:01:00.000": "30.02.2024 10:01:00.000"}  # no such day


def break_two(text: str) -> str:
    for good, bad in BROKEN.items():
        assert good in text
        text = text.replace(good, bad)
    return text


def test_unreadable_times_block_a_strict_preset_naming_their_text(project: Project) -> None:
    setup(project, DUKASCOPY, edit=break_two)
    result = expect(project.run("resolve"), 3)
    assert "conformance refused the data: gap_bars=2, invalid_timestamp=2" in result.output
    # each unreadable row as the file has it: its raw time and values
    assert "invalid_timestamp:\n    ts='02.01.2024 10:00:00:000' open=" in result.output
    assert "\n    ts='30.02.2024 10:01:00.000' open=" in result.output
    assert "partition 2024-01-02" in result.output
    assert not project.lock.exists()


def test_unreadable_times_are_counted_by_a_permissive_preset(project: Project) -> None:
    bars = setup(project, DUKASCOPY, conformance="permissive-dev", edit=break_two)["EURUSD"]
    expect(project.run("resolve", "--report", "report.json"), 0)
    assert flags(project, "EURUSD") == {"invalid_timestamp": 2, "gap_bars": 2}
    [report] = json.loads((project.root / "report.json").read_text())
    assert report["conformance"]["samples"]["invalid_timestamp"] == list(
        map(repr, BROKEN.values()))
    assert Lock.open(project.lock).load("fx", "EURUSD").num_rows == bars.num_rows - 2


@pytest.mark.parametrize("conformance", ["strict-blocking", "permissive-dev"])
def test_a_ts_format_that_reads_no_row_fails_instead_of_locking_nothing(
        project: Project, conformance: str) -> None:
    setup(project, DUKASCOPY, conformance=conformance, ts_format="%Y-%m-%d %H:%M:%S")
    result = expect(project.run("resolve"), 3)
    assert ("no timestamp in the file could be read with ts_format '%Y-%m-%d %H:%M:%S'; first "
            "values: '01.01.2024 00:00:00.000', '01.01.2024 00:01:00.000'") in result.output
    assert "EURUSD_Candlestick_1_M.csv" in result.output and "set `ts_format`" in result.output
    assert not project.lock.exists()


# -- one file is never pinned as several symbols -------------------------------------------------
@pytest.mark.parametrize("command", [["resolve"], ["resolve", "--dry-run"], ["resolve", "--json"]])
@pytest.mark.parametrize(("vendor", "url", "symbols", "code"), [
    (DUKASCOPY, "EURUSD_Candlestick_1_M.csv", ("EURUSD", "GBPUSD"), 2),  # one file for both
    (DUKASCOPY, "EURUSD_Candlestick_1_M.csv", ("EURUSD",), 0),  # one symbol: its own file
    (DUKASCOPY, "{symbol}_Candlestick_1_M.csv", ("EURUSD", "GBPUSD"), 0),
    (CDD, "all_1h.csv", ("BTCUSD", "ETHUSD"), 0),  # one file, told apart by symbol_column
], ids=["one-file-two-symbols", "one-file-one-symbol", "symbol-in-url", "symbol-column"])
def test_a_files_preset_must_tell_its_symbols_apart(
        project: Project, vendor: Vendor, url: str, symbols: tuple[str, ...], code: int,
        command: list[str]) -> None:
    bars = setup(project, vendor, symbols=symbols, combined="all_1h.csv",
                 url=str(project.root / "vendor" / url))
    result = expect(project.run(*command), code)
    if code == 2:
        text = result.output
        assert "dataset 'fx' asks for 2 symbols (EURUSD, GBPUSD)" in text
        assert "reads the same data for every symbol" in text
        assert "ohlcv.dukascopy.fx.1m" in text
        assert "add {symbol} to the files source's `url`" in text
        assert "`symbol_column`" in text
        assert not project.lock.exists()
        assert not project.objects.exists()  # refused before anything was fetched
    elif command == ["resolve"]:
        lock = Lock.open(project.lock)
        for symbol in symbols:
            assert lock.load("fx", symbol)["close"].equals(bars[symbol]["close"]), symbol
