"""Polygon.io aggregates (``/v2/aggs/ticker/{T}/range/{m}/{span}/{from}/{to}``).

Options::

    base_url: https://api.polygon.io     # or a proxy / mirror with the same paths
    api_key_env: POLYGON_API_KEY          # the environment variable that holds the key
    auth: header                          # header: "Authorization: Bearer <key>"; query: ?apiKey=
    limit: 50000                          # bars per page (Polygon's maximum is 50000)
    trades: true                          # Polygon's ``n`` as the optional ``trades`` column
                                          # (a bar without ``n`` gets NaN: counted non_finite)
    daily_timezone: America/New_York      # the zone whose midnight opens Polygon's daily bars
    rate_limit: {requests_per_second: 0.0833, burst: 5}   # default: the free tier, 5 per minute
    max_attempts: 5                       # and the other network options of every source

One request range per partition window; ``next_url`` pages are followed until the window is
complete. The key is read from the environment when the first window is fetched, is sent on every
request (pages included) and never appears in a message, a log line, a URL we print or the lock:
the preset names only the variable.

Timestamps. Polygon's ``t`` is the start of the aggregate window in epoch milliseconds. Intraday
bars keep ``t`` as their canonical ``ts``. A daily bar's ``t`` is midnight in New York
(``2024-01-02T05:00:00Z`` for the session of 2 January 2024), which is not on a UTC day grid; the
canonical ``ts`` of a daily bar is its **session date at 00:00 UTC** (``2024-01-02T00:00:00Z``),
the convention of every other daily source here (the Quandl demo data included). A daily ``t``
that is not a local midnight is kept as is, so conformance flags it ``off_grid_ts`` instead of
the source guessing a date.

Adjustment. The preset's ``adjustment`` decides Polygon's ``adjusted=`` query parameter: ``raw``
(the default) sends ``adjusted=false``, ``splits`` sends ``adjusted=true``. Polygon adjusts for
splits only, so ``splits_dividends`` is refused when the catalog loads. Split-adjusted history is
rewritten at every new split: a closed partition fetched again after a split differs, and
``resolve --refresh`` reports it as restated. The old option ``adjusted`` is accepted only where
it agrees with ``adjustment`` (``adjusted: false`` with raw, as older catalogs say); any other use
is refused with the fix (see docs/sources.md#adjustment).

Failures. Timeouts, connection resets, HTTP 429 (``Retry-After`` honoured) and 5xx are retried with
exponential backoff and jitter (:mod:`qmtl_engine.http`). HTTP 401 and 403 (bad credentials or a
plan that does not cover the data), 404 and other 4xx fail at once with a :class:`SourceError`
naming the symbol, the range and the URL (``apiKey`` redacted). A window without bars (a holiday, a
ticker that did not trade) is an empty batch: conformance counts the gap against the calendar.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
from qmtl_engine import arrow_np
from qmtl_engine.conformance import RawBatch, TsHints
from qmtl_engine.errors import PresetError, SourceError
from qmtl_engine.http import HttpClient, NotFound, PermanentError, RateLimit, TransientError
from qmtl_engine.ranges import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, TimeRange, ceil_to, to_ms
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.options import API_KEY_PARAM, PolygonOptions, SourceOptions

logger = logging.getLogger(__name__)

#: Polygon's free tier allows 5 requests per minute; paid plans override ``rate_limit``.
DEFAULT_RATE = RateLimit(requests_per_second=5 / 60, burst=5)
MAX_PAGES = 10_000  # a guard against a server that keeps sending the same next_url
REDACTED = "REDACTED"
_KEY_PARAM = API_KEY_PARAM
_OK_STATUSES = ("OK", "DELAYED")


def redact(text: str, key: str | None = None) -> str:
    """``text`` with every ``apiKey=...`` value and every copy of ``key`` replaced."""
    text = _KEY_PARAM.sub(rf"\g<1>{REDACTED}", text)
    if key:
        text = text.replace(key, REDACTED)
    return text


def timespan(interval_ms: int) -> tuple[int, str]:
    """Polygon's ``(multiplier, timespan)`` for a bar interval: 1d, or whole s/m/h below a day."""
    if interval_ms == DAY_MS:
        return 1, "day"
    if 0 < interval_ms < DAY_MS:
        for span, size in (("hour", HOUR_MS), ("minute", MINUTE_MS), ("second", SECOND_MS)):
            if interval_ms % size == 0:
                return interval_ms // size, span
    raise PresetError(
        f"the polygon source cannot serve bars of {interval_ms} ms",
        fix="use a preset interval of 1d or a whole number of seconds, minutes or hours below a "
        "day",
    )


class PolygonSource(Source):
    name: ClassVar[str] = "polygon"
    Options: ClassVar[type[SourceOptions]] = PolygonOptions

    def __init__(self, options: PolygonOptions, *, environ: Mapping[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = options
        self._environ = environ
        self._sleep = sleep
        self._key: str | None = None
        self._client: HttpClient | None = None
        self._zone = ZoneInfo(options.daily_timezone)
        # until the engine says (use_adjustment), what the old `adjusted` option asked for
        self.adjustment = "splits" if options.adjusted else "raw"

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        parsed = cls._parse(PolygonOptions, options)
        return cls(parsed)

    def __repr__(self) -> str:  # never the key
        return f"PolygonSource(base_url={self.options.base_url!r}, " \
               f"api_key_env={self.options.api_key_env!r})"

    # -- requests ------------------------------------------------------------------------------
    @property
    def client(self) -> HttpClient:
        """The HTTP client (one per source, so the rate limit spans every window)."""
        if self._client is None:
            key = self._api_key()
            headers = {"Accept": "application/json"}
            if self.options.auth == "header":
                headers["Authorization"] = f"Bearer {key}"
            # One limiter per endpoint and API key for the whole run (every symbol, thread and
            # worker): Polygon counts requests per key. The key enters only as a short digest.
            shared = None if self._sleep is not time.sleep else (
                f"polygon:{self.options.base_url}:"
                f"{hashlib.sha256(key.encode()).hexdigest()[:12]}")
            self._client = self.options.client(DEFAULT_RATE, source=self.name, sleep=self._sleep,
                                               headers=headers, limit_key=shared)
        return self._client

    def _api_key(self) -> str:
        if self._key is None:
            env = os.environ if self._environ is None else self._environ
            var = self.options.api_key_env
            key = (env.get(var) or "").strip()
            if not key:
                raise SourceError(
                    f"no Polygon API key: the environment variable {var} is not set",
                    source=self.name,
                    fix=f"export {var}=... (your key from https://polygon.io/dashboard/keys)",
                )
            self._key = key
        return self._key

    def request_range(self, window: TimeRange, interval_ms: int) -> tuple[str, str] | None:
        """Polygon's inclusive ``from`` and ``to`` for a window, or None when it holds no bar."""
        if interval_ms == DAY_MS:  # session dates whose 00:00 UTC lies in the window
            first = ceil_to(window.start, DAY_MS)
            last = ceil_to(window.end, DAY_MS) - DAY_MS
            if last < first:
                return None
            return _date(first), _date(last)
        if window.empty:
            return None
        return str(window.start), str(window.end - 1)

    def url_for(self, symbol: str, window: TimeRange, interval_ms: int) -> str | None:
        """The first page's URL, without credentials (None when the window holds no bar)."""
        span = self.request_range(window, interval_ms)
        if span is None:
            return None
        mult, unit = timespan(interval_ms)
        ticker = urllib.parse.quote(symbol, safe=":")
        adjusted = "true" if self.adjustment == "splits" else "false"
        query = urllib.parse.urlencode({"adjusted": adjusted,
                                        "sort": "asc", "limit": self.options.limit})
        return (f"{self.options.base_url}/v2/aggs/ticker/{ticker}/range/{mult}/{unit}/"
                f"{span[0]}/{span[1]}?{query}")

    def _next(self, next_url: str) -> str:
        """``next_url`` on our base URL (credentials go to no other host), without any key."""
        base = self.options.base_url
        if not next_url.startswith(base + "/"):
            parts = urllib.parse.urlsplit(next_url)
            next_url = base + parts.path + (f"?{parts.query}" if parts.query else "")
        parts = urllib.parse.urlsplit(next_url)  # the cursor is kept byte for byte
        query = "&".join(p for p in parts.query.split("&")
                         if p and p.split("=", 1)[0].lower() != "apikey")
        return urllib.parse.urlunsplit(parts._replace(query=query))

    def _signed(self, url: str) -> str:
        if self.options.auth != "query":
            return url
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        return f"{url}{sep}apiKey={urllib.parse.quote(self._api_key(), safe='')}"

    def _get_page(self, url: str, symbol: str, window: TimeRange) -> dict[str, Any]:
        failure: tuple[str, str, int | None] | None = None
        attempts = self.client.max_attempts
        logger.debug("polygon GET %s", url)
        try:
            page = self.client.fetch(self._signed(url), _parse_json)
        except NotFound:
            failure = ("not found", "permanent", 404)
        except PermanentError as exc:
            failure = (str(exc), "permanent", exc.status)
        except TransientError as exc:
            failure = (str(exc), "transient", exc.status)
        if failure is not None:  # raised outside the except block: no chained key-bearing error
            raise self._error(failure, url, symbol, window, attempts)
        status = str(page.get("status", "OK"))
        if status not in _OK_STATUSES:
            detail = page.get("error") or page.get("message") or "no detail"
            raise SourceError(
                redact(f"Polygon answered status {status}: {detail}", self._key),
                source=self.name, symbol=symbol, window=window.label(), url=url,
                fix="check the ticker, the range and that your Polygon plan covers them")
        return page

    def _error(self, failure: tuple[str, str, int | None], url: str, symbol: str,
               window: TimeRange, attempts: int) -> SourceError:
        detail, kind, status = failure
        detail = redact(detail, self._key)
        var = self.options.api_key_env
        where = {"source": self.name, "symbol": symbol, "window": window.label(), "url": url}
        if status == 401:
            return SourceError(
                f"Polygon rejected the API key in {var} (HTTP 401): bad credentials", **where,
                fix=f"export {var}=... with a valid key from https://polygon.io/dashboard/keys")
        if status == 403:
            return SourceError(
                f"Polygon refused access (HTTP 403): bad credentials, or your plan does not "
                f"include {symbol} over this range", **where,
                fix=f"check the key in {var} and that your Polygon plan covers this data")
        if status == 404:
            return SourceError(
                "Polygon has no such endpoint (HTTP 404)", **where,
                fix="check `base_url` in the preset's polygon source options and the ticker")
        if kind == "permanent":
            return SourceError(
                f"Polygon refused the request: {detail}", **where,
                fix="check the ticker and the preset's polygon source options")
        if status == 429:
            return SourceError(
                f"Polygon kept rate-limiting the requests (HTTP 429) after {attempts} attempts",
                **where,
                fix="lower `rate_limit` in the preset's polygon source options (the free tier "
                "allows 5 requests per minute) or retry later; finished partitions are kept")
        return SourceError(
            f"Polygon did not answer after {attempts} attempts: {detail}", **where,
            fix="retry later (`qmtl-lock resolve` keeps finished partitions), or raise "
            "`max_attempts` / `timeout_s` in the preset's polygon source options")

    # -- rows ----------------------------------------------------------------------------------
    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        url = self.url_for(symbol, window, interval_ms)
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise SourceError(
                    "Polygon's next_url pagination does not advance", source=self.name,
                    symbol=symbol, window=window.label(), url=url,
                    fix="retry later; report the URL to Polygon if it persists")
            seen.add(url)
            page = self._get_page(url, symbol, window)
            got = page.get("results") or []
            if not isinstance(got, list):
                raise SourceError("Polygon's `results` is not a list", source=self.name,
                                  symbol=symbol, window=window.label(), url=url)
            results.extend(got)
            nxt = page.get("next_url")
            url = self._next(str(nxt)) if nxt else None
        try:
            table = self._table(results, interval_ms)
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(
                f"unexpected bar in Polygon's response: {type(exc).__name__}: {exc}",
                source=self.name, symbol=symbol, window=window.label(),
                url=self.url_for(symbol, window, interval_ms),
                fix="check `base_url`: it must serve Polygon's aggregates format") from None
        ts = table["ts"]
        keep = pc.and_(pc.greater_equal(ts, arrow_np.scalar(window.start, pa.int64())),
                       pc.less(ts, arrow_np.scalar(window.end, pa.int64())))
        return RawBatch(table.filter(keep), TsHints(unit="ms"))

    def _table(self, results: list[dict[str, Any]], interval_ms: int) -> pa.Table:
        daily = interval_ms == DAY_MS
        ts = [self._session_day(int(r["t"])) if daily else int(r["t"]) for r in results]
        cols: dict[str, pa.Array] = {"ts": arrow_np.from_list(ts, pa.int64())}
        for name, key in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c"),
                          ("volume", "v")):
            cols[name] = arrow_np.from_list([_number(r.get(key)) for r in results],
                                            pa.float64())
        if self.options.trades:
            cols["trades"] = arrow_np.from_list([_number(r.get("n")) for r in results],
                                                pa.float64())
        return pa.table(cols)

    def _session_day(self, t: int) -> int:
        """00:00 UTC of the session date of a daily bar opening at local midnight ``t``."""
        if t % 1000:
            return t
        local = datetime.fromtimestamp(t // 1000, self._zone)
        if (local.hour, local.minute, local.second) != (0, 0, 0):
            return t  # not a local midnight: left for conformance to flag as off grid
        return to_ms(local.date())


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise TransientError(f"the response is not JSON ({len(body)} bytes)", url="") from None
    if not isinstance(data, dict):
        raise PermanentError("the response is not a JSON object", url="")
    return data
