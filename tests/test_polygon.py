"""The Polygon aggregates source against a real HTTP server on 127.0.0.1.

The server speaks Polygon's format exactly: literal two-page fixtures for the failure scripts, and
an emulator of ``/v2/aggs/ticker/{T}/range/{m}/{span}/{from}/{to}`` (dates or ms, ``limit``,
``next_url`` with a cursor, 401 for a wrong key) for the shared source suite and the engine run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from http_server import Reply, Server, serve
from qmtl_engine.calendars import get_calendar
from qmtl_engine.conformance import conform
from qmtl_engine.contracts import OHLCV_V1
from qmtl_engine.errors import PresetError, SourceError
from qmtl_engine.http import RateLimit
from qmtl_engine.presets import load_registry
from qmtl_engine.ranges import DAY_MS, HOUR_MS, TimeRange, to_ms
from qmtl_engine.sources import make_source
from qmtl_engine.sources.polygon import PolygonOptions, PolygonSource, redact
from test_sources import SourceFactory, SourceSuite, bar_times

KEY = "pk_Zx81SECRETkey0123456789"  # distinctive, so a leak is easy to find
NY = ZoneInfo("America/New_York")
FAST = {"requests_per_second": 10_000, "burst": 10_000}
PUBLIC = "https://api.polygon.io"
_local = threading.local()


# -- the server --------------------------------------------------------------------------------
class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def cursor(**params: object) -> str:
    return base64.urlsafe_b64encode(urllib.parse.urlencode(params).encode()).decode()


class PolygonEmulator(dict[str, list[Reply]]):
    """Routes for :class:`Server`: scripted paths first, then Polygon's aggregates endpoint.

    ``bars[ticker]`` holds Polygon result objects (t, o, h, l, c, v, vw, n) of one bar size.
    """

    PATH = re.compile(r"^/v2/aggs/ticker/(?P<T>[^/]+)/range/(?P<m>\d+)/(?P<span>[a-z]+)/"
                      r"(?P<frm>[^/]+)/(?P<to>[^/]+)$")

    def __init__(self, bars: dict[str, list[dict[str, Any]]], key: str = KEY,
                 zone: ZoneInfo = NY) -> None:
        super().__init__()
        self.bars = bars
        self.key = key
        self.zone = zone  # dates in from/to are whole days of this zone

    def get(self, path: str, default: Any = None) -> list[Reply] | None:  # type: ignore[override]
        if path in self:
            return super().get(path)
        return [self.answer(path)]

    def answer(self, path: str) -> Reply:
        parts = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        headers = getattr(_local, "headers", {})
        given = query.get("apiKey") or headers.get("Authorization", "").removeprefix("Bearer ")
        rid = hashlib.md5(path.encode()).hexdigest()
        if given != self.key:
            error = "Unknown API Key" if given else "API Key was not provided"
            return Reply(json.dumps({"status": "ERROR", "request_id": rid,
                                     "error": error}).encode(), 401)
        m = self.PATH.match(urllib.parse.unquote(parts.path))
        if not m:
            return Reply(b'{"status":"NOT_FOUND","message":"Not Found"}', 404)
        if "cursor" in query:
            query.update(urllib.parse.parse_qsl(base64.urlsafe_b64decode(query["cursor"])
                                                .decode()))
        limit = int(query.get("limit", 5000))
        ticker, span = m["T"], m["span"]
        lo, hi = self._bound(m["frm"], False), self._bound(m["to"], True)
        hits = [b for b in self.bars.get(ticker, []) if lo <= b["t"] <= hi]
        page, rest = hits[:limit], hits[limit:]
        body: dict[str, Any] = {"ticker": ticker, "queryCount": len(page),
                                "resultsCount": len(page), "adjusted": query.get("adjusted")
                                == "true", "status": "OK", "request_id": rid}
        if page:
            body["results"] = page
            body["count"] = len(page)
        if rest:
            body["next_url"] = (f"{PUBLIC}/v2/aggs/ticker/{ticker}/range/{m['m']}/{span}/"
                                f"{rest[0]['t']}/{hi}?cursor="
                                + cursor(adjusted=query.get("adjusted", "true"), limit=limit,
                                         sort="asc"))
        return Reply(json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    def _bound(self, text: str, end: bool) -> int:
        if text.isdigit():
            return int(text)
        day = date.fromisoformat(text)  # a date: the whole day
        start = int(datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp() * 1000)
        return start + DAY_MS - 1 if end else start


def watch_headers(server: Server) -> list[dict[str, str]]:
    """Record each request's headers (and hand them to the emulator of the same thread)."""
    seen: list[dict[str, str]] = []
    base: Any = server.httpd.RequestHandlerClass

    class Recording(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:
            _local.headers = dict(self.headers)
            seen.append(dict(self.headers))
            super().do_GET()

    server.httpd.RequestHandlerClass = Recording
    return seen


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


def source(server: Server, *, sleep: Sleeps | None = None, key: str | None = KEY,
           **options: Any) -> PolygonSource:
    opts: dict[str, Any] = {"base_url": server.url, "rate_limit": FAST,
                            "backoff_initial_ms": 1, "backoff_max_ms": 5, "timeout_s": 2,
                            **options}
    parsed = PolygonSource.parse_options(opts)
    assert isinstance(parsed, PolygonOptions)
    env = {"POLYGON_API_KEY": key} if key else {}
    return PolygonSource(parsed, environ=env, sleep=sleep or Sleeps())


# -- literal fixtures: AAPL daily bars, 2–8 January 2024, in two pages -------------------------
WEEK = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-09"))
FIRST = "/v2/aggs/ticker/AAPL/range/1/day/2024-01-01/2024-01-08?adjusted=false&sort=asc&limit=3"
CURSOR = "YWRqdXN0ZWQ9ZmFsc2UmbGltaXQ9MyZzb3J0PWFzYw=="  # adjusted=false&limit=3&sort=asc
SECOND = f"/v2/aggs/ticker/AAPL/range/1/day/1704430800000/1704690000000?cursor={CURSOR}"
PAGE1 = f"""{{
 "ticker": "AAPL", "queryCount": 3, "resultsCount": 3, "adjusted": false,
 "results": [
  {{"v": 82488674, "vw": 185.9465, "o": 187.15, "c": 185.64, "h": 188.44, "l": 183.885,
    "t": 1704171600000, "n": 1009074}},
  {{"v": 58414460, "vw": 184.3226, "o": 184.22, "c": 184.25, "h": 185.88, "l": 183.43,
    "t": 1704258000000, "n": 656853}},
  {{"v": 71983570, "vw": 181.9311, "o": 182.15, "c": 181.91, "h": 183.0872, "l": 180.88,
    "t": 1704344400000, "n": 712692}}
 ],
 "status": "OK", "request_id": "6a7e466379af0a71039d60cc78e72282", "count": 3,
 "next_url": "{PUBLIC}{SECOND}"
}}""".encode()
PAGE2 = b"""{
 "ticker": "AAPL", "queryCount": 2, "resultsCount": 2, "adjusted": false,
 "results": [
  {"v": 62379661, "vw": 181.3781, "o": 181.99, "c": 181.18, "h": 182.76, "l": 180.17,
   "t": 1704430800000, "n": 682698},
  {"v": 59144470, "vw": 184.4264, "o": 182.085, "c": 185.56, "h": 185.6, "l": 181.5,
   "t": 1704690000000, "n": 669042}
 ],
 "status": "OK", "request_id": "b2d3bd2ddf1b4fa8a5bf9c0dc1d3c0a4", "count": 2
}"""
SESSIONS = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"]
UNAUTHORIZED = (b'{"status":"ERROR","request_id":"a4f5a1b5bd2c4dbd2f0a1b2c3d4e5f60",'
                b'"error":"Unknown API Key"}')
FORBIDDEN = (b'{"status":"NOT_AUTHORIZED","request_id":"0c1d2e3f40516273a4b5c6d7e8f90a1b",'
             b'"message":"You are not entitled to this data. Please upgrade your plan at '
             b'https://polygon.io/pricing"}')


def two_pages(server: Server, first: list[Reply] | None = None,
              second: list[Reply] | None = None, *, query_key: bool = False) -> tuple[str, str]:
    suffix = f"&apiKey={KEY}" if query_key else ""
    server.route(FIRST + suffix, *(first or []), Reply(PAGE1))
    server.route(SECOND + suffix, *(second or []), Reply(PAGE2))
    return FIRST + suffix, SECOND + suffix


def test_fixture_times_are_new_york_midnights() -> None:
    for page in (PAGE1, PAGE2):
        for bar in json.loads(page)["results"]:
            local = datetime.fromtimestamp(bar["t"] / 1000, NY)
            assert (local.hour, local.minute) == (0, 0)


def test_two_pages_follow_next_url_with_the_key_in_a_header(server: Server) -> None:
    headers = watch_headers(server)
    first, second = two_pages(server)
    batch = source(server, limit=3).fetch("AAPL", WEEK, DAY_MS)
    assert server.requests == [first, second]  # next_url rebased on base_url, cursor kept
    assert [h.get("Authorization") for h in headers] == [f"Bearer {KEY}"] * 2
    assert not any("apiKey" in r for r in server.requests)
    assert batch.hints.unit == "ms"
    assert bar_times(batch).tolist() == [to_ms(d) for d in SESSIONS]  # session date, 00:00 UTC
    rows = batch.table.to_pylist()
    assert rows[0] == {"ts": to_ms("2024-01-02"), "open": 187.15, "high": 188.44,
                       "low": 183.885, "close": 185.64, "volume": 82488674.0,
                       "trades": 1009074.0}
    out, report, _ = conform(batch, window=WEEK, interval_ms=DAY_MS, contract=OHLCV_V1,
                             calendar=get_calendar("XNYS"))
    assert report.nonzero() == {}  # 1 January is a holiday, not a gap
    assert out.column_names == ["ts", "open", "high", "low", "close", "volume", "trades"]


def test_query_auth_appends_the_key_to_every_page(server: Server) -> None:
    first, second = two_pages(server, query_key=True)
    batch = source(server, limit=3, auth="query").fetch("AAPL", WEEK, DAY_MS)
    assert server.requests == [first, second]
    assert batch.table.num_rows == 5


def test_trades_column_is_optional(server: Server) -> None:
    two_pages(server)
    batch = source(server, limit=3, trades=False).fetch("AAPL", WEEK, DAY_MS)
    assert batch.table.column_names == ["ts", "open", "high", "low", "close", "volume"]


FAILURES = {
    "429-retry-after": Reply(b'{"status":"ERROR","error":"You\'ve exceeded the maximum requests '
                             b'per minute, please wait or upgrade your subscription to '
                             b'continue. https://polygon.io/pricing"}', 429,
                             {"Retry-After": "3"}),
    "500": Reply(b'{"status":"ERROR","error":"Internal Server Error"}', 500),
    "502": Reply(b"<html>502 Bad Gateway</html>", 502),
    "reset": Reply(reset=True),
    "slow": Reply(PAGE1, delay_s=0.6),
    "truncated": Reply(PAGE1, truncate_to=40),
    "not-json": Reply(b"<html>maintenance</html>", 200),
}


@pytest.mark.parametrize("page", [1, 2])
@pytest.mark.parametrize("name", list(FAILURES))
def test_transient_failures_are_retried(server: Server, name: str, page: int) -> None:
    failure = FAILURES[name]
    first, second = two_pages(server, [failure] if page == 1 else None,
                              [failure] if page == 2 else None)
    sleeps = Sleeps()
    src = source(server, sleep=sleeps, limit=3, timeout_s=0.3)
    batch = src.fetch("AAPL", WEEK, DAY_MS)
    assert batch.table.num_rows == 5
    assert (server.count(first), server.count(second)) == ((2, 1) if page == 1 else (1, 2))
    assert src.client.stats.retries == 1 and len(sleeps.calls) == 1
    if name == "429-retry-after":
        assert sleeps.calls == [3.0]


@pytest.mark.parametrize(("status", "phrase"), [(429, "rate-limiting"), (503, "did not answer")])
def test_gives_up_after_max_attempts_naming_symbol_range_and_url(
        server: Server, status: int, phrase: str) -> None:
    server.route(FIRST, Reply(b'{"status":"ERROR"}', status))
    sleeps = Sleeps()
    with pytest.raises(SourceError) as info:
        source(server, sleep=sleeps, limit=3, max_attempts=3).fetch("AAPL", WEEK, DAY_MS)
    err = info.value
    assert server.count(FIRST) == 3 and len(sleeps.calls) == 2
    assert phrase in err.what and err.exit_code == 3
    assert (err.source, err.symbol, err.window) == ("polygon", "AAPL", WEEK.label())
    assert err.url == server.url + FIRST
    text = str(err)
    assert "AAPL" in text and WEEK.label() in text and server.url + FIRST in text
    if status == 429:
        assert "rate_limit" in (err.fix or "")


@pytest.mark.parametrize("auth", ["header", "query"])
@pytest.mark.parametrize(("status", "body"), [(401, UNAUTHORIZED), (403, FORBIDDEN)])
def test_bad_credentials_fail_fast(server: Server, status: int, body: bytes, auth: str) -> None:
    first, _ = two_pages(server, [Reply(body, status)], query_key=auth == "query")
    sleeps = Sleeps()
    with pytest.raises(SourceError) as info:
        source(server, sleep=sleeps, limit=3, auth=auth).fetch("AAPL", WEEK, DAY_MS)
    err = info.value
    assert server.count(first) == 1 and not sleeps.calls
    assert f"HTTP {status}" in err.what and "bad credentials" in err.what
    assert "POLYGON_API_KEY" in str(err)
    assert KEY not in str(err) and KEY not in repr(err)
    assert err.url == server.url + FIRST  # the URL we name carries no key


def test_emulator_answers_401_for_a_wrong_key(server: Server) -> None:
    server.routes = PolygonEmulator(daily_bars(["AAPL"]))
    watch_headers(server)
    with pytest.raises(SourceError, match="HTTP 401"):
        source(server, key="pk_wrong").fetch("AAPL", WEEK, DAY_MS)


def test_missing_key_says_how_to_set_it(server: Server) -> None:
    with pytest.raises(SourceError) as info:
        source(server, key=None).fetch("AAPL", WEEK, DAY_MS)
    assert info.value.fix and "export POLYGON_API_KEY=..." in info.value.fix
    assert server.requests == []


def test_key_comes_from_the_named_environment_variable(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    two_pages(server)
    monkeypatch.setenv("MY_POLYGON", KEY)
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    src = make_source("polygon", {"base_url": server.url, "api_key_env": "MY_POLYGON",
                                  "limit": 3, "rate_limit": FAST}, base_dir=".")
    assert src.fetch("AAPL", WEEK, DAY_MS).table.num_rows == 5
    monkeypatch.delenv("MY_POLYGON")
    fresh = make_source("polygon", {"base_url": server.url, "api_key_env": "MY_POLYGON"},
                        base_dir=".")
    with pytest.raises(SourceError, match="MY_POLYGON is not set"):
        fresh.fetch("AAPL", WEEK, DAY_MS)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize("name", ["401", "403", "404", "400", "503", "status-error"])
def test_the_key_never_leaks(server: Server, name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = {"401": Reply(UNAUTHORIZED, 401), "403": Reply(FORBIDDEN, 403),
             "404": Reply(b"{}", 404), "400": Reply(b"{}", 400), "503": Reply(b"", 503),
             "status-error": Reply(json.dumps({"status": "ERROR", "error": f"bad key {KEY}"})
                                   .encode())}[name]
    first, _ = two_pages(server, [reply, reply], query_key=True)
    src = source(server, limit=3, auth="query", max_attempts=2)
    with pytest.raises(SourceError) as info:
        src.fetch("AAPL", WEEK, DAY_MS)
    assert server.count(first) >= 1  # the key did go to the server, in the URL
    for exc in _chain(info.value):
        assert KEY not in str(exc) and KEY not in repr(exc) and KEY not in repr(exc.args)
    assert KEY not in (info.value.url or "")
    assert KEY not in repr(src)
    assert KEY not in caplog.text and "polygon GET" in caplog.text


def test_redact() -> None:
    assert redact(f"GET http://x/a?limit=3&apiKey={KEY}&b=1") == \
        "GET http://x/a?limit=3&apiKey=REDACTED&b=1"
    assert redact(f"token {KEY}!", KEY) == "token REDACTED!"


def test_empty_results_are_an_empty_batch(server: Server) -> None:
    server.route(FIRST, Reply(b'{"ticker":"AAPL","queryCount":0,"resultsCount":0,'
                              b'"adjusted":false,"status":"OK","request_id":"1"}'))
    batch = source(server, limit=3).fetch("AAPL", WEEK, DAY_MS)
    assert batch.table.num_rows == 0
    _, report, _ = conform(batch, window=WEEK, interval_ms=DAY_MS, contract=OHLCV_V1,
                           calendar=get_calendar("XNYS"))
    assert report.nonzero() == {"gap_bars": 5}


def test_a_window_without_a_session_start_asks_nothing(server: Server) -> None:
    inside = TimeRange(to_ms("2024-01-02T01:00:00Z"), to_ms("2024-01-02T23:00:00Z"))
    assert source(server).fetch("AAPL", inside, DAY_MS).table.num_rows == 0
    assert server.requests == []


def test_status_error_in_a_200_answer_fails(server: Server) -> None:
    server.route(FIRST, Reply(b'{"status":"ERROR","request_id":"x","error":"bad ticker"}'))
    with pytest.raises(SourceError, match="status ERROR: bad ticker"):
        source(server, limit=3).fetch("AAPL", WEEK, DAY_MS)


def test_rate_limit_profile() -> None:
    src = PolygonSource(PolygonOptions(), environ={"POLYGON_API_KEY": KEY})
    assert src.client.bucket is not None
    assert src.client.bucket.limit == RateLimit(5 / 60, 5)  # the free tier
    faster = PolygonSource(PolygonOptions.model_validate(
        {"rate_limit": {"requests_per_second": 50, "burst": 10}}),
        environ={"POLYGON_API_KEY": KEY})
    assert faster.client.bucket is not None
    assert faster.client.bucket.limit == RateLimit(50, 10)


def test_builtin_preset_points_at_polygon() -> None:
    preset = load_registry().get("ohlcv.polygon.us_equity.1d")
    src = make_source(preset.data.source.name, preset.data.source.options,
                      base_dir=preset.base_dir)
    assert isinstance(src, PolygonSource)
    year = TimeRange(to_ms("2024-01-01"), to_ms("2025-01-01"))
    assert src.url_for("BRK.A", year, preset.interval_ms) == (
        "https://api.polygon.io/v2/aggs/ticker/BRK.A/range/1/day/2024-01-01/2024-12-31"
        "?adjusted=false&sort=asc&limit=50000")
    assert src.options.api_key_env == "POLYGON_API_KEY"


@pytest.mark.parametrize(("interval", "expected"), [
    (60_000, "range/1/minute/1704067200000/1704070799999"),
    (5 * 60_000, "range/5/minute/1704067200000/1704070799999"),
    (HOUR_MS, "range/1/hour/1704067200000/1704070799999"),
    (1000, "range/1/second/1704067200000/1704070799999"),
])
def test_intraday_ranges_in_milliseconds(interval: int, expected: str) -> None:
    src = PolygonSource(PolygonOptions())
    hour = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-01T01:00:00Z"))
    assert expected in (src.url_for("X:BTCUSD", hour, interval) or "")


@pytest.mark.parametrize("options", [
    {"base_url": f"https://api.polygon.io?apiKey={KEY}"}, {"base_url": "ftp://x"},
    {"daily_timezone": "Mars/Olympus"}, {"limit": 50_001}, {"auth": "cookie"},
    {"api_key": KEY},
])
def test_bad_options_are_preset_errors(options: dict[str, Any]) -> None:
    with pytest.raises(PresetError) as info:
        make_source("polygon", options, base_dir=".")
    assert KEY not in str(info.value)


def test_unsupported_interval_is_a_preset_error(server: Server) -> None:
    with pytest.raises(PresetError, match="cannot serve bars"):
        source(server).fetch("AAPL", WEEK, 7 * DAY_MS)


# -- the emulator: daily equities and hourly crypto --------------------------------------------
def _prices(symbol: str, span: TimeRange, interval_ms: int) -> pa.Table:
    return make_source("synthetic", {"seed": 3, "start_price": 180.0}, base_dir=".").fetch(
        symbol, span, interval_ms).table


def _polygon_bar(row: dict[str, Any], t: int) -> dict[str, Any]:
    o, h, lo, c = (round(row[k], 4) for k in ("open", "high", "low", "close"))
    volume = int(row["volume"] * 100_000)
    return {"v": volume, "vw": round((h + lo + c) / 3, 4), "o": o, "c": c, "h": h, "l": lo,
            "t": t, "n": volume // 97}


def daily_bars(tickers: list[str], start: str = "2023-12-25",
               end: str = "2024-08-01") -> dict[str, list[dict[str, Any]]]:
    """Bars of NYSE sessions whose ``t`` is midnight in New York, as Polygon sends them."""
    span = TimeRange(to_ms(start), to_ms(end))
    sessions = set(get_calendar("XNYS").expected(span, DAY_MS).tolist())
    out: dict[str, list[dict[str, Any]]] = {}
    for ticker in tickers:
        bars = []
        for row in _prices(ticker, span, DAY_MS).to_pylist():
            day = row["ts"].date()
            if to_ms(day) in sessions:
                t = int(datetime(day.year, day.month, day.day, tzinfo=NY).timestamp() * 1000)
                bars.append(_polygon_bar(row, t))
        out[ticker] = bars
    return out


def hourly_bars(tickers: list[str], span: TimeRange) -> dict[str, list[dict[str, Any]]]:
    return {t: [_polygon_bar(row, int(row["ts"].timestamp() * 1000))
                for row in _prices(t, span, HOUR_MS).to_pylist()] for t in tickers}


def test_daily_bars_keep_their_session_date_across_daylight_saving(server: Server) -> None:
    server.routes = PolygonEmulator(daily_bars(["AAPL"]))
    watch_headers(server)
    winter = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-06"))
    summer = TimeRange(to_ms("2024-07-01"), to_ms("2024-07-06"))
    src = source(server, limit=2)
    assert [datetime.fromtimestamp(t / 1000, UTC).strftime("%H:%M %a %d")
            for t in bar_times(src.fetch("AAPL", summer, DAY_MS))] == [
        "00:00 Mon 01", "00:00 Tue 02", "00:00 Wed 03", "00:00 Fri 05"]  # 4 July: closed
    assert bar_times(src.fetch("AAPL", winter, DAY_MS)).tolist() == [
        to_ms(f"2024-01-0{d}") for d in range(2, 6)]
    assert server.count("/v2/aggs/ticker/AAPL/range/1/day/") == 4  # 2 pages each


def test_a_utc_daily_timezone_keeps_utc_midnights(server: Server) -> None:
    bars = daily_bars(["X:BTCUSD"])
    for bar in bars["X:BTCUSD"]:  # crypto-style daily bars opening at 00:00 UTC
        bar["t"] = to_ms(datetime.fromtimestamp(bar["t"] / 1000, NY).date())
    server.routes = PolygonEmulator(bars, zone=ZoneInfo("UTC"))
    watch_headers(server)
    src = source(server, daily_timezone="UTC")
    window = TimeRange(to_ms("2024-01-02"), to_ms("2024-01-04"))
    assert bar_times(src.fetch("X:BTCUSD", window, DAY_MS)).tolist() == [
        to_ms("2024-01-02"), to_ms("2024-01-03")]
    assert server.requests == ["/v2/aggs/ticker/X:BTCUSD/range/1/day/2024-01-02/2024-01-03"
                               "?adjusted=false&sort=asc&limit=50000"]


def test_a_daily_t_that_is_no_midnight_is_left_for_conformance(server: Server) -> None:
    page = json.loads(PAGE2)
    page["results"][0]["t"] += 4 * HOUR_MS  # 04:00 in New York: which session is that?
    server.route(FIRST.replace("limit=3", "limit=50000"), Reply(json.dumps(page).encode()))
    batch = source(server).fetch("AAPL", WEEK, DAY_MS)
    assert bar_times(batch).tolist() == [page["results"][0]["t"], to_ms("2024-01-08")]
    _, report, _ = conform(batch, window=WEEK, interval_ms=DAY_MS, contract=OHLCV_V1,
                           calendar=get_calendar("XNYS"))
    assert report.counts["off_grid_ts"] == 1


class _EmulatedSuite(SourceSuite):
    tickers: tuple[str, ...]
    interval: int
    span_: TimeRange

    def bars(self) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError

    @pytest.fixture
    def new_source(self, server: Server) -> SourceFactory:
        server.routes = PolygonEmulator(self.bars())
        watch_headers(server)
        return lambda: source(server, limit=40)

    @pytest.fixture
    def symbols(self) -> list[str]:
        return list(self.tickers)

    @pytest.fixture
    def interval_ms(self) -> int:
        return self.interval

    @pytest.fixture
    def span(self) -> TimeRange:
        return self.span_


class TestPolygonDailyEquities(_EmulatedSuite):
    tickers = ("AAPL", "MSFT")
    interval = DAY_MS
    span_ = TimeRange(to_ms("2024-01-02"), to_ms("2024-01-09"))  # Tuesday to Tuesday

    def bars(self) -> dict[str, list[dict[str, Any]]]:
        return daily_bars(list(self.tickers))


class TestPolygonHourlyCrypto(_EmulatedSuite):
    tickers = ("X:BTCUSD", "X:ETHUSD")
    interval = HOUR_MS
    span_ = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-08"))

    def bars(self) -> dict[str, list[dict[str, Any]]]:
        return hourly_bars(list(self.tickers), TimeRange(self.span_.start - DAY_MS,
                                                   self.span_.end + DAY_MS))


# -- through the engine ------------------------------------------------------------------------
CATALOG = """\
version: 1
data_presets:
  ohlcv.polygon.loopback.1d:
    kind: ohlcv
    interval_ms: 86400000
    stabilization_bars: 1
    contract: {{name: ohlcv, version: v1}}
    calendar: XNYS
    partition: year
    source:
      name: polygon
      options:
        base_url: "{url}"
        api_key_env: POLYGON_API_KEY
        auth: query
        limit: 2
        rate_limit: {{requests_per_second: 10000, burst: 10000}}
        max_attempts: 2
        backoff_initial_ms: 1
    sla_preset: baseline
    conformance_preset: strict-blocking
"""

MANIFEST = """\
version: 1
store: .seamless/store
presets: [polygon.yaml]
datasets:
  stocks:
    preset: ohlcv.polygon.loopback.1d
    symbols: [AAPL]
    start: 2024-01-01
    end: 2024-01-09
    contract_version: v1
"""


def test_resolve_through_the_engine_keeps_the_key_out_of_the_lock(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qmtl_lock.resolve import PinnedNowClock, resolve

    server.routes = PolygonEmulator(daily_bars(["AAPL"]))
    (tmp_path / "polygon.yaml").write_text(CATALOG.format(url=server.url))
    (tmp_path / "seamless.yaml").write_text(MANIFEST)
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    resolve(tmp_path / "seamless.yaml", clock=PinnedNowClock(to_ms("2024-06-01")))
    lock = (tmp_path / "seamless.lock").read_text()
    assert "rows: 5" in lock and KEY not in lock
    assert all(r.endswith(f"&apiKey={KEY}") for r in server.requests)
    assert len(server.requests) == 3  # 5 sessions, 2 bars a page

    monkeypatch.setenv("POLYGON_API_KEY", "pk_revoked")
    (tmp_path / "seamless.lock").unlink()
    shutil.rmtree(tmp_path / ".seamless")
    with pytest.raises(SourceError) as info:
        resolve(tmp_path / "seamless.yaml", clock=PinnedNowClock(to_ms("2024-06-01")))
    text = str(info.value)
    assert "dataset stocks" in text and "symbol AAPL" in text and "HTTP 401" in text
    assert "range [2024-01-01T00:00:00Z, 2024-01-09T00:00:00Z)" in text
    assert f"url {server.url}/v2/aggs/ticker/AAPL/range/1/day/2024-01-01/2024-01-08" in text
    assert "pk_revoked" not in text
