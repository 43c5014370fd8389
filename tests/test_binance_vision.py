"""The binance_vision source against a real HTTP server serving the archive's exact format.

The archive is built here from synthetic bars the way ``data.binance.vision`` publishes it:
monthly and daily zips, one headerless (spot) or headed (newer futures) 12-column CSV inside each,
a ``.CHECKSUM`` next to each zip, spot open times in milliseconds until 2024-12-31 and in
microseconds from 2025-01-01. Failures are injected on the loopback server (429 with Retry-After,
500s, resets, slow answers, truncated zips, wrong checksums) and counted on the server's side.
"""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest
from http_server import Reply, Server, serve
from qmtl_engine.calendars import get_calendar
from qmtl_engine.conformance import conform
from qmtl_engine.contracts import OHLCV_V1
from qmtl_engine.errors import PresetError, SourceError
from qmtl_engine.http import RateLimit
from qmtl_engine.ranges import DAY_MS, HOUR_MS, MINUTE_MS, TimeRange, partition_windows, to_ms
from qmtl_engine.sources import make_source
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.binance_vision import (
    DEFAULT_RATE_LIMIT,
    BinanceVisionOptions,
    BinanceVisionSource,
    display_url,
    interval_name,
    read_klines_csv,
)
from test_sources import SourceSuite, conformed

D = DAY_MS
H = HOUR_MS
M = MINUTE_MS
US_FROM = to_ms("2025-01-01")  # spot open times are microseconds from this day on
FAST = {"rate_limit": {"requests_per_second": 10_000, "burst": 10_000},
        "backoff_initial_ms": 1, "backoff_max_ms": 5, "timeout_s": 5}


# -- building an archive in the provider's format --------------------------------------------------
def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def archive_path(market: str, period: str, symbol: str, interval: str, stem: str) -> str:
    root = "spot" if market == "spot" else "futures/um"
    return f"/data/{root}/{period}/klines/{symbol}/{interval}/{symbol}-{interval}-{stem}.zip"


def _fmt(values: np.ndarray, spec: str) -> list[str]:
    return [format(v, spec) for v in values.tolist()]


@dataclass
class Archive:
    """Files of a Binance-format archive (path -> bytes) and the bars they hold, per symbol."""

    market: str
    interval_ms: int
    files: dict[str, bytes] = field(default_factory=dict)
    bars: dict[str, pa.Table] = field(default_factory=dict)  # canonical, as the CSV rounds them

    @property
    def interval(self) -> str:
        return interval_name(self.interval_ms)

    def path(self, period: str, symbol: str, when: int | str) -> str:
        stem = when if isinstance(when, str) else (
            _day(when) if period == "daily" else _day(when)[:7])
        return archive_path(self.market, period, symbol, self.interval, stem)

    def rows(self, symbol: str, window: TimeRange) -> pa.Table:
        t = self.bars[symbol]
        ts = np.asarray(t["ts"].cast(pa.int64()).to_numpy())
        keep = (ts >= window.start) & (ts < window.end)
        return t.filter(pa.array(keep))

    def without(self, *paths: str) -> Archive:
        gone = {p for p in paths} | {p + ".CHECKSUM" for p in paths}
        return replace(self, files={k: v for k, v in self.files.items() if k not in gone})


def _zip(name: str, text: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = zipfile.ZipInfo(name.replace(".zip", ".csv"), date_time=(2025, 1, 1, 0, 0, 0))
        zf.writestr(info, text, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    return buf.getvalue()


def add_file(archive: Archive, path: str, csv_text: bytes) -> None:
    name = path.rsplit("/", 1)[1]
    body = _zip(name, csv_text)
    archive.files[path] = body
    archive.files[path + ".CHECKSUM"] = f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()


FUTURES_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                  "taker_buy_volume,taker_buy_quote_volume,ignore")


def build_archive(symbols: list[str], span: TimeRange, interval_ms: int, *, market: str = "spot",
                  seed: int = 11, start_price: float = 42_000.0,
                  header_from: int | None = None, monthly: bool = True,
                  daily: bool = True) -> Archive:
    """Daily zips for every day of ``span`` and monthly zips for its whole months.

    Spot: no header, ms before 2025 and us from 2025. Futures: ms, a header row on the files that
    start at or after ``header_from`` (older futures files have none).
    """
    archive = Archive(market, interval_ms)
    src = make_source("synthetic", {"seed": seed, "start_price": start_price}, base_dir=".")
    for symbol in symbols:
        t = src.fetch(symbol, span, interval_ms).table
        ts = np.asarray(t["ts"].cast(pa.int64()).to_numpy())
        o, h, lo, c, v = (np.asarray(t[n].to_numpy()) for n in ("open", "high", "low", "close",
                                                                 "volume"))
        price, vol, quote = (".8f", ".8f", ".8f") if market == "spot" else (".2f", ".3f", ".5f")
        trades = (v * 37).astype(np.int64) + 1
        cols = {
            "open": _fmt(o, price), "high": _fmt(h, price), "low": _fmt(lo, price),
            "close": _fmt(c, price), "volume": _fmt(v, vol), "quote_volume": _fmt(v * c, quote),
        }
        taker_base, taker_quote = _fmt(v * 0.5, vol), _fmt(v * c * 0.5, quote)
        us = (ts >= US_FROM) if market == "spot" else np.zeros(ts.size, dtype=bool)
        scale = np.where(us, 1000, 1)
        open_t = (ts * scale).tolist()
        close_t = ((ts + interval_ms) * scale - 1).tolist()
        lines = [",".join((str(open_t[i]), cols["open"][i], cols["high"][i], cols["low"][i],
                           cols["close"][i], cols["volume"][i], str(close_t[i]),
                           cols["quote_volume"][i], str(int(trades[i])), taker_base[i],
                           taker_quote[i], "0"))
                 for i in range(ts.size)]
        archive.bars[symbol] = pa.table({
            "ts": pa.array(ts, type=pa.timestamp("ms", tz="UTC")),
            **{n: pa.array(cols[n]).cast(pa.float64())
               for n in ("open", "high", "low", "close", "volume")},
            "trades": pa.array(trades.astype(np.float64)),
            "quote_volume": pa.array(cols["quote_volume"]).cast(pa.float64()),
        })
        periods = (["daily"] if daily else []) + (["monthly"] if monthly else [])
        for period in periods:
            scheme = "day" if period == "daily" else "month"
            for w in partition_windows(span, scheme):
                full = TimeRange(*_full(w.start, scheme))
                if full != w:
                    continue  # only whole days and months are published
                lo_i, hi_i = np.searchsorted(ts, [w.start, w.end])
                text = "\n".join(lines[lo_i:hi_i]) + "\n"
                if market != "spot" and header_from is not None and w.start >= header_from:
                    text = FUTURES_HEADER + "\n" + text
                add_file(archive, archive.path(period, symbol, w.start), text.encode())
    return archive


def _full(ms: int, scheme: str) -> tuple[int, int]:
    from qmtl_engine.ranges import window_containing

    w = window_containing(ms, "day" if scheme == "day" else "month")
    return w.start, w.end


def route_archive(server: Server, archive: Archive, *, delay_s: float = 0.0) -> None:
    for path, body in archive.files.items():
        server.route(path, Reply(body, delay_s=delay_s))


class Sleeps:
    """A recording ``sleep`` that does not wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def binance(base_url: str, *, sleeps: Callable[[float], None] | None = None,
            now_ms: Callable[[], int] | None = None, base_dir: str = ".",
            **options: object) -> BinanceVisionSource:
    opts = BinanceVisionOptions.model_validate({"base_url": base_url, **FAST, **options})
    return BinanceVisionSource(opts, base_dir=base_dir, sleep=sleeps, now_ms=now_ms)


def fetch_conformed(src: Source, symbol: str, window: TimeRange,
                    interval_ms: int = M) -> tuple[pa.Table, dict[str, int]]:
    out, report, _ = conform(src.fetch(symbol, window, interval_ms), window=window,
                             interval_ms=interval_ms, contract=OHLCV_V1,
                             calendar=get_calendar("24x7"))
    return out, report.nonzero()


# -- fixtures --------------------------------------------------------------------------------------
DEC = TimeRange(to_ms("2024-12-01"), to_ms("2025-01-01"))
SPOT_SPAN = TimeRange(to_ms("2024-11-01"), to_ms("2025-01-06"))  # Nov and Dec whole, 5 Jan days


@pytest.fixture(scope="module")
def spot() -> Archive:
    """1-minute spot bars: Nov and Dec 2024 in ms (monthly + daily), 1-5 Jan 2025 in us (daily)."""
    return build_archive(["BTCUSDT"], SPOT_SPAN, M)


@pytest.fixture(scope="module")
def futures() -> Archive:
    """1-minute USD-M futures bars in ms; the files from 20 Dec on have a header row."""
    return build_archive(["BTCUSDT"], TimeRange(to_ms("2024-12-01"), to_ms("2025-01-03")), M,
                         market="um_futures", header_from=to_ms("2024-12-20"))


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


@pytest.fixture
def served(server: Server, spot: Archive) -> Server:
    route_archive(server, spot)
    return server


# -- the layout ------------------------------------------------------------------------------------
def test_file_layout_monthly_for_whole_months_daily_for_the_rest() -> None:
    src = binance("https://data.binance.vision")
    window = TimeRange(to_ms("2024-01-30T05:00"), to_ms("2024-03-02T01:00"))
    plan = src.files_for("btcusdt", window, M)
    base = "https://data.binance.vision/data/spot"
    assert [f.url for f, _ in plan] == [
        f"{base}/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-30.zip",
        f"{base}/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-31.zip",
        f"{base}/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02.zip",
        f"{base}/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip",
        f"{base}/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-02.zip",
    ]
    fallback = plan[2][1]  # the daily zips that replace a missing monthly one
    assert len(fallback) == 29 and fallback[0].name == "BTCUSDT-1m-2024-02-01.zip"
    futures = binance("https://data.binance.vision/", market="um_futures")
    [(f, _)] = futures.files_for("ETHUSDT", TimeRange(to_ms("2024-02-01"), to_ms("2024-03-01")),
                                 H)
    assert f.url == ("https://data.binance.vision/data/futures/um/monthly/klines/ETHUSDT/1h/"
                     "ETHUSDT-1h-2024-02.zip")


@pytest.mark.parametrize(("ms", "name"), [(1000, "1s"), (M, "1m"), (15 * M, "15m"), (H, "1h"),
                                          (4 * H, "4h"), (12 * H, "12h"), (D, "1d")])
def test_interval_names(ms: int, name: str) -> None:
    assert interval_name(ms) == name


@pytest.mark.parametrize("ms", [2 * M, 7 * M, 3 * D, 7 * D])
def test_unsupported_interval_is_a_preset_error(ms: int) -> None:
    with pytest.raises(PresetError, match=r"no .* klines") as info:
        binance("https://x").fetch("BTCUSDT", DEC, ms)
    assert "1m" in (info.value.fix or "")


@pytest.mark.parametrize(("options", "key"), [
    ({"market": "coinm"}, "market"), ({"verify_checksum": "maybe"}, "verify_checksum"),
    ({"concurrency": 0}, "concurrency"), ({"base_ur": "x"}, "base_ur"),
    ({"rate_limit": {"requests_per_second": 0}}, "rate_limit.requests_per_second"),
])
def test_bad_option_is_a_preset_error(options: dict[str, object], key: str) -> None:
    with pytest.raises(PresetError) as info:
        make_source("binance_vision", options, base_dir=".")
    assert f"invalid option '{key}" in str(info.value) and "binance_vision" in str(info.value)


def test_defaults_and_rate_limit_profile() -> None:
    src = make_source("binance_vision", {}, base_dir=".")
    assert isinstance(src, BinanceVisionSource)
    assert src.base_url == "https://data.binance.vision"
    assert src.options.market == "spot" and src.options.verify_checksum  # type: ignore[attr-defined]
    assert src.http.bucket is not None and src.http.bucket.limit == DEFAULT_RATE_LIMIT
    tuned = make_source("binance_vision",
                        {"rate_limit": {"requests_per_second": 3, "burst": 6}}, base_dir=".")
    assert tuned.http.bucket.limit == RateLimit(3, 6)  # type: ignore[attr-defined]


def test_one_rate_limit_bucket_per_host_and_profile() -> None:
    def src(url: str, rps: float = 7) -> BinanceVisionSource:
        return BinanceVisionSource(BinanceVisionOptions(
            base_url=url, rate_limit={"requests_per_second": rps, "burst": 2}))  # type: ignore

    a, b = src("https://mirror.example/a"), src("https://mirror.example/b")
    assert a.http.bucket is b.http.bucket  # --jobs N shares the host's profile
    assert src("https://other.example").http.bucket is not a.http.bucket
    assert src("https://mirror.example", rps=8).http.bucket is not a.http.bucket


def test_the_archive_holds_nothing_of_the_current_day() -> None:
    assert BinanceVisionSource.available_until(to_ms("2025-01-15T13:37")) == to_ms("2025-01-15")


def test_symbol_must_be_a_binance_symbol() -> None:
    with pytest.raises(SourceError, match="not a Binance symbol") as info:
        binance("https://x").fetch("BTC/USDT", DEC, M)
    assert "BTCUSDT" in (info.value.fix or "")


def test_credentials_are_not_shown() -> None:
    assert display_url("https://user:s3cret@mirror.example:8443/data/x.zip") == (
        "https://<redacted>@mirror.example:8443/data/x.zip")
    assert display_url("https://data.binance.vision/x") == "https://data.binance.vision/x"


# -- rows ------------------------------------------------------------------------------------------
def test_whole_month_rows_match_the_archive(served: Server, spot: Archive) -> None:
    src = binance(served.url)
    batch = src.fetch("BTCUSDT", DEC, M)
    assert batch.table.column_names == ["ts", "open", "high", "low", "close", "volume",
                                        "quote_volume", "trades"]
    out, flags = fetch_conformed(src, "BTCUSDT", DEC)
    assert flags == {}  # no unit guessing, no cast, nothing out of range
    assert out.num_rows == 31 * 1440
    expected = spot.rows("BTCUSDT", DEC)
    for name in expected.column_names:
        assert out[name].equals(expected[name]), name


def test_window_across_the_millisecond_to_microsecond_change(served: Server,
                                                             spot: Archive) -> None:
    window = TimeRange(to_ms("2024-12-31T12:00"), to_ms("2025-01-02T06:30"))
    raw = binance(served.url).fetch("BTCUSDT", window, M).table
    assert raw.num_rows == (12 + 24 + 6) * 60 + 30
    out, flags = fetch_conformed(binance(served.url), "BTCUSDT", window)
    assert flags == {}
    assert out.equals(spot.rows("BTCUSDT", window).select(out.column_names))
    # the files say so: ms on 31 Dec, us on 1 Jan
    for day, digits in (("2024-12-31", 13), ("2025-01-01", 16)):
        body = spot.files[spot.path("daily", "BTCUSDT", day)]
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            first = zf.read(zf.namelist()[0]).split(b",", 1)[0]
        assert len(first) == digits


def test_rows_are_cut_to_the_window(served: Server, spot: Archive) -> None:
    window = TimeRange(to_ms("2024-12-10T10:17"), to_ms("2024-12-10T10:20"))
    batch = binance(served.url).fetch("BTCUSDT", window, M)
    assert batch.table["ts"].cast(pa.int64()).to_pylist() == [
        (to_ms("2024-12-10T10:17") + i * M) * 1000 for i in range(3)]


def test_futures_files_with_and_without_a_header(server: Server, futures: Archive) -> None:
    route_archive(server, futures)
    src = binance(server.url, market="um_futures")
    window = TimeRange(to_ms("2024-12-18"), to_ms("2025-01-03"))
    out, flags = fetch_conformed(src, "BTCUSDT", window)
    assert flags == {}
    assert out.num_rows == 16 * 1440
    assert out.equals(futures.rows("BTCUSDT", window).select(out.column_names))
    whole, flags = fetch_conformed(src, "BTCUSDT", DEC)  # the monthly zip has no header
    assert flags == {} and whole.num_rows == 31 * 1440
    assert server.count("/data/futures/um/") > 0 and server.count("/data/spot/") == 0


def test_header_only_and_empty_csv() -> None:
    assert read_klines_csv(FUTURES_HEADER.encode() + b"\n", url="x").num_rows == 0
    assert read_klines_csv(b"", url="x").num_rows == 0
    with pytest.raises(Exception, match="not a Binance klines CSV"):
        read_klines_csv(b"1,2,3\n", url="x")


# -- which files are fetched -----------------------------------------------------------------------
def test_monthly_zip_preferred_for_a_whole_month(served: Server) -> None:
    binance(served.url).fetch("BTCUSDT", DEC, M)
    assert served.requests == [
        "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip.CHECKSUM",
        "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip",
    ]


def test_open_month_uses_daily_zips(served: Server) -> None:
    # the open month of `end: now`: coverage stops at the last closed bar
    window = TimeRange(to_ms("2024-12-01"), to_ms("2024-12-05T23:58"))
    out, flags = fetch_conformed(binance(served.url), "BTCUSDT", window)
    assert out.num_rows == 5 * 1440 - 2 and flags == {}
    assert served.count("/data/spot/monthly/") == 0
    assert served.count("/data/spot/daily/") == 10  # 5 days, zip + checksum each


def test_missing_monthly_zip_falls_back_to_daily(server: Server, spot: Archive) -> None:
    route_archive(server, spot.without(spot.path("monthly", "BTCUSDT", "2024-12")))
    out, flags = fetch_conformed(binance(server.url), "BTCUSDT", DEC)
    assert out.num_rows == 31 * 1440 and flags == {}
    assert out.equals(spot.rows("BTCUSDT", DEC).select(out.column_names))
    assert server.count("/data/spot/monthly/") == 1  # its checksum: 404, the zip not asked
    assert server.count("/data/spot/daily/") == 62


def test_missing_day_is_a_gap(server: Server, spot: Archive) -> None:
    route_archive(server, spot.without(spot.path("daily", "BTCUSDT", "2025-01-03")))
    window = TimeRange(to_ms("2025-01-01"), to_ms("2025-01-06"))
    out, flags = fetch_conformed(binance(server.url), "BTCUSDT", window)
    assert out.num_rows == 4 * 1440
    assert flags == {"gap_bars": 1440}


def test_no_file_at_all_is_a_source_error_naming_the_url(served: Server) -> None:
    with pytest.raises(SourceError) as info:
        binance(served.url).fetch("NOPEUSDT", DEC, M)
    err = info.value
    assert err.symbol == "NOPEUSDT" and err.source == "binance_vision"
    assert err.window == DEC.label()
    assert err.url == f"{served.url}/data/spot/daily/klines/NOPEUSDT/1m/NOPEUSDT-1m-2024-12-01.zip"
    assert "listed" in (err.fix or "") and err.exit_code == 3
    assert served.count("/data/spot/monthly/") == 1 and served.count("/data/spot/daily/") == 31


def test_files_not_published_yet_are_a_gap_not_an_error(served: Server) -> None:
    today = TimeRange(to_ms("2025-01-06"), to_ms("2025-01-06T09:00"))
    src = binance(served.url, now_ms=lambda: to_ms("2025-01-06T09:02"))
    out, flags = fetch_conformed(src, "BTCUSDT", today)
    assert out.num_rows == 0 and flags == {"gap_bars": 540}
    with pytest.raises(SourceError):  # the same day, seen a week later, is missing
        binance(served.url, now_ms=lambda: to_ms("2025-01-13")).fetch("BTCUSDT", today, M)


def test_without_checksum_verification_no_checksum_is_fetched(served: Server) -> None:
    out, flags = fetch_conformed(binance(served.url, verify_checksum=False), "BTCUSDT", DEC)
    assert out.num_rows == 31 * 1440 and flags == {}
    assert served.requests == ["/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip"]


# -- failures --------------------------------------------------------------------------------------
MONTH_ZIP = "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip"


def test_checksum_mismatch_fails_fast_naming_the_url(served: Server, spot: Archive) -> None:
    served.route(MONTH_ZIP + ".CHECKSUM", Reply(b"0" * 64 + b"  BTCUSDT-1m-2024-12.zip\n"))
    sleeps = Sleeps()
    with pytest.raises(SourceError) as info:
        binance(served.url, sleeps=sleeps).fetch("BTCUSDT", DEC, M)
    err = info.value
    assert err.url == served.url + MONTH_ZIP
    assert "checksum mismatch" in err.what and "0" * 64 in err.what
    assert (err.symbol, err.window) == ("BTCUSDT", DEC.label())
    text = str(err)
    assert served.url + MONTH_ZIP in text and "BTCUSDT" in text and DEC.label() in text
    assert "mirror" in (err.fix or "")
    assert served.count(MONTH_ZIP) == 2 and not sleeps.calls  # checksum + zip, no retry


def test_a_zip_that_differs_from_its_checksum_is_not_retried(server: Server,
                                                             spot: Archive) -> None:
    route_archive(server, spot)
    other = spot.files[spot.path("monthly", "BTCUSDT", "2024-11")]  # a valid zip, wrong bytes
    server.route(MONTH_ZIP, Reply(other))
    with pytest.raises(SourceError, match="checksum mismatch"):
        binance(server.url).fetch("BTCUSDT", DEC, M)
    assert server.count(MONTH_ZIP) == 2  # once each: zip and checksum


@pytest.mark.parametrize("how", ["connection_cut", "short_file"])
def test_truncated_zip_is_retried(served: Server, spot: Archive, how: str) -> None:
    body = spot.files[MONTH_ZIP]
    cut = (Reply(body, truncate_to=len(body) // 3) if how == "connection_cut"
           else Reply(body[: len(body) // 3]))  # a mirror holding half a file: BadZipFile
    served.route(MONTH_ZIP, cut, cut, Reply(body))
    sleeps = Sleeps()
    src = binance(served.url, sleeps=sleeps)
    out, flags = fetch_conformed(src, "BTCUSDT", DEC)
    assert out.num_rows == 31 * 1440 and flags == {}
    assert served.count(MONTH_ZIP) == 4  # 3 zips + 1 checksum
    assert len(sleeps.calls) == 2 and src.http.stats.retries == 2


def test_429_retry_after_is_honoured(served: Server) -> None:
    served.route(MONTH_ZIP, Reply(b"slow down", 429, {"Retry-After": "3"}),
                 Reply(served.routes[MONTH_ZIP][0].body))
    sleeps = Sleeps()
    out, _ = fetch_conformed(binance(served.url, sleeps=sleeps), "BTCUSDT", DEC)
    assert out.num_rows == 31 * 1440
    assert sleeps.calls == [3.0]  # the backoff (ms) is far smaller: the server's ask wins
    assert served.count(MONTH_ZIP) == 3


@pytest.mark.parametrize("failure", [Reply(b"oops", 500), Reply(b"bad gateway", 502),
                                     Reply(b"unavailable", 503), Reply(reset=True)],
                         ids=["500", "502", "503", "reset"])
def test_server_errors_and_resets_are_retried(served: Server, failure: Reply) -> None:
    good = served.routes[MONTH_ZIP][0]
    served.route(MONTH_ZIP + ".CHECKSUM", failure, served.routes[MONTH_ZIP + ".CHECKSUM"][0])
    served.route(MONTH_ZIP, failure, failure, good)
    sleeps = Sleeps()
    out, flags = fetch_conformed(binance(served.url, sleeps=sleeps), "BTCUSDT", DEC)
    assert out.num_rows == 31 * 1440 and flags == {}
    assert served.count(MONTH_ZIP + ".CHECKSUM") == 2 and served.count(MONTH_ZIP) == 5
    assert len(sleeps.calls) == 3


def test_slow_response_times_out_and_is_retried(served: Server) -> None:
    good = served.routes[MONTH_ZIP][0]
    served.route(MONTH_ZIP, Reply(good.body, delay_s=1.0), good)
    out, _ = fetch_conformed(binance(served.url, timeout_s=0.2), "BTCUSDT", DEC)
    assert out.num_rows == 31 * 1440
    assert served.count(MONTH_ZIP) == 3


def test_exhausted_retries_become_a_source_error(served: Server) -> None:
    served.route(MONTH_ZIP, Reply(b"down", 503))
    sleeps = Sleeps()
    with pytest.raises(SourceError) as info:
        binance(served.url, sleeps=sleeps, max_attempts=3).fetch("BTCUSDT", DEC, M)
    err = info.value
    assert err.what.startswith("gave up after 3 attempts: HTTP 503")
    assert err.url == served.url + MONTH_ZIP and err.window == DEC.label()
    assert "max_attempts" in (err.fix or "") and "rerun" in (err.fix or "")
    assert served.count(MONTH_ZIP) == 4 and len(sleeps.calls) == 2  # checksum + 3 zips


@pytest.mark.parametrize("status", [401, 403])
def test_refused_access_fails_fast(served: Server, status: int) -> None:
    served.route(MONTH_ZIP + ".CHECKSUM", Reply(b"denied", status))
    sleeps = Sleeps()
    with pytest.raises(SourceError) as info:
        binance(served.url, sleeps=sleeps).fetch("BTCUSDT", DEC, M)
    assert f"HTTP {status}" in info.value.what and "access" in (info.value.fix or "")
    assert served.count(MONTH_ZIP) == 1 and not sleeps.calls


def test_malformed_checksum_file_fails_fast(served: Server) -> None:
    served.route(MONTH_ZIP + ".CHECKSUM", Reply(b"<html>gateway login</html>"))
    with pytest.raises(SourceError, match="malformed checksum"):
        binance(served.url).fetch("BTCUSDT", DEC, M)


def test_rate_limit_profile_paces_requests(served: Server) -> None:
    waited: list[float] = []

    def sleep(s: float) -> None:
        waited.append(s)
        import time

        time.sleep(s)

    src = binance(served.url, sleeps=sleep,
                  rate_limit={"requests_per_second": 20, "burst": 2}, concurrency=1)
    src.fetch("BTCUSDT", TimeRange(to_ms("2024-12-01"), to_ms("2024-12-04")), M)
    assert served.count() == 6
    assert sum(waited) >= (6 - 2) / 20 * 0.8  # 2 at once, then one every 50 ms


# -- mirrors ---------------------------------------------------------------------------------------
@pytest.fixture
def memory_mirror(spot: Archive) -> Iterator[str]:
    root = f"memory://binance-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    for path, body in spot.files.items():
        fs.pipe(root[len("memory://"):] + path, body)
    yield root
    fs.rm(root[len("memory://"):], recursive=True)


def test_memory_mirror(memory_mirror: str, spot: Archive) -> None:
    window = TimeRange(to_ms("2024-12-30"), to_ms("2025-01-02"))
    for w in (DEC, window):
        out, flags = fetch_conformed(binance(memory_mirror), "BTCUSDT", w)
        assert flags == {}
        assert out.equals(spot.rows("BTCUSDT", w).select(out.column_names))


def test_local_directory_mirror_relative_to_the_catalog(tmp_path: Path, spot: Archive) -> None:
    for path, body in spot.files.items():
        if "2024-12" in path:
            target = tmp_path / "mirror" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
    src = make_source("binance_vision", {"base_url": "mirror"}, base_dir=str(tmp_path))
    out, flags = fetch_conformed(src, "BTCUSDT", DEC)
    assert out.num_rows == 31 * 1440 and flags == {}
    (tmp_path / "mirror" / MONTH_ZIP.lstrip("/")).write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(SourceError) as info:  # a broken file on disk stays broken
        binance(str(tmp_path / "mirror"), max_attempts=2).fetch("BTCUSDT", DEC, M)
    assert "truncated or corrupt archive" in info.value.what
    assert info.value.url == str(tmp_path / "mirror") + MONTH_ZIP


# -- the contract every source passes --------------------------------------------------------------
SUITE_SPAN = TimeRange(to_ms("2024-12-01"), to_ms("2025-01-08"))  # Dec whole, Jan in days


@pytest.fixture(scope="module")
def suite_archives() -> dict[str, Archive]:
    return {
        "spot": build_archive(["BTCUSDT", "ETHUSDT"], SUITE_SPAN, H),
        "um_futures": build_archive(["BTCUSDT", "ETHUSDT"], SUITE_SPAN, H, market="um_futures",
                                    header_from=to_ms("2025-01-03")),
    }


class TestBinanceVisionSource(SourceSuite):
    @pytest.fixture(params=["spot", "um_futures"])
    def market(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def new_source(self, server: Server, suite_archives: dict[str, Archive],
                   market: str) -> Callable[[], Source]:
        route_archive(server, suite_archives[market])
        return lambda: binance(server.url, market=market)

    @pytest.fixture
    def symbols(self) -> list[str]:
        return ["BTCUSDT", "ETHUSDT"]

    @pytest.fixture
    def interval_ms(self) -> int:
        return H

    @pytest.fixture
    def span(self) -> TimeRange:
        return SUITE_SPAN

    def test_whole_span_equals_the_archive(self, new_source: Callable[[], Source],
                                           suite_archives: dict[str, Archive],
                                           market: str) -> None:
        out = conformed(new_source().fetch("ETHUSDT", SUITE_SPAN, H), SUITE_SPAN, H)
        assert out.equals(suite_archives[market].rows("ETHUSDT", SUITE_SPAN)
                          .select(out.column_names))
