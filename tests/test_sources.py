"""Sources: one contract suite that every source passes, then files-source specifics.

:class:`SourceSuite` is abstract in the style of fsspec's ``tests/abstract``: a subclass provides
the fixtures ``new_source`` (a factory of fresh sources), ``symbols``, ``interval_ms`` and
``span`` (where the source has data), and inherits every test.
"""

from __future__ import annotations

import gzip
import io
import itertools
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qmtl_engine.calendars import get_calendar
from qmtl_engine.conformance import RawBatch, blocking, conform, normalize_ts
from qmtl_engine.contracts import OHLCV_V1, VALUE_COLUMNS
from qmtl_engine.errors import PresetError, SourceError
from qmtl_engine.presets import load_registry
from qmtl_engine.ranges import DAY_MS, HOUR_MS, TimeRange, to_ms
from qmtl_engine.sources import make_source
from qmtl_engine.sources.base import Source

H = HOUR_MS
D = DAY_MS
T0 = to_ms("2024-01-01")
SourceFactory = Callable[[], Source]


# -- helpers ---------------------------------------------------------------------------------------
def bar_times(batch: RawBatch) -> np.ndarray:
    """Epoch ms of a batch's raw timestamps, read the way conformance reads them."""
    norm = normalize_ts(batch.table["ts"], batch.hints)
    assert norm.valid.all()
    return norm.ms


def row_set(batch: RawBatch) -> list[tuple[object, ...]]:
    """The batch's rows as a sorted list, so batches compare up to row order."""
    names = sorted(batch.table.column_names)
    rows = zip(*(batch.table[n].to_pylist() for n in names), strict=True)
    return sorted(rows, key=repr)


def conformed(batch: RawBatch, window: TimeRange, interval_ms: int) -> pa.Table:
    out, _, _ = conform(batch, window=window, interval_ms=interval_ms, contract=OHLCV_V1,
                        calendar=get_calendar("24x7"))
    return out


def restrict(batch: RawBatch, window: TimeRange) -> RawBatch:
    ms = bar_times(batch)
    keep = (ms >= window.start) & (ms < window.end)
    return RawBatch(batch.table.filter(pa.array(keep)), batch.hints)


def fmt_time(ms: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(fmt)


def synthetic_bars(symbol: str, span: TimeRange, interval_ms: int, seed: int = 11) -> pa.Table:
    """Canonical bars to write into vendor files (ts as epoch ms, int64)."""
    src = make_source("synthetic", {"seed": seed}, base_dir=".")
    tbl = src.fetch(symbol, span, interval_ms).table
    return tbl.set_column(0, "ts", tbl["ts"].cast(pa.int64()))


def csv_text(tbl: pa.Table, *, header: str | None = "Date,Open,High,Low,Close,Volume",
             delimiter: str = ",", time: Callable[[int], str] = fmt_time,
             extra: Callable[[int], list[str]] | None = None) -> str:
    """CSV with exact (repr) floats and the times written by ``time``."""
    lines = [header] if header is not None else []
    cols = [tbl[c].to_pylist() for c in ("ts", *VALUE_COLUMNS)]
    for i, (ts, *values) in enumerate(zip(*cols, strict=True)):
        fields = [*(extra(i) if extra else []), time(ts), *(repr(v) for v in values)]
        lines.append(delimiter.join(fields))
    return "\n".join(lines) + "\n"


def write(url: str, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    if url.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    with fsspec.open(url, "wb") as f:
        f.write(raw)


def parquet_bytes(tbl: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    return buf.getvalue()


VENDOR_COLUMNS = {"ts": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                  "volume": "Volume"}


@pytest.fixture(params=["file", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh directory URL: ``file://`` under tmp_path, or a unique ``memory://`` root."""
    if request.param == "file":
        yield f"file://{tmp_path.as_posix()}"
        return
    name = f"qmtl-test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture
def memory_root() -> Iterator[str]:
    name = f"qmtl-test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


# -- the contract every source passes --------------------------------------------------------------
class SourceSuite:
    """Properties of DESIGN §4 and the Source docstring that every source must have."""

    def windows(self, span: TimeRange) -> list[TimeRange]:
        """Partition-like windows inside ``span``: first day, a middle stretch, the last day."""
        return [TimeRange(span.start, span.start + D),
                TimeRange(span.start + D + 5 * H, span.start + 3 * D),
                TimeRange(span.end - D, span.end)]

    def test_deterministic_for_the_same_window(self, new_source: SourceFactory,
                                               symbols: list[str], interval_ms: int,
                                               span: TimeRange) -> None:
        src = new_source()
        for window in self.windows(span):
            first = src.fetch(symbols[0], window, interval_ms)
            again = src.fetch(symbols[0], window, interval_ms)
            fresh = new_source().fetch(symbols[0], window, interval_ms)
            assert first.table.num_rows > 0
            assert row_set(first) == row_set(again) == row_set(fresh)
            assert first.hints == fresh.hints
            assert conformed(first, window, interval_ms).equals(
                conformed(fresh, window, interval_ms))

    def test_rows_only_within_the_window(self, new_source: SourceFactory, symbols: list[str],
                                         interval_ms: int, span: TimeRange) -> None:
        src = new_source()
        for window in self.windows(span):
            batch = src.fetch(symbols[0], window, interval_ms)
            ms = bar_times(batch)
            assert ms.size > 0
            assert ((ms >= window.start) & (ms < window.end)).all()
            _, report, _ = conform(batch, window=window, interval_ms=interval_ms,
                                   contract=OHLCV_V1, calendar=get_calendar("24x7"))
            assert report.counts["out_of_range"] == 0

    def test_same_window_whatever_was_fetched_before(self, new_source: SourceFactory,
                                                     symbols: list[str], interval_ms: int,
                                                     span: TimeRange) -> None:
        target = self.windows(span)[1]
        expected = row_set(new_source().fetch(symbols[0], target, interval_ms))
        src = new_source()
        src.fetch(symbols[0], span, interval_ms)  # everything
        src.fetch(symbols[1], target, interval_ms)  # another symbol, same window
        src.fetch(symbols[0], TimeRange(target.start - D, target.start + H), interval_ms)
        src.fetch(symbols[0], self.windows(span)[2], interval_ms)
        assert row_set(src.fetch(symbols[0], target, interval_ms)) == expected

    def test_symbols_differ(self, new_source: SourceFactory, symbols: list[str],
                            interval_ms: int, span: TimeRange) -> None:
        window = self.windows(span)[0]
        src = new_source()
        a = conformed(src.fetch(symbols[0], window, interval_ms), window, interval_ms)
        b = conformed(src.fetch(symbols[1], window, interval_ms), window, interval_ms)
        assert a["ts"].equals(b["ts"])
        assert not a["close"].equals(b["close"])

    def test_extending_a_range_keeps_earlier_windows(self, new_source: SourceFactory,
                                                     symbols: list[str], interval_ms: int,
                                                     span: TimeRange) -> None:
        early = TimeRange(span.start, span.start + D + 7 * H)
        for end in (span.start + 2 * D, span.start + 4 * D, span.end):
            longer = new_source().fetch(symbols[0], TimeRange(span.start, end), interval_ms)
            short = new_source().fetch(symbols[0], early, interval_ms)
            assert row_set(restrict(longer, early)) == row_set(short)
            assert conformed(longer, early, interval_ms).equals(
                conformed(short, early, interval_ms))


SPAN = TimeRange(T0, T0 + 7 * D)  # one week of hourly bars


class TestSyntheticSource(SourceSuite):
    @pytest.fixture
    def new_source(self) -> SourceFactory:
        return lambda: make_source("synthetic", {"seed": 5, "start_price": 250.0}, base_dir=".")

    @pytest.fixture
    def symbols(self) -> list[str]:
        return ["BTCUSDT", "ETHUSDT"]

    @pytest.fixture(params=[60_000, H], ids=["1m", "1h"])
    def interval_ms(self, request: pytest.FixtureRequest) -> int:
        return int(request.param)

    @pytest.fixture
    def span(self) -> TimeRange:
        return SPAN

    def test_windows_across_generation_blocks(self, new_source: SourceFactory) -> None:
        # 1024-bar generation blocks: a window cut anywhere gives the bars of a long fetch.
        span = TimeRange(T0, T0 + 5000 * 60_000)
        whole = conformed(new_source().fetch("X", span, 60_000), span, 60_000)
        for start, end in ((0, 1), (1000, 1100), (1023, 1025), (2047, 4097), (4999, 5000)):
            window = TimeRange(T0 + start * 60_000, T0 + end * 60_000)
            part = conformed(new_source().fetch("X", window, 60_000), window, 60_000)
            assert part.equals(whole.slice(start, end - start))

    def test_bars_are_clean(self, new_source: SourceFactory) -> None:
        _, report, _ = conform(new_source().fetch("X", SPAN, H), window=SPAN, interval_ms=H,
                               contract=OHLCV_V1, calendar=get_calendar("24x7"))
        assert report.nonzero() == {}

    def test_seed_changes_the_bars(self) -> None:
        a = make_source("synthetic", {"seed": 1}, base_dir=".").fetch("X", SPAN, H)
        b = make_source("synthetic", {"seed": 2}, base_dir=".").fetch("X", SPAN, H)
        assert not a.table["close"].equals(b.table["close"])

    def test_unaligned_window(self, new_source: SourceFactory) -> None:
        window = TimeRange(T0 + 30 * 60_000, T0 + 3 * H + 1)
        assert bar_times(new_source().fetch("X", window, H)).tolist() == [
            T0 + H, T0 + 2 * H, T0 + 3 * H]

    def test_bad_option_is_a_preset_error(self) -> None:
        with pytest.raises(PresetError, match="step_volatility"):
            make_source("synthetic", {"step_volatility": 0.5}, base_dir=".")


class TestFilesSource(SourceSuite):
    """The files source on CSV and Parquet, on file:// and memory:// roots."""

    @pytest.fixture(params=["csv", "csv.gz", "parquet"])
    def fmt(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def symbols(self) -> list[str]:
        return ["AAA", "BBB"]

    @pytest.fixture
    def interval_ms(self) -> int:
        return H

    @pytest.fixture
    def span(self) -> TimeRange:
        return SPAN

    @pytest.fixture
    def new_source(self, root: str, fmt: str, symbols: list[str]) -> SourceFactory:
        for symbol in symbols:
            tbl = synthetic_bars(symbol, SPAN, H)
            if fmt == "parquet":  # vendor Parquet: naive microsecond times, other names
                ts = tbl["ts"].cast(pa.timestamp("ms")).cast(pa.timestamp("us"))
                vendor = pa.table([ts, *(tbl[c] for c in VALUE_COLUMNS)],
                                  names=list(VENDOR_COLUMNS.values()))
                write(f"{root}/{symbol}.parquet", parquet_bytes(vendor))
            else:
                write(f"{root}/{symbol}.{fmt}", csv_text(tbl[::-1]))  # newest first
        options = {"url": f"{root}/{{symbol}}.{fmt}", "format": fmt.split(".")[0],
                   "columns": VENDOR_COLUMNS}
        if fmt != "parquet":
            options["ts_format"] = "%Y-%m-%d %H:%M:%S"
        return lambda: make_source("files", options, base_dir="/nonexistent")

    def test_window_without_data_is_empty(self, new_source: SourceFactory) -> None:
        before = TimeRange(SPAN.start - 30 * D, SPAN.start - 29 * D)
        batch = new_source().fetch("AAA", before, H)
        assert batch.table.num_rows == 0
        out, report, _ = conform(batch, window=before, interval_ms=H, contract=OHLCV_V1,
                                 calendar=get_calendar("24x7"))
        assert out.num_rows == 0 and report.nonzero() == {"gap_bars": 24}

    def test_reads_back_what_was_written(self, new_source: SourceFactory) -> None:
        window = TimeRange(T0 + D, T0 + 3 * D)
        out = conformed(new_source().fetch("AAA", window, H), window, H)
        expected = synthetic_bars("AAA", window, H)
        assert out["ts"].cast(pa.int64()).equals(expected["ts"])
        for c in VALUE_COLUMNS:
            assert out[c].equals(expected[c].cast(pa.float64())), c


# -- files source specifics ------------------------------------------------------------------------
def files(options: dict[str, object], base_dir: str = "/nonexistent") -> Source:
    return make_source("files", options, base_dir=base_dir)


def fetch_conformed(src: Source, symbol: str, window: TimeRange, interval_ms: int = H,
                    ) -> tuple[pa.Table, dict[str, int]]:
    out, report, _ = conform(src.fetch(symbol, window, interval_ms), window=window,
                             interval_ms=interval_ms, contract=OHLCV_V1,
                             calendar=get_calendar("24x7"))
    return out, report.nonzero()


DAY1 = TimeRange(T0, T0 + D)


def test_symbol_in_url_picks_each_file(root: str) -> None:
    for symbol, seed in (("AAA", 1), ("BBB", 2)):
        write(f"{root}/prices_{symbol}_1h.csv", csv_text(synthetic_bars(symbol, DAY1, H, seed)))
    src = files({"url": f"{root}/prices_{{symbol}}_1h.csv", "columns": VENDOR_COLUMNS})
    for symbol, seed in (("AAA", 1), ("BBB", 2)):
        out, flags = fetch_conformed(src, symbol, DAY1)
        assert flags == {}
        assert out["close"].equals(synthetic_bars(symbol, DAY1, H, seed)["close"])


def test_relative_url_is_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "AAA.csv").write_text(csv_text(synthetic_bars("AAA", DAY1, H)))
    src = files({"url": "data/{symbol}.csv", "columns": VENDOR_COLUMNS}, base_dir=str(tmp_path))
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert (out.num_rows, flags) == (24, {})


def test_glob_over_several_files(root: str) -> None:
    q1 = TimeRange(to_ms("2024-01-01"), to_ms("2024-04-01"))
    months = [to_ms(m) for m in ("2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01")]
    for start, end in itertools.pairwise(months):
        month = fmt_time(start, "%Y-%m")
        write(f"{root}/AAA/{month}.csv", csv_text(synthetic_bars("AAA", TimeRange(start, end), D),
                                                  time=lambda ms: fmt_time(ms, "%Y-%m-%d")))
    write(f"{root}/BBB/2024-01.csv", csv_text(synthetic_bars("BBB", DAY1, D),
                                              time=lambda ms: fmt_time(ms, "%Y-%m-%d")))
    src = files({"url": f"{root}/{{symbol}}/2024-*.csv", "columns": VENDOR_COLUMNS,
                 "ts_format": "%Y-%m-%d"})
    out, flags = fetch_conformed(src, "AAA", q1, D)
    assert flags == {}
    assert out.num_rows == 31 + 29 + 31
    assert out["close"].equals(synthetic_bars("AAA", q1, D)["close"])
    feb = TimeRange(months[1], months[2])
    out, flags = fetch_conformed(src, "AAA", feb, D)
    assert (out.num_rows, flags) == (29, {})
    out, flags = fetch_conformed(src, "BBB", q1, D)
    assert out.num_rows == 1 and flags == {"gap_bars": 90}


def test_gzip_csv(root: str) -> None:
    write(f"{root}/AAA.csv.gz", csv_text(synthetic_bars("AAA", DAY1, H)))
    with fsspec.open(f"{root}/AAA.csv.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # really compressed
    src = files({"url": f"{root}/{{symbol}}.csv.gz", "columns": VENDOR_COLUMNS})
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert (out.num_rows, flags) == (24, {})


def test_skip_rows_banner_lines(root: str) -> None:
    banner = "Exported by VendorX Terminal v9\nPrices in USD; times in UTC\n"
    write(f"{root}/AAA.csv", banner + csv_text(synthetic_bars("AAA", DAY1, H)))
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": VENDOR_COLUMNS, "skip_rows": 2})
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert (out.num_rows, flags) == (24, {})
    assert out["open"].equals(synthetic_bars("AAA", DAY1, H)["open"])


def test_banner_without_skip_rows_is_a_source_error(root: str) -> None:
    write(f"{root}/AAA.csv", "Exported by VendorX\n" + csv_text(synthetic_bars("AAA", DAY1, H)))
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": VENDOR_COLUMNS})
    with pytest.raises(SourceError) as info:
        src.fetch("AAA", DAY1, H)
    assert "skip_rows" in str(info.value)


def test_header_false_with_positional_columns(root: str) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    text = csv_text(tbl, header=None, delimiter=";", extra=lambda i: [f"row{i}"])
    write(f"{root}/AAA.txt", text)
    src = files({"url": f"{root}/{{symbol}}.txt", "header": False, "delimiter": ";",
                 "columns": {"ts": 1, "open": 2, "high": 3, "low": 4, "close": 5, "volume": 6}})
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert (out.num_rows, flags) == (24, {})
    assert out["volume"].equals(tbl["volume"])


def test_long_file_with_symbol_column(root: str) -> None:
    symbols = ["AAA", "0700", "BBB"]  # a numeric-looking code must stay a string
    tables = {s: synthetic_bars(s, DAY1, H, seed=i) for i, s in enumerate(symbols)}
    lines = ["Date,Ticker,Open,High,Low,Close,Volume"]
    for i in range(24):  # interleaved, as long files usually are
        for s in symbols:
            row = tables[s].slice(i, 1).to_pylist()[0]
            lines.append(",".join([fmt_time(row["ts"]), s,
                                   *(repr(row[c]) for c in VALUE_COLUMNS)]))
    write(f"{root}/all.csv", "\n".join(lines) + "\n")
    src = files({"url": f"{root}/all.csv", "columns": VENDOR_COLUMNS, "symbol_column": "Ticker"})
    for s in symbols:
        out, flags = fetch_conformed(src, s, DAY1)
        assert flags == {}, s
        assert out["close"].equals(tables[s]["close"]), s


def test_wrong_symbol_column_is_a_source_error(root: str) -> None:
    write(f"{root}/all.csv", "Date,Ticker,Open,High,Low,Close,Volume\n"
          "2024-01-01 00:00:00,AAA,1.0,2.0,0.5,1.5,10\n")
    src = files({"url": f"{root}/all.csv", "columns": VENDOR_COLUMNS, "symbol_column": "Symbol"})
    with pytest.raises(SourceError) as info:
        src.fetch("AAA", DAY1, H)
    assert info.value.what == "the symbol column 'Symbol' is not in the file"
    assert (info.value.source, info.value.symbol) == ("files", "AAA")
    assert (info.value.url or "").endswith("all.csv")
    assert "symbol_column" in (info.value.fix or "")


def test_symbol_without_rows_in_a_long_file_is_a_source_error(root: str) -> None:
    write(f"{root}/all.csv", "Date,Ticker,Open,High,Low,Close,Volume\n"
          "2024-01-01 00:00:00,AAA,1.0,2.0,0.5,1.5,10\n")
    src = files({"url": f"{root}/all.csv", "columns": VENDOR_COLUMNS, "symbol_column": "Ticker"})
    assert src.fetch("AAA", DAY1, H).table.num_rows == 1
    with pytest.raises(SourceError) as info:
        src.fetch("aaa", DAY1, H)  # symbols match exactly
    assert info.value.what == "the file has no rows for symbol 'aaa'"
    assert info.value.symbol == "aaa"
    assert (info.value.url or "").endswith("all.csv")


def test_file_with_a_header_and_no_rows_is_a_source_error(root: str) -> None:
    write(f"{root}/AAA.csv", "Date,Open,High,Low,Close,Volume\n")
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": VENDOR_COLUMNS})
    with pytest.raises(SourceError, match="no rows for symbol 'AAA'"):
        src.fetch("AAA", DAY1, H)


def test_partial_columns_mapping_keeps_the_identity_names(root: str) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    write(f"{root}/AAA.csv", csv_text(tbl, header="Date,open,high,low,close,volume"))
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": {"ts": "Date"}})
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert (out.num_rows, flags) == (24, {})
    for c in VALUE_COLUMNS:
        assert out[c].equals(tbl[c].cast(pa.float64())), c


def test_partial_columns_mapping_renames_one_value_column(root: str) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    write(f"{root}/AAA.csv", csv_text(tbl, header="ts,open,high,low,Last,volume"))
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": {"close": "Last"}})
    batch = src.fetch("AAA", DAY1, H)
    assert sorted(batch.table.column_names) == sorted(["ts", *VALUE_COLUMNS])
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert (out.num_rows, flags) == (24, {})
    assert out["close"].equals(tbl["close"])


@pytest.mark.parametrize(("unit", "scale"), [("s", 1 / 1000), ("ms", 1), ("us", 1000)])
def test_epoch_ts_unit(root: str, unit: str, scale: float) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    write(f"{root}/AAA.csv", csv_text(tbl, time=lambda ms: str(int(ms * scale))))
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": VENDOR_COLUMNS, "ts_unit": unit})
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert flags == {}
    assert out["ts"].cast(pa.int64()).equals(tbl["ts"])


def test_parquet_epoch_without_unit_is_inferred(root: str) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    seconds = pa.array([t // 1000 for t in tbl["ts"].to_pylist()], type=pa.int64())
    write(f"{root}/AAA.parquet", parquet_bytes(tbl.set_column(0, "ts", seconds)))
    src = files({"url": f"{root}/{{symbol}}.parquet", "format": "parquet"})
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert flags == {"ts_unit_inferred": 24}
    assert out["ts"].cast(pa.int64()).equals(tbl["ts"])


@pytest.mark.parametrize(("unit", "scale"), [("s", 1 / 1000), ("ms", 1), ("us", 1000)])
def test_csv_epoch_without_unit_is_inferred(root: str, unit: str, scale: float) -> None:
    # Without ts_unit the ts column is read as text; digits in it are epochs of inferred unit.
    tbl = synthetic_bars("AAA", DAY1, H)
    write(f"{root}/AAA.csv", csv_text(tbl, time=lambda ms: str(int(ms * scale))))
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": VENDOR_COLUMNS})
    batch = src.fetch("AAA", DAY1, H)
    assert batch.table.schema.field("ts").type == pa.string()
    assert batch.table.num_rows == 24
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert flags == {"ts_unit_inferred": 24}
    assert out["ts"].cast(pa.int64()).equals(tbl["ts"])


@pytest.mark.parametrize("typ", [pa.date32(), pa.date64()])
def test_parquet_date_column(root: str, typ: pa.DataType) -> None:
    days = TimeRange(T0, T0 + 5 * D)
    tbl = synthetic_bars("AAA", days, D)
    dates = pa.array(tbl["ts"].to_pylist(), type=pa.int64()).cast(pa.timestamp("ms")).cast(typ)
    write(f"{root}/AAA.parquet", parquet_bytes(tbl.set_column(0, "ts", dates)))
    src = files({"url": f"{root}/{{symbol}}.parquet", "format": "parquet"})
    out, flags = fetch_conformed(src, "AAA", days, D)
    assert (out.num_rows, flags) == (5, {})
    assert out["ts"].cast(pa.int64()).equals(tbl["ts"])
    assert out["close"].equals(tbl["close"])


def test_unreadable_timestamp_type_is_a_source_error(root: str) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    write(f"{root}/AAA.parquet",
          parquet_bytes(tbl.set_column(0, "ts", pa.array([True] * tbl.num_rows))))
    src = files({"url": f"{root}/{{symbol}}.parquet", "format": "parquet"})
    with pytest.raises(SourceError) as info:
        src.fetch("AAA", DAY1, H)
    assert info.value.what == ("cannot read the timestamp column: cannot read timestamps of "
                               "type bool")
    assert "ts_format" in (info.value.fix or "")


def test_naive_times_in_a_time_zone(root: str) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    write(f"{root}/AAA.csv", csv_text(tbl, time=lambda ms: fmt_time(ms - 5 * H)))  # New York
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": VENDOR_COLUMNS,
                 "timezone": "America/New_York"})
    batch = src.fetch("AAA", DAY1, H)
    assert batch.table.num_rows == 24  # 19:00 New York on 31 Dec is 00:00 UTC on 1 Jan
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert flags == {"ts_timezone_normalized": 24}
    assert out["ts"].cast(pa.int64()).equals(tbl["ts"])


def test_rows_keep_the_vendor_order_and_conformance_sorts_them(root: str) -> None:
    tbl = synthetic_bars("AAA", DAY1, H)
    write(f"{root}/AAA.csv", csv_text(tbl[::-1]))
    src = files({"url": f"{root}/{{symbol}}.csv", "columns": VENDOR_COLUMNS})
    out, flags = fetch_conformed(src, "AAA", DAY1)
    assert flags == {"unsorted_ts": 23}
    assert out["ts"].cast(pa.int64()).equals(tbl["ts"])


@pytest.mark.parametrize("url", ["{root}/missing_{{symbol}}.csv",
                                 "{root}/nothing/*_{{symbol}}.csv"], ids=["file", "glob"])
def test_missing_file_is_a_source_error(root: str, url: str) -> None:
    full = url.format(root=root)
    src = files({"url": full})
    with pytest.raises(SourceError) as info:
        src.fetch("AAA", DAY1, H)
    err = info.value
    expected_url = full.replace("{symbol}", "AAA")
    assert err.url == expected_url and err.symbol == "AAA" and err.source == "files"
    text = str(err)
    assert expected_url in text
    assert "AAA" in text
    assert "`url` option" in text and "fix:" in text
    assert err.exit_code == 3


def test_missing_relative_file_names_the_resolved_path(tmp_path: Path) -> None:
    src = files({"url": "vendor/{symbol}.csv.gz"}, base_dir=str(tmp_path))
    with pytest.raises(SourceError) as info:
        src.fetch("MSFT", DAY1, H)
    assert str(tmp_path / "vendor" / "MSFT.csv.gz") in str(info.value)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "url"),
        ({"url": "x.csv", "fromat": "csv"}, "fromat"),
        ({"url": "x.csv", "format": "xlsx"}, "format"),
        ({"url": "x.csv", "skip_rows": -1}, "skip_rows"),
        ({"url": "x.csv", "delimiter": ";;"}, "delimiter"),
        ({"url": "x.csv", "ts_unit": "minutes"}, "ts_unit"),
        ({"url": "x.csv", "columns": {"ts": 1.5}}, "columns.ts"),
    ],
)
def test_bad_option_is_a_preset_error(options: dict[str, object], key: str) -> None:
    with pytest.raises(PresetError) as info:
        files(options)
    text = str(info.value)
    assert f"invalid option '{key}" in text and "files source" in text
    assert info.value.fix and "qmtl-lock presets --json" in info.value.fix


def test_unknown_source_is_a_preset_error() -> None:
    with pytest.raises(PresetError, match="unknown source"):
        make_source("nope", {}, base_dir=".")


# -- the embedded demo data ------------------------------------------------------------------------
QUANDL = "ohlcv.quandl_wiki.us_equity.1d"
YEAR_2001 = TimeRange(to_ms("2001-01-01"), to_ms("2002-01-01"))


@pytest.fixture(scope="module")
def quandl_aapl_2001() -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    preset = load_registry().get(QUANDL)
    assert preset.data.source.name == "files"
    assert preset.data.calendar == "XNYS"
    src = make_source(preset.data.source.name, preset.data.source.options,
                      base_dir=preset.base_dir)
    out, report, _ = conform(src.fetch("AAPL", YEAR_2001, preset.interval_ms),
                             window=YEAR_2001, interval_ms=preset.interval_ms,
                             contract=OHLCV_V1, calendar=get_calendar(preset.data.calendar))
    return out, report.nonzero(), blocking(report, preset.conformance)


def test_demo_data_conforms_without_blocking_flags(
        quandl_aapl_2001: tuple[pa.Table, dict[str, int], dict[str, int]]) -> None:
    out, flags, blocked = quandl_aapl_2001
    assert blocked == {}
    assert flags == {"dtype_cast": 248}  # integer volumes cast to float64
    assert out.num_rows == 248  # NYSE sessions in 2001


def test_demo_data_skips_the_september_2001_closure(
        quandl_aapl_2001: tuple[pa.Table, dict[str, int], dict[str, int]]) -> None:
    out, _, _ = quandl_aapl_2001
    days = {datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%m-%d")
            for t in out["ts"].cast(pa.int64()).to_pylist()}
    assert {"09-10", "09-17"} <= days
    assert not {"09-11", "09-12", "09-13", "09-14"} & days
    first = out.slice(0, 1).to_pylist()[0]
    assert first["ts"] == datetime(2001, 1, 2, tzinfo=UTC)
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        14.88, 15.25, 14.56, 14.88, 8077000.0)
