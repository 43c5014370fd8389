"""Binance public data archives (the ``data.binance.vision`` layout): spot and USD-M futures klines.

Layout, as published by https://github.com/binance/binance-public-data::

    <base_url>/data/spot/monthly/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-<YYYY>-<MM>.zip
    <base_url>/data/spot/daily/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-<YYYY>-<MM>-<DD>.zip
    <base_url>/data/futures/um/{monthly,daily}/klines/...          (USD-M futures, same names)

Each zip holds one CSV of the same name and has a sibling ``<zip>.CHECKSUM`` whose content is
``<sha256 hex>  <zip name>``. The CSV has 12 columns: open_time, open, high, low, close, volume,
close_time, quote_asset_volume, number_of_trades, taker_buy_base, taker_buy_quote, ignore. Spot
files have no header; newer futures files start with a header row (detected, not assumed). Spot
open times are milliseconds until 2024-12-31 and microseconds from 2025-01-01; futures stay in
milliseconds. The unit is read from the magnitude of each file's times, so a window that spans the
change (or a mirror that rewrote old files) is read right.

Options::

    market: spot                        # spot | um_futures
    base_url: https://data.binance.vision   # or a mirror: file path (relative to the catalog),
                                        # file://, memory://, s3://, any fsspec URL
    verify_checksum: true               # sha256 of every zip against its .CHECKSUM
    concurrency: 4                      # files of one window fetched in parallel
    rate_limit: {requests_per_second: 10, burst: 20}   # the default profile
    max_attempts: 5, backoff_initial_ms: 200, backoff_max_ms: 30000, timeout_s: 30

Which files cover a window: for every calendar month the window covers whole, the monthly zip
(and the daily zips of that month if the monthly one is not there: Binance publishes it a few days
into the next month); for a month the window covers in part (the open month of ``end: now``, a
start in mid-month, day partitions), the daily zips of the days it touches. Only rows whose open
time lies in the window are returned.

Failures: a missing daily zip (404) is a gap that conformance counts as ``gap_bars``; a window for
which no file exists at all is a :class:`SourceError` (a wrong symbol, market or interval, or a
range before the listing), unless every missing file is too recent to be published yet. Timeouts,
resets, 429, 5xx and truncated archives are retried by :class:`qmtl_engine.http.HttpClient` with
jittered exponential backoff, honouring Retry-After; a checksum mismatch, 401/403 and exhausted
retries fail fast as a :class:`SourceError` naming the symbol, the range and the URL.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from qmtl_engine import arrow_np
from qmtl_engine.conformance import RawBatch
from qmtl_engine.errors import PresetError, SourceError
from qmtl_engine.http import (
    HttpClient,
    NotFound,
    PermanentError,
    RateLimit,
    TransientError,
)
from qmtl_engine.ranges import (
    DAY_MS,
    TimeRange,
    floor_to,
    format_interval,
    partition_windows,
    window_containing,
)
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.options import BINANCE_VISION_URL, BinanceVisionOptions, SourceOptions

DEFAULT_BASE_URL = BINANCE_VISION_URL
# data.binance.vision is a CDN in front of S3: generous, but not unlimited.
DEFAULT_RATE_LIMIT = RateLimit(requests_per_second=10.0, burst=20)
# Daily files appear the day after, monthly ones in the first days of the next month. A 404 for a
# day that ended less than this long ago is "not published yet", not a missing file.
PUBLICATION_LAG_MS = 2 * DAY_MS

INTERVALS: dict[int, str] = {
    1_000: "1s", 60_000: "1m", 180_000: "3m", 300_000: "5m", 900_000: "15m",
    1_800_000: "30m", 3_600_000: "1h", 7_200_000: "2h", 14_400_000: "4h", 21_600_000: "6h",
    28_800_000: "8h", 43_200_000: "12h", 86_400_000: "1d",
}
MARKET_PATHS = {"spot": "spot", "um_futures": "futures/um"}
CSV_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time",
               "quote_asset_volume", "number_of_trades", "taker_buy_base", "taker_buy_quote",
               "ignore")
# canonical name <- CSV position; trades and quote_volume are the contract's optional columns
_READ = {"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "quote_volume": 7,
         "trades": 8}
_US_THRESHOLD = 10**14  # open times above this are microseconds (ms reach it in year 5138)
_SYMBOL_RE = re.compile(r"^[A-Z0-9_]+$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

@dataclass(frozen=True)
class ArchiveFile:
    """One zip of the archive: ``period`` monthly or daily, holding the bars of ``span``."""

    period: Literal["monthly", "daily"]
    name: str  # BTCUSDT-1m-2024-01.zip
    url: str
    span: TimeRange


def display_url(url: str) -> str:
    """``url`` without ``user:password@``, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"<redacted>@{host}"))


def _is_url(text: str) -> bool:
    return "://" in text


def interval_name(interval_ms: int) -> str:
    """Binance's name of an interval (``60000`` -> ``1m``); PresetError when it has none."""
    name = INTERVALS.get(interval_ms)
    if name is None:
        raise PresetError(
            f"the binance_vision source has no {format_interval(interval_ms)} klines",
            fix="use one of " + ", ".join(INTERVALS.values()) + " (3d, 1w and 1mo bars do not "
            "sit on the epoch-aligned grid of the ohlcv contract)",
        )
    return name


def _empty() -> pa.Table:
    fields = [pa.field("ts", pa.timestamp("us", tz="UTC"))]
    fields += [pa.field(n, pa.float64()) for n in _READ if n != "ts"]
    return pa.schema(fields).empty_table()


def _has_header(data: bytes) -> bool:
    first = data.lstrip()[:1]
    return bool(first) and not (first.isdigit() or first in (b"-", b"+"))


def read_klines_csv(data: bytes, *, url: str) -> pa.Table:
    """The rows of one klines CSV as ``ts`` (timestamp[us, UTC]) and float64 value columns."""
    from pyarrow import csv

    header = _has_header(data)
    body = data.split(b"\n", 1)[1] if header and b"\n" in data else (b"" if header else data)
    if not body.strip():
        return _empty()
    names = [f"f{i}" for i in range(len(CSV_COLUMNS))]
    wanted = {f"f{pos}": name for name, pos in _READ.items()}
    types: dict[str, pa.DataType] = {col: pa.float64() for col in wanted}
    types["f0"] = pa.int64()
    try:
        table = csv.read_csv(
            io.BytesIO(body),
            read_options=csv.ReadOptions(column_names=names),
            convert_options=csv.ConvertOptions(column_types=types,
                                               include_columns=list(wanted)),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PermanentError(
            f"not a Binance klines CSV ({len(CSV_COLUMNS)} columns, open_time first): {exc}",
            url=url) from None
    opened = table["f0"].combine_chunks()
    if opened.null_count:
        raise PermanentError("a Binance klines CSV has rows without an open time", url=url)
    raw = np.asarray(arrow_np.values(opened), dtype=np.int64)
    us = raw if raw.size and int(raw.max()) >= _US_THRESHOLD else raw * 1000
    columns = {"ts": arrow_np.array(us, pa.timestamp("us", tz="UTC"))}
    for col, name in wanted.items():
        if name != "ts":
            columns[name] = table[col]
    return pa.table(columns).select(list(_READ))


def parse_checksum(body: bytes, *, name: str, url: str) -> str:
    """The sha256 hex of a ``.CHECKSUM`` file (``<hex>  <name>``)."""
    text = body.decode("utf-8", errors="replace").strip()
    parts = text.split()
    if not parts or not _HEX64.match(parts[0]):
        raise PermanentError(f"malformed checksum file (expected '<sha256>  {name}')", url=url)
    if len(parts) > 1 and parts[-1].lstrip("*") != name:
        raise PermanentError(f"the checksum file is for {parts[-1]!r}, not {name!r}", url=url)
    return parts[0].lower()


class ChecksumMismatch(PermanentError):
    def __init__(self, *, url: str, name: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch for {name}: its .CHECKSUM says sha256 {expected}, "
                         f"the archive hashes to {actual}", url=url)
        self.expected = expected
        self.actual = actual


def parse_archive(body: bytes, *, url: str, name: str, expected_sha256: str | None) -> pa.Table:
    """Open one klines zip: a cut-off archive is transient, a wrong checksum is permanent."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
            if not members:
                raise PermanentError(f"{name} holds no CSV file", url=url)
            data = zf.read(members[0])  # checks the member's CRC
    except (zipfile.BadZipFile, EOFError, zlib.error, ValueError) as exc:
        raise TransientError(f"truncated or corrupt archive ({len(body)} bytes): {exc}",
                             url=url) from None
    if expected_sha256 is not None:
        actual = hashlib.sha256(body).hexdigest()
        if actual != expected_sha256:
            raise ChecksumMismatch(url=url, name=name, expected=expected_sha256, actual=actual)
    return read_klines_csv(data, url=url)


class BinanceVisionSource(Source):
    name: ClassVar[str] = "binance_vision"
    Options: ClassVar[type[SourceOptions]] = BinanceVisionOptions

    def __init__(self, options: BinanceVisionOptions, *, base_dir: str = ".",
                 sleep: Callable[[float], None] | None = None,
                 now_ms: Callable[[], int] | None = None) -> None:
        self.options = options
        base = options.base_url.rstrip("/")
        if not _is_url(base):
            path = Path(base)
            base = str(path if path.is_absolute() else Path(base_dir) / path)
        self.base_url = base
        # One limiter per host for the whole run: the engine builds a source per partition
        # task, and `--jobs N` or a cluster runs many at once; the profile is the host's.
        parts = urlsplit(base)
        shared = (f"binance_vision:{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}"
                  if sleep is None and _is_url(base) else None)
        self.http: HttpClient = options.client(DEFAULT_RATE_LIMIT, source=self.name,
                                               limit_key=shared,
                                               **({"sleep": sleep} if sleep else {}))
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        parsed = cls._parse(BinanceVisionOptions, options)
        return cls(parsed, base_dir=base_dir)

    # -- where the files are --------------------------------------------------------------------
    def _symbol(self, symbol: str, window: TimeRange) -> str:
        code = symbol.upper()
        if not _SYMBOL_RE.match(code):
            raise SourceError(
                f"{symbol!r} is not a Binance symbol", source=self.name, symbol=symbol,
                window=window.label(),
                fix="write Binance symbols as the exchange does, e.g. BTCUSDT (no slash)")
        return code

    def _url(self, period: str, code: str, interval: str, stem: str) -> str:
        market = MARKET_PATHS[self.options.market]
        return f"{self.base_url}/data/{market}/{period}/klines/{code}/{interval}/{stem}.zip"

    def _file(self, period: Literal["monthly", "daily"], code: str, interval: str,
              span: TimeRange) -> ArchiveFile:
        fmt = "%Y-%m" if period == "monthly" else "%Y-%m-%d"
        stem = f"{code}-{interval}-{time.strftime(fmt, time.gmtime(span.start // 1000))}"
        return ArchiveFile(period, stem + ".zip", self._url(period, code, interval, stem), span)

    def files_for(self, symbol: str, window: TimeRange,
                  interval_ms: int) -> list[tuple[ArchiveFile, list[ArchiveFile]]]:
        """The zips that cover ``window``, each with the daily zips that replace it if missing."""
        code = self._symbol(symbol, window)
        interval = interval_name(interval_ms)
        out: list[tuple[ArchiveFile, list[ArchiveFile]]] = []
        for part in partition_windows(window, "month"):
            month = window_containing(part.start, "month")
            days = [self._file("daily", code, interval, window_containing(d.start, "day"))
                    for d in partition_windows(part, "day")]
            if part == month:
                out.append((self._file("monthly", code, interval, month), days))
            else:
                out.extend((day, []) for day in days)
        return out

    @staticmethod
    def available_until(now_ms: int) -> int:
        """End of the data the archive can hold at ``now_ms``: daily files appear the day after,
        so nothing of the current UTC day is there yet. (For the planner of ``end: now``.)"""
        return floor_to(now_ms, DAY_MS)

    # -- fetching -------------------------------------------------------------------------------
    def _get(self, f: ArchiveFile) -> pa.Table | None:
        """The rows of one zip, or None when the archive does not have it."""
        expected = None
        try:
            if self.options.verify_checksum:
                expected = self.http.fetch(
                    f.url + ".CHECKSUM",
                    lambda body: parse_checksum(body, name=f.name, url=f.url + ".CHECKSUM"))
            return self.http.fetch(
                f.url, lambda body: parse_archive(body, url=f.url, name=f.name,
                                                  expected_sha256=expected))
        except NotFound:
            return None

    def _get_all(self, files: list[ArchiveFile]) -> list[pa.Table | None]:
        if len(files) > 1 and self.options.concurrency > 1:
            workers = min(self.options.concurrency, len(files))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(self._get, files))
        return [self._get(f) for f in files]

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        plan = self.files_for(symbol, window, interval_ms)
        tried: list[ArchiveFile] = []
        tables: list[pa.Table] = []
        try:
            first = self._get_all([main for main, _ in plan])
            replacements: list[ArchiveFile] = []
            for (main, days), table in zip(plan, first, strict=True):
                if table is None and days:
                    replacements.extend(days)  # the monthly zip is not there (yet): use days
                elif table is None:
                    tried.append(main)
            second = dict(zip(replacements, self._get_all(replacements), strict=True))
        except ChecksumMismatch as exc:
            raise self._error(exc, symbol, window, fix=(
                "the archive or the mirror at base_url holds a corrupt file: fix or re-sync the "
                "mirror, then rerun `qmtl-lock resolve` (finished partitions are kept)")) from None
        except PermanentError as exc:
            raise self._error(exc, symbol, window, fix=(
                "check base_url, market and interval of the preset's binance_vision source, and "
                "the mirror's access rights")) from None
        except TransientError as exc:
            raise self._error(
                exc, symbol, window, attempts=self.http.max_attempts,
                fix="the archive did not answer reliably: rerun `qmtl-lock resolve` later "
                "(finished partitions are kept), or raise max_attempts / timeout_s or lower "
                "rate_limit in the preset's binance_vision source options") from None
        for (_, days), table in zip(plan, first, strict=True):  # in time order
            if table is not None:
                tables.append(table)
            for day in days if table is None else []:
                got = second[day]
                if got is None:
                    tried.append(day)
                else:
                    tables.append(got)
        if not tables:
            self._nothing_found(symbol, window, interval_name(interval_ms), tried)
            return RawBatch(_empty())
        table = pa.concat_tables(tables)
        ts = table["ts"].cast(pa.int64())
        keep = pc.and_(pc.greater_equal(ts, window.start * 1000),
                       pc.less(ts, window.end * 1000))
        return RawBatch(table.filter(keep))

    def _nothing_found(self, symbol: str, window: TimeRange, interval: str,
                       tried: list[ArchiveFile]) -> None:
        """No file at all for the window: an error, unless the files may just be unpublished."""
        if not tried:
            return
        recent = self._now_ms() - PUBLICATION_LAG_MS
        if all(f.span.end > recent for f in tried):
            return  # too new to be in the archive yet: a gap, counted by conformance
        raise SourceError(
            f"the Binance {self.options.market} archive has no {interval} klines for "
            f"{symbol.upper()} in this range (HTTP 404 for every file)",
            source=self.name, symbol=symbol, window=window.label(),
            url=display_url(tried[0].url),
            fix="check the symbol, the market (spot or um_futures), the interval and that the "
            "range starts after the symbol was listed"
            + ("; a mirror without .CHECKSUM files needs verify_checksum: false"
               if self.options.verify_checksum else ""))

    def _error(self, exc: PermanentError | TransientError, symbol: str, window: TimeRange, *,
               fix: str, attempts: int | None = None) -> SourceError:
        what = str(exc).replace(exc.url, display_url(exc.url))
        if attempts is not None:
            what = f"gave up after {attempts} attempts: {what}"
        return SourceError(what, source=self.name, symbol=symbol, window=window.label(),
                           url=display_url(exc.url), fix=fix)
