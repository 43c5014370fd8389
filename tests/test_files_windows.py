"""The files source reads per window (issue 11) and says where each row was read (issue 12).

What must hold:

- a window's rows are exactly those a read of the whole glob attributes to it: files in path
  order, rows in file order, a row with an unreadable time in its neighbour's window, columns
  typed as one concatenation of every file types them (:func:`whole_read` is that read, as the
  source did it before it read per window);
- each file is read once, however many windows it serves, and an extension reads only the
  files that can hold its new windows, from an index that a changed file cannot fool;
- ``RawBatch.origin`` names, for every row, the file and the line (CSV: physical line, banner,
  header and empty lines counted; JSON: record position; Parquet: row position) where it is.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import Project, expect
from qmtl_engine.calendars import get_calendar
from qmtl_engine.conformance import RawBatch, conform, normalize_ts
from qmtl_engine.contracts import OHLCV_V1, TS
from qmtl_engine.errors import SourceError
from qmtl_engine.fingerprint import partition_digest
from qmtl_engine.ranges import TimeRange, partition_windows, to_ms
from qmtl_engine.sources import make_source
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.files_session import ROW
from test_sources import VENDOR_COLUMNS, csv_text, fmt_time, synthetic_bars

H, D = 3_600_000, 86_400_000
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vendors"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The index lives in this test's own cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("QMTL_LOCK_CACHE", str(cache))
    return cache


def files(options: dict[str, object]) -> Source:
    return make_source("files", options, base_dir="/nonexistent")


def whole_read(src: Source, symbol: str) -> tuple[pa.Table, np.ndarray]:
    """Every file of the symbol's glob read whole and concatenated, and the time that decides
    each row's window: the files source's reading before it read per window."""
    url = src.url_for(symbol)  # type: ignore[attr-defined]
    fs, pattern = fsspec.core.url_to_fs(url)
    paths = sorted(fs.glob(pattern)) if set("*?[") & set(pattern) else [pattern]
    tables = []
    for path in paths:
        with fs.open(path, "rb", compression="infer") as f:
            schema, blocks = src.blocks(f, symbol, path, stream=False)  # type: ignore[attr-defined]
            tables.append(pa.concat_tables([schema.empty_table(), *blocks]).drop_columns([ROW]))
    table = pa.concat_tables(tables, promote_options="permissive")
    norm = normalize_ts(table[TS], src.hints)  # type: ignore[attr-defined]
    ms = pa.array(norm.ms, mask=~norm.valid)
    times = pc.fill_null_backward(pc.fill_null_forward(ms)).to_numpy(zero_copy_only=False)
    return table, np.asarray(times, dtype=np.int64)


def assert_same_windows(src: Source, symbol: str, windows: list[TimeRange], interval: int,
                        ) -> None:
    table, times = whole_read(src, symbol)
    for window in windows:
        got = src.fetch(symbol, window, interval)
        want = table.filter(pa.array((times >= window.start) & (times < window.end)))
        assert got.table.schema.remove_metadata() == want.schema.remove_metadata(), window
        assert got.table.to_pydict() == want.to_pydict(), window
        assert got.origin is not None and len(got.origin.line) == got.table.num_rows
        a = conform(got, window=window, interval_ms=interval, contract=OHLCV_V1,
                    calendar=get_calendar("24x7"))
        b = conform(RawBatch(want, got.hints), window=window, interval_ms=interval,
                    contract=OHLCV_V1, calendar=get_calendar("24x7"))
        assert partition_digest(a[0]) == partition_digest(b[0]), window
        assert a[1].nonzero() == b[1].nonzero(), window


def months(start: str, end: str) -> list[TimeRange]:
    return list(partition_windows(TimeRange(to_ms(start), to_ms(end)), "month"))


def days(start: str, end: str) -> list[TimeRange]:
    return list(partition_windows(TimeRange(to_ms(start), to_ms(end)), "day"))


def write_months(folder: Path, first: str, count: int, interval: int = H, *,
                 text: Callable[[pa.Table, int], str] | None = None) -> None:
    """One CSV per month of ``interval`` bars, named YYYY-MM.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    spans = months(first, "2100-01-01")[:count]
    for i, span in enumerate(spans):
        bars = synthetic_bars("AAA", span, interval, seed=i)
        body = text(bars, i) if text else csv_text(bars)
        (folder / f"{fmt_time(span.start, '%Y-%m')}.csv").write_text(body)


def break_times(body: str, rows: list[int]) -> str:
    """``body`` with the times of the data rows at ``rows`` (0-based) made unreadable."""
    lines = body.splitlines()
    for r in rows:
        rest = lines[1 + r].split(",", 1)[1]
        lines[1 + r] = f"n/a,{rest}"
    return "\n".join(lines) + "\n"


# -- the same rows as a whole read ------------------------------------------------------------
def test_monthly_glob_daily_and_monthly_windows(tmp_path: Path) -> None:
    write_months(tmp_path / "AAA", "2024-01-01", 3)
    src = files({"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS})
    windows = [*months("2023-12-01", "2024-05-01"), *days("2024-01-30", "2024-02-02"),
               TimeRange(to_ms("2024-01-15"), to_ms("2024-03-10"))]
    assert_same_windows(src, "AAA", windows, H)


def test_unreadable_times_take_a_neighbours_window_across_files(tmp_path: Path) -> None:
    def text(bars: pa.Table, i: int) -> str:
        body = csv_text(bars)
        n = bars.num_rows
        return {0: break_times(body, [0, 1, n - 1]),  # before the first readable time of all
                1: break_times(body, list(range(n))),  # a whole file: the last of January
                2: break_times(body, [0, 5, 6])}[i]  # leading: the last time of file 1 (Jan)

    write_months(tmp_path / "AAA", "2024-01-01", 3, text=text)
    src = files({"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS})
    assert_same_windows(src, "AAA", [*months("2024-01-01", "2024-04-01"),
                                     *days("2024-01-31", "2024-02-01"),
                                     *days("2024-03-01", "2024-03-02")], H)
    jan = src.fetch("AAA", months("2024-01-01", "2024-02-01")[0], H).table
    assert jan.num_rows == 31 * 24 + 29 * 24 + 1  # February's and March's first row join it


def test_files_that_disagree_on_types_and_columns(tmp_path: Path) -> None:
    def text(bars: pa.Table, i: int) -> str:
        if i == 0:  # integer volumes
            bars = bars.set_column(5, "volume", pc.cast(pc.round(bars["volume"]), pa.int64()))
        body = csv_text(bars)
        if i == 2:  # no volume at all
            body = "\n".join(line.rsplit(",", 1)[0] for line in body.splitlines()) + "\n"
        return body

    write_months(tmp_path / "AAA", "2024-01-01", 3, text=text)
    src = files({"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS})
    assert_same_windows(src, "AAA", months("2024-01-01", "2024-04-01"), H)
    assert src.fetch("AAA", months("2024-01-01", "2024-02-01")[0], H).table.schema.field(
        "volume").type == pa.float64()  # as the glob together types it


def test_one_file_in_several_blocks_newest_first(tmp_path: Path) -> None:
    # ~9 MB of CSV: several blocks of the streamed read; unreadable rows sprinkled through it.
    span = TimeRange(to_ms("2024-01-01"), to_ms("2024-07-01"))
    bars = synthetic_bars("AAA", span, 60_000)
    body = csv_text(bars[::-1])
    n = bars.num_rows
    body = break_times(body, [0, 1, *range(7, n, 9973), n - 1])
    (tmp_path / "AAA.csv").write_text(body)
    assert len(body) > 4 * (1 << 20)
    src = files({"url": f"{tmp_path}/{{symbol}}.csv", "columns": VENDOR_COLUMNS})
    assert_same_windows(src, "AAA", [*months("2024-01-01", "2024-07-01"),
                                     *days("2024-03-30", "2024-04-02")], 60_000)


def test_a_later_block_wider_than_the_first_is_read_as_read_csv_reads_it(tmp_path: Path) -> None:
    span = TimeRange(to_ms("2024-01-01"), to_ms("2024-04-01"))
    bars = synthetic_bars("AAA", span, 60_000)
    bars = bars.set_column(5, "volume", pc.cast(pc.round(bars["volume"]), pa.int64()))
    body = csv_text(bars)
    body = body[:-2] + ".5\n"  # the very last volume is not an integer
    (tmp_path / "AAA.csv").write_text(body)
    src = files({"url": f"{tmp_path}/{{symbol}}.csv", "columns": VENDOR_COLUMNS})
    assert_same_windows(src, "AAA", months("2024-01-01", "2024-04-01"), 60_000)
    last = src.fetch("AAA", months("2024-03-01", "2024-04-01")[0], 60_000).table
    assert last.schema.field("volume").type == pa.float64()


def test_long_file_gz_banner_and_final_bars_only(tmp_path: Path) -> None:
    lines = ["Exported by VendorX", "", "Date,Ticker,Open,High,Low,Close,Volume,Final"]
    tables = {s: synthetic_bars(s, TimeRange(to_ms("2024-01-01"), to_ms("2024-01-05")), H,
                                seed=i) for i, s in enumerate(("AAA", "BBB"))}
    for i in range(tables["AAA"].num_rows):
        for s, t in tables.items():
            row = t.slice(i, 1).to_pylist()[0]
            final = "0" if i % 17 == 3 else "1"
            lines.append(",".join([fmt_time(row["ts"]), s, *(repr(row[c]) for c in
                                                              ("open", "high", "low", "close",
                                                               "volume")), final]))
        if i % 25 == 0:
            lines.append("")  # an empty line now and then
    (tmp_path / "all.csv.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    src = files({"url": f"{tmp_path}/all.csv.gz", "columns": VENDOR_COLUMNS, "skip_rows": 1,
                 "symbol_column": "Ticker", "complete_column": "Final"})
    for s in tables:
        assert_same_windows(src, s, days("2024-01-01", "2024-01-06"), H)
    assert_lines_hold_rows(src, "BBB", days("2024-01-01", "2024-01-06"), H,
                           lambda path: gzip.decompress(Path(path).read_bytes()).decode())


def test_parquet_and_json_globs(tmp_path: Path) -> None:
    for i, span in enumerate(months("2024-01-01", "2024-04-01")):
        bars = synthetic_bars("AAA", span, H, seed=i)
        pq.write_table(bars, tmp_path / f"AAA-{i}.parquet", row_group_size=100)
        records = [[t, str(o), h, lo, c, v] for t, o, h, lo, c, v in zip(
            *(bars[c].to_pylist() for c in bars.column_names), strict=True)][::-1]
        (tmp_path / f"AAA-{i}.json").write_text(json.dumps({"data": records}))
    pq_src = files({"url": f"{tmp_path}/{{symbol}}-*.parquet", "format": "parquet"})
    js_src = files({"url": f"{tmp_path}/{{symbol}}-*.json", "format": "json", "records": "data",
                    "columns": {"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4,
                                "volume": 5}})
    windows = [*months("2024-01-01", "2024-04-01"), *days("2024-02-28", "2024-03-02")]
    for src in (pq_src, js_src):
        assert_same_windows(src, "AAA", windows, H)
    batch = js_src.fetch("AAA", days("2024-02-01", "2024-02-02")[0], H)
    assert batch.origin is not None
    assert set(batch.origin.files) == {f"{tmp_path}/AAA-1.json"}
    # newest first: February 1st is the end of the list
    assert batch.origin.line.tolist() == list(range(28 * 24 + 1, 29 * 24 + 1))
    batch = pq_src.fetch("AAA", days("2024-03-02", "2024-03-03")[0], H)
    assert batch.origin is not None and batch.origin.line.tolist() == list(range(25, 49))


# -- where each row was read ------------------------------------------------------------------
def assert_lines_hold_rows(src: Source, symbol: str, windows: list[TimeRange], interval: int,
                           text: Callable[[str], str] = lambda p: Path(p).read_text()) -> int:
    """Every row's origin line holds that row's time and close as the vendor wrote them."""
    checked = 0
    for window in windows:
        batch = src.fetch(symbol, window, interval)
        assert batch.origin is not None
        files_text = {i: text(p).replace("\r\n", "\n").split("\n")
                      for i, p in enumerate(batch.origin.files)}
        for k in range(batch.table.num_rows):
            line = files_text[int(batch.origin.file_index[k])][int(batch.origin.line[k]) - 1]
            row = {c: batch.table[c][k].as_py() for c in batch.table.column_names}
            assert str(row["ts"]) in line and str(row["close"]) in line, (line, row)
            checked += 1
    return checked


def test_lines_of_a_cryptodatadownload_file(tmp_path: Path) -> None:
    # banner, header skipped with it, columns by position, newest first
    src = files({"url": str(FIXTURES / "cryptodatadownload" / "Binance_{symbol}_1h.csv"),
                 "skip_rows": 2, "header": False, "ts_format": "%Y-%m-%d %I-%p",
                 "columns": {"ts": 1, "open": 3, "high": 4, "low": 5, "close": 6, "volume": 7}})
    window = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-03"))
    assert assert_lines_hold_rows(src, "BTCUSDT", [window], H) == 48
    batch = src.fetch("BTCUSDT", window, H)
    assert batch.origin is not None
    assert batch.origin.line[:2].tolist() == [3, 4]  # banner and header are lines 1 and 2
    assert batch.origin.describe(47) == "Binance_BTCUSDT_1h.csv line 50"


def test_lines_of_a_headed_csv_with_banner_lines(tmp_path: Path) -> None:
    bars = synthetic_bars("AAA", TimeRange(to_ms("2024-01-01"), to_ms("2024-01-02")), H)
    (tmp_path / "AAA.csv").write_text("VendorX\r\nPrices in USD\r\n"
                                      + csv_text(bars).replace("\n", "\r\n"))
    src = files({"url": f"{tmp_path}/{{symbol}}.csv", "columns": VENDOR_COLUMNS,
                 "skip_rows": 2})
    batch = src.fetch("AAA", days("2024-01-01", "2024-01-02")[0], H)
    assert batch.origin is not None and batch.origin.line.tolist() == list(range(4, 28))
    assert assert_lines_hold_rows(src, "AAA", days("2024-01-01", "2024-01-02"), H) == 24


def test_lines_of_a_dukascopy_glob_and_yahoo() -> None:
    duka = files({"url": str(FIXTURES / "dukascopy" / "{symbol}_Candlestick_1_Hour_BID_*.csv"),
                  "columns": {"ts": "Gmt time", "open": "Open", "high": "High", "low": "Low",
                              "close": "Close", "volume": "Volume"},
                  "ts_format": "%d.%m.%Y %H:%M:%S.%f"})
    week = days("2024-01-07", "2024-01-13")
    assert assert_lines_hold_rows(duka, "EURUSD", week, H) == 120
    yahoo = files({"url": str(FIXTURES / "yahoo" / "{symbol}.csv"), "ts_format": "%Y-%m-%d",
                   "columns": {"ts": "Date", "open": "Open", "high": "High", "low": "Low",
                               "close": "Close", "volume": "Volume"}})
    jan = [TimeRange(to_ms("2024-01-01"), to_ms("2024-02-01"))]
    assert assert_lines_hold_rows(yahoo, "MSFT", jan, D) == 9
    batch = yahoo.fetch("MSFT", jan[0], D)
    assert batch.origin is not None and batch.origin.describe(0) == "MSFT.csv line 2"


def test_lines_of_json_dumps_with_open_bars_left_out() -> None:
    okx = files({"url": str(FIXTURES / "okx" / "{symbol}_1H*.json"), "format": "json",
                 "records": "data", "complete_column": 8, "ts_unit": "ms",
                 "columns": {"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}})
    doc = json.loads((FIXTURES / "okx" / "BTC-USDT_1H.json").read_text())["data"]
    span = TimeRange(to_ms("2023-07-01"), to_ms("2023-08-01"))
    batch = okx.fetch("BTC-USDT", span, H)
    assert batch.origin is not None
    for k in range(batch.table.num_rows):
        record = doc[int(batch.origin.line[k]) - 1]
        assert (record[0], record[4], record[8]) == (
            batch.table["ts"][k].as_py(), batch.table["close"][k].as_py(), "1")
    assert batch.table.num_rows == len(doc) - 1  # the open bar, at position 1, is left out
    assert 1 not in batch.origin.line.tolist()
    kraken = files({"url": str(FIXTURES / "kraken" / "{symbol}_60*.json"), "format": "json",
                    "records": "result.{symbol}", "complete_until": "result.last",
                    "columns": {"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4,
                                "volume": 6}})
    [path] = (FIXTURES / "kraken").glob("XXBTZUSD_60*.json")
    doc = json.loads(path.read_text())["result"]["XXBTZUSD"]
    batch = kraken.fetch("XXBTZUSD", span, H)
    assert batch.origin is not None
    assert [doc[int(n) - 1][0] for n in batch.origin.line] == batch.table["ts"].to_pylist()
    assert batch.table.num_rows == len(doc) - 1  # the still-open last bar


# -- each file read once; an extension reads only what can hold its new windows ---------------
class Reads(logging.Handler):
    """The files the files source says it read (its INFO line per file read)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("files source read file="):
            self.paths.append(text.split("file=", 1)[1].split(" rows=")[0])


@pytest.fixture
def reads() -> Reads:
    handler = Reads()
    log = logging.getLogger("qmtl_lock.files")
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)
    log.setLevel(old)


def age(folder: Path, seconds: float = 60) -> None:
    """Give every file an mtime well in the past (vendor files are not written as we read)."""
    past = time.time() - seconds
    for p in folder.rglob("*"):
        os.utime(p, (past, past))


def test_each_file_is_read_once_over_all_its_windows(tmp_path: Path, reads: Reads) -> None:
    write_months(tmp_path / "AAA", "2024-01-01", 3)
    src = files({"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS})
    for window in days("2024-01-01", "2024-04-01"):
        src.fetch("AAA", window, H)
    assert sorted(reads.paths) == sorted(str(p) for p in (tmp_path / "AAA").glob("*.csv"))


def test_threads_share_the_reads(tmp_path: Path, reads: Reads) -> None:
    write_months(tmp_path / "AAA", "2024-01-01", 4)
    options = {"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS}
    windows = days("2024-01-01", "2024-05-01")
    got: dict[int, int] = {}

    def work(k: int) -> None:
        src = files(options)  # one source per thread, as the engine builds them
        for i, window in enumerate(windows):
            if i % 2 == k:
                got[i] = src.fetch("AAA", window, H).table.num_rows

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(len(windows))) and set(got.values()) == {24}
    assert len(reads.paths) == 4


def test_an_extension_reads_only_the_files_that_can_hold_new_windows(
        tmp_path: Path, reads: Reads, own_cache: Path) -> None:
    write_months(tmp_path / "AAA", "2023-01-01", 13)  # Jan 2023 .. Jan 2024
    age(tmp_path / "AAA")
    options = {"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS}
    first = files(options)
    for window in months("2023-01-01", "2024-01-01"):
        first.fetch("AAA", window, H)
    assert len(reads.paths) == 13
    assert len(list(own_cache.glob("files-index/*/*.json"))) == 13
    del first
    reads.paths.clear()
    # the vendor adds February: a new process would build a new source
    write_months(tmp_path / "new", "2024-02-01", 1)
    shutil.move(tmp_path / "new" / "2024-02.csv", tmp_path / "AAA" / "2024-02.csv")
    again = files(options)
    window = days("2024-02-10", "2024-02-11")[0]
    assert again.fetch("AAA", window, H).table.num_rows == 24
    assert reads.paths == [str(tmp_path / "AAA" / "2024-02.csv")]  # not indexed yet: read
    assert again.fetch("AAA", days("2024-01-31", "2024-02-01")[0], H).table.num_rows == 24
    assert len(reads.paths) == 2  # January's file, which can hold that window
    assert_same_windows(again, "AAA", [window], H)


def test_a_changed_file_is_read_again_whatever_the_index_says(tmp_path: Path,
                                                              reads: Reads) -> None:
    write_months(tmp_path / "AAA", "2024-01-01", 2)
    age(tmp_path / "AAA")
    options = {"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS}
    files(options).fetch("AAA", days("2024-01-01", "2024-01-02")[0], H)
    # The vendor restates January: same size (one digit changed), and an mtime just as old.
    jan = tmp_path / "AAA" / "2024-01.csv"
    stat = jan.stat()
    body = jan.read_text()
    line = body.splitlines()[1]
    digit = line[-1]
    changed = body.replace(line, line[:-1] + ("1" if digit != "1" else "2"), 1)
    assert len(changed) == len(body)
    # Moved into February's days, so the index's old span would hide it from that window.
    feb_time = fmt_time(to_ms("2024-02-10"))
    changed = changed.replace(line.split(",")[0], feb_time, 1)
    jan.write_text(changed)
    os.utime(jan, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    reads.paths.clear()
    got = files(options).fetch("AAA", days("2024-02-10", "2024-02-11")[0], H)
    assert str(jan) in reads.paths
    assert got.table.num_rows == 25 and got.origin is not None
    assert str(jan) in got.origin.files


def test_a_file_written_just_now_is_not_indexed(tmp_path: Path, own_cache: Path) -> None:
    write_months(tmp_path / "AAA", "2024-01-01", 1)  # mtime: now (racy: may change unseen)
    files({"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS}).fetch(
        "AAA", days("2024-01-01", "2024-01-02")[0], H)
    assert not list(own_cache.glob("files-index/*/*.json"))


@pytest.mark.parametrize("damage", ["garbage", "other key", "wrong types"])
def test_an_index_that_cannot_be_trusted_is_ignored(tmp_path: Path, own_cache: Path,
                                                    reads: Reads, damage: str) -> None:
    write_months(tmp_path / "AAA", "2024-01-01", 2)
    age(tmp_path / "AAA")
    options = {"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS}
    files(options).fetch("AAA", days("2024-01-01", "2024-01-02")[0], H)
    for entry in own_cache.glob("files-index/*/*.json"):
        doc = json.loads(entry.read_text())
        if damage == "garbage":
            entry.write_text("{not json")
        elif damage == "other key":
            doc["key"]["size"] += 1
            entry.write_text(json.dumps(doc))
        else:
            doc["span"] = {"rows": "many", "lead": 0, "first": None, "last": None, "low": None,
                           "high": None}
            entry.write_text(json.dumps(doc))
    reads.paths.clear()
    assert files(options).fetch("AAA", days("2024-02-03", "2024-02-04")[0], H).table.num_rows == 24
    assert len(reads.paths) == 2  # both files read again: nothing was believed


def test_memory_files_are_read_per_window_too(reads: Reads) -> None:
    fs = fsspec.filesystem("memory")
    for i, span in enumerate(months("2024-01-01", "2024-03-01")):
        with fs.open(f"/fw/AAA/{i}.csv", "wb") as f:
            f.write(csv_text(synthetic_bars("AAA", span, H, seed=i)).encode())
    src = files({"url": "memory://fw/{symbol}/*.csv", "columns": VENDOR_COLUMNS})
    assert_same_windows(src, "AAA", days("2024-01-30", "2024-02-03"), H)
    assert len(reads.paths) == 2 and reads.paths[0].startswith("memory://")
    fs.rm("/fw", recursive=True)


def test_errors_keep_their_words(tmp_path: Path) -> None:
    (tmp_path / "AAA.csv").write_text("Date,Open,High,Low,Close,Volume\nnope,1,2,0.5,1.5,3\n")
    src = files({"url": f"{tmp_path}/{{symbol}}.csv", "columns": VENDOR_COLUMNS})
    with pytest.raises(SourceError) as info:
        src.fetch("AAA", days("2024-01-01", "2024-01-02")[0], H)
    assert info.value.what == ("no timestamp in the file could be read as dates, times or "
                               "epoch numbers; first values: 'nope'")
    assert info.value.url == f"{tmp_path}/AAA.csv"


def test_reading_io_errors_say_which_url() -> None:
    src = files({"url": "memory://nothing-here/{symbol}.csv"})
    with pytest.raises(SourceError, match="no file for symbol 'AAA'"):
        src.fetch("AAA", days("2024-01-01", "2024-01-02")[0], H)
    assert io  # the module is used by the helpers of other tests too


# -- through the command line ------------------------------------------------------------------
E2E_CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.csv.1h:
    kind: ohlcv
    interval_ms: 3600000
    stabilization_bars: 0
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    partition: {partition}
    source: {{name: files, options: {{url: "vendor/{{symbol}}/*.csv", columns: {columns}}}}}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""
E2E_MANIFEST = """\
version: 1
presets: [presets.yaml]
datasets:
  bars:
    preset: ohlcv.vendor.csv.1h
    symbols: [AAA, BBB]
    start: 2024-01-01
    end: {end}
    contract_version: v1
"""


@pytest.mark.parametrize("partition", ["day", "month"])
def test_jobs_give_the_same_lock_and_read_each_file_once(project: Project, reads: Reads,
                                                         partition: str) -> None:
    for symbol in ("AAA", "BBB"):
        write_months(project.root / "vendor" / symbol, "2024-01-01", 3)
    (project.root / "presets.yaml").write_text(E2E_CATALOG.format(
        partition=partition, columns=json.dumps(VENDOR_COLUMNS)))
    project.write_manifest(E2E_MANIFEST.format(end="2024-04-01"))
    locks = []
    for jobs in ("1", "3"):
        shutil.rmtree(project.root / ".seamless", ignore_errors=True)
        project.lock.unlink(missing_ok=True)
        reads.paths.clear()
        expect(project.run("resolve", "--jobs", jobs), 0)
        locks.append(project.lock.read_bytes())
        assert sorted(reads.paths) == sorted(
            str(p) for p in (project.root / "vendor").rglob("*.csv")), jobs
    assert locks[0] == locks[1]


def test_s3_objects_are_indexed_by_their_etag(s3: Any, monkeypatch: pytest.MonkeyPatch,
                                              reads: Reads) -> None:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    fs = fsspec.filesystem("s3", **s3.options())
    prefix = f"{s3.name}/vendor/AAA"
    spans = months("2024-01-01", "2024-04-01")
    for i, span in enumerate(spans):
        fs.pipe(f"{prefix}/{i}.csv", csv_text(synthetic_bars("AAA", span, H, seed=i)).encode())
    options = {"url": f"s3://{s3.name}/vendor/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS}
    feb = days("2024-02-05", "2024-02-06")[0]
    assert files(options).fetch("AAA", feb, H).table.num_rows == 24
    assert len(reads.paths) == 3  # nothing known yet: every object read, and indexed
    reads.paths.clear()
    assert files(options).fetch("AAA", feb, H).table.num_rows == 24
    assert reads.paths == [f"s3://{prefix}/1.csv"]  # the ETag vouches for the other two
    fs.pipe(f"{prefix}/2.csv", csv_text(synthetic_bars("AAA", spans[1], H, seed=9)).encode())
    fs.invalidate_cache()
    reads.paths.clear()
    got = files(options).fetch("AAA", feb, H)  # March's object now holds February too
    assert sorted(reads.paths) == [f"s3://{prefix}/1.csv", f"s3://{prefix}/2.csv"]
    assert got.table.num_rows == 48


def test_an_adjusted_history_is_scaled_by_events_in_later_files(tmp_path: Path) -> None:
    def text(bars: pa.Table, i: int) -> str:
        lines = csv_text(bars).splitlines()
        lines[0] += ",Split"
        for k in range(1, len(lines)):  # a 4:1 split on the 10th bar of March only
            lines[k] += ",4" if (i, k) == (2, 10) else ","
        return "\n".join(lines) + "\n"

    write_months(tmp_path / "AAA", "2024-01-01", 3, text=text)
    src = files({"url": f"{tmp_path}/{{symbol}}/*.csv", "columns": VENDOR_COLUMNS,
                 "split_column": "Split"})
    src.use_adjustment("splits")
    table, times = whole_read(src, "AAA")
    want = src.adjusted(table, times, "AAA", src.url_for("AAA"))  # type: ignore[attr-defined]
    for window in months("2024-01-01", "2024-04-01"):
        got = src.fetch("AAA", window, H)
        part = want.filter(pa.array((times >= window.start) & (times < window.end)))
        assert got.table.to_pydict() == part.to_pydict(), window
    jan = src.fetch("AAA", months("2024-01-01", "2024-02-01")[0], H).table
    raw = synthetic_bars("AAA", months("2024-01-01", "2024-02-01")[0], H, seed=0)
    assert jan["close"].to_pylist() == pytest.approx([c / 4 for c in raw["close"].to_pylist()])
