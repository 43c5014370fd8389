"""Any exchange that ccxt knows, through ``fetch_ohlcv`` (optional extra ``qmtl-lock[ccxt]``).

Options::

    exchange: binance                     # a ccxt exchange id (``ccxt.exchanges``)
    page_limit: 1000                      # bars asked per request (an exchange may send fewer)
    market_type: spot                     # which market an exchange-native id means (spot, swap…)
    symbols: {XBTUSD: BTC/USD}            # explicit symbol mapping, checked first
    params: {}                            # extra exchange-specific fetch_ohlcv parameters
    config: {}                            # extra ccxt constructor options (never credentials)
    rate_limit: null                      # default: one request per ``exchange.rateLimit`` ms
    max_attempts: 5                       # and the other network options of every source

Symbols. A symbol in ccxt's unified form (``BTC/USDT``, ``BTC/USDT:USDT``) is used as is. Any
other symbol is looked up in ``symbols`` first, then as the exchange's own market id
(``BTCUSDT`` on Binance is ``BTC/USDT``; the market of type ``market_type`` wins when one id names
several). So the manifests of the ``binance_vision`` and ``ccxt`` sources can share symbols.

Paging. Each partition window is read from its start with ``since``, page after page, until a
bar at or past the window's end, an empty page, or the present. Rows outside the window are
dropped. The last, still-open candle (open time + interval later than ``exchange.milliseconds()``,
or than the engine's clock given by :meth:`Source.use_clock` when that is earlier) is never
returned, so no partition ever holds a bar that may still change.

Rate limit and failures. Requests (``load_markets`` included) pass a token bucket set from
``exchange.rateLimit`` (milliseconds between requests) unless ``rate_limit`` is given. ccxt errors
are classified by class name along the exception's class hierarchy, so this module needs no
``import ccxt``: ``NetworkError`` and its kin (``RequestTimeout``, ``DDoSProtection``,
``RateLimitExceeded``, ``ExchangeNotAvailable``, ``OnMaintenance``, ``OperationFailed``) are retried
with exponential backoff and full jitter (never sooner than ``rateLimit`` after a rate-limit
error); ``AuthenticationError``, ``PermissionDenied``, ``BadSymbol``, ``BadRequest`` and any other
error fail at once with a :class:`SourceError` naming the exchange, symbol and range.

Tests and embedders may pass a ready ``exchange`` object (anything with ``fetch_ohlcv``,
``rateLimit``, ``timeframes`` and ``milliseconds()``) to the constructor; ccxt is then not imported.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

import pyarrow as pa
from qmtl_engine import arrow_np
from qmtl_engine.conformance import RawBatch, TsHints
from qmtl_engine.errors import MissingDependency, PresetError, SourceError
from qmtl_engine.http import FetchStats
from qmtl_engine.ranges import TimeRange, format_interval
from qmtl_engine.ratelimit import Limiter, RateLimit, TokenBucket, limiter
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.options import CcxtOptions, SourceOptions
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

T = TypeVar("T")

TRANSIENT = frozenset({"NetworkError", "RequestTimeout", "DDoSProtection", "RateLimitExceeded",
                       "ExchangeNotAvailable", "OnMaintenance", "OperationFailed", "InvalidNonce",
                       "TimeoutError", "ConnectionError"})
PERMANENT = frozenset({"AuthenticationError", "PermissionDenied", "AccountSuspended",
                       "AccountNotEnabled", "BadSymbol", "BadRequest", "NotSupported",
                       "ArgumentsRequired", "ExchangeError"})
RATE_LIMITED = frozenset({"RateLimitExceeded", "DDoSProtection"})

def classify(exc: BaseException) -> str:
    """``"transient"`` or ``"permanent"``, by the first known class name in the exception's MRO."""
    for klass in type(exc).__mro__:
        if klass.__name__ in TRANSIENT:
            return "transient"
        if klass.__name__ in PERMANENT:
            return "permanent"
    return "permanent"


def _is_transient(exc: BaseException) -> bool:
    return classify(exc) == "transient"


def _rate_limited(exc: BaseException) -> bool:
    return any(k.__name__ in RATE_LIMITED for k in type(exc).__mro__)


def _import_ccxt() -> Any:
    try:
        return importlib.import_module("ccxt")
    except ImportError:
        raise MissingDependency(source="ccxt", module="ccxt", extra="ccxt") from None


class CcxtSource(Source):
    name: ClassVar[str] = "ccxt"
    Options: ClassVar[type[SourceOptions]] = CcxtOptions

    def __init__(self, options: CcxtOptions, *, exchange: Any = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self._exchange = exchange
        self._sleep = sleep
        self._clock = clock
        self._bucket: Limiter | None = None
        self._bucket_ready = False
        self._symbols: dict[str, str] = {}
        self.stats = FetchStats()

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        parsed = cls._parse(CcxtOptions, options)
        return cls(parsed)

    # -- the exchange --------------------------------------------------------------------------
    @property
    def exchange(self) -> Any:
        """The ccxt exchange object, built on first use unless one was injected."""
        if self._exchange is None:
            ccxt = _import_ccxt()
            exchange_id = self.options.exchange
            klass = getattr(ccxt, exchange_id, None)
            if exchange_id not in getattr(ccxt, "exchanges", [exchange_id]) or klass is None:
                raise PresetError(
                    f"ccxt knows no exchange {exchange_id!r}",
                    fix="set `exchange` in the preset's ccxt source options to one of "
                    "`python -c 'import ccxt; print(ccxt.exchanges)'`")
            self._exchange = klass({"enableRateLimit": True, **self.options.config})
        return self._exchange

    @property
    def bucket(self) -> Limiter | None:
        if not self._bucket_ready:
            limit = self.options.rate_limit
            if limit is not None:
                rate: RateLimit | None = RateLimit(limit.requests_per_second, limit.burst)
            else:
                ms = float(getattr(self.exchange, "rateLimit", 0) or 0)
                rate = RateLimit(1000.0 / ms, 1) if ms > 0 else None
            if rate is None:
                self._bucket = None
            elif self._clock is time.monotonic and self._sleep is time.sleep:
                # one limiter per exchange for the whole run: every symbol, thread and worker
                self._bucket = limiter(f"ccxt:{self.options.exchange}", rate)
            else:
                self._bucket = TokenBucket(rate, clock=self._clock, sleep=self._sleep)
            self._bucket_ready = True
        return self._bucket

    def _call(self, what: Callable[[], T], *, symbol: str, window: TimeRange) -> T:
        """One exchange call under the rate limit, retrying transient errors."""
        opts = self.options
        rate_ms = float(getattr(self.exchange, "rateLimit", 0) or 0)

        def wait(state: RetryCallState) -> float:
            backoff = wait_random_exponential(multiplier=opts.backoff_initial_ms / 1000,
                                              max=opts.backoff_max_ms / 1000)(state)
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None and _rate_limited(exc):
                return max(backoff, rate_ms / 1000)
            return backoff

        def count_retry(state: RetryCallState) -> None:
            self.stats.add(retries=1)

        retrying = Retrying(retry=retry_if_exception(_is_transient),
                            stop=stop_after_attempt(opts.max_attempts), wait=wait,
                            sleep=self._sleep, before_sleep=count_retry, reraise=True)
        failure: BaseException
        try:
            for attempt in retrying:
                with attempt:
                    if self.bucket is not None:
                        self.bucket.acquire()
                    self.stats.add(requests=1)
                    return what()
        except Exception as exc:  # classified below, raised outside the except block
            failure = exc
        else:  # tenacity re-raises the last error (reraise=True), so retries never just end
            failure = RuntimeError("the retry loop ended without a result or an error")
        raise self._error(failure, symbol, window) from failure

    def _error(self, exc: BaseException, symbol: str, window: TimeRange) -> SourceError:
        kind = classify(exc)
        names = {k.__name__ for k in type(exc).__mro__}
        where = {"source": self.name, "symbol": symbol, "window": window.label(),
                 "url": self.url(symbol)}
        detail = f"{type(exc).__name__}: {exc}"
        exchange_id = self.options.exchange
        if names & {"AuthenticationError", "PermissionDenied", "AccountSuspended",
                    "AccountNotEnabled"}:
            return SourceError(
                f"{exchange_id} refused the request (bad credentials or no permission): "
                f"{detail}", **where,
                fix="public OHLCV needs no API key: remove credentials from the exchange "
                "configuration, or check the account's permissions")
        if names & {"BadSymbol"}:
            return SourceError(
                f"{exchange_id} has no market {symbol!r}: {detail}", **where,
                fix="write the symbol in ccxt's form (BTC/USDT) or map it under `symbols:` in "
                "the preset's ccxt source options")
        if kind == "permanent":
            return SourceError(
                f"{exchange_id} refused the request: {detail}", **where,
                fix="check the symbol, the interval and the preset's ccxt source options")
        return SourceError(
            f"{exchange_id} did not answer after {self.options.max_attempts} attempts: "
            f"{detail}", **where,
            fix="retry later (`qmtl-lock resolve` keeps finished partitions), or raise "
            "`max_attempts` in the preset's ccxt source options")

    # -- symbols and timeframes ----------------------------------------------------------------
    def market_symbol(self, symbol: str, window: TimeRange | None = None) -> str:
        """ccxt's unified symbol for ``symbol`` (see the module docstring)."""
        if symbol in self.options.symbols:
            return self.options.symbols[symbol]
        if "/" in symbol:
            return symbol
        if symbol in self._symbols:
            return self._symbols[symbol]
        window = window or TimeRange(0, 0)
        exchange = self.exchange
        if not getattr(exchange, "markets", None) and hasattr(exchange, "load_markets"):
            self._call(exchange.load_markets, symbol=symbol, window=window)
        found = (getattr(exchange, "markets_by_id", None) or {}).get(symbol) or []
        if isinstance(found, dict):  # ccxt < 2 kept one market per id
            found = [found]
        typed = [m for m in found if m.get("type", self.options.market_type)
                 == self.options.market_type]
        chosen = typed or (found if len(found) == 1 else [])
        if not chosen:
            raise SourceError(
                f"{self.options.exchange} has no {self.options.market_type} market with id "
                f"{symbol!r}", source=self.name, symbol=symbol,
                window=window.label() if not window.empty else None, url=self.url(symbol),
                fix="write the symbol in ccxt's form (BTC/USDT), map it under `symbols:` or set "
                "`market_type` in the preset's ccxt source options")
        self._symbols[symbol] = str(chosen[0]["symbol"])
        return self._symbols[symbol]

    def timeframe(self, interval_ms: int) -> str:
        tf = format_interval(interval_ms)
        known = getattr(self.exchange, "timeframes", None)
        if known and tf not in known:
            raise PresetError(
                f"{self.options.exchange} has no {tf} candles",
                fix=f"use a preset interval the exchange offers: {', '.join(known)}")
        return tf

    def url(self, symbol: str) -> str:
        mapped = self.options.symbols.get(symbol) or self._symbols.get(symbol) or symbol
        return f"ccxt://{self.options.exchange}/{mapped}"

    # -- rows ----------------------------------------------------------------------------------
    def _now(self) -> int:
        """The present for deciding which bars are closed: the exchange's clock, or the
        engine's when that is earlier (a pinned ``QMTL_LOCK_NOW`` must hold for ccxt too)."""
        now = int(self.exchange.milliseconds())
        return now if self.wall_clock is None else min(now, self.wall_clock.now_ms())

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        exchange = self.exchange
        has = getattr(exchange, "has", None) or {}
        if has.get("fetchOHLCV") is False:
            raise PresetError(f"{self.options.exchange} offers no OHLCV candles through ccxt",
                              fix="pick another exchange in the preset's ccxt source options")
        market = self.market_symbol(symbol, window)
        tf = self.timeframe(interval_ms)
        rows: list[list[Any]] = []
        cursor = window.start
        max_pages = window.bars(interval_ms) + 2
        for _ in range(max_pages):
            now = self._now()
            if cursor >= window.end or cursor + interval_ms > now:
                break  # the window is done, or no closed bar can open at or after the cursor
            since = cursor
            page: list[list[Any]] = self._call(
                functools.partial(exchange.fetch_ohlcv, market, tf, since,
                                  self.options.page_limit, dict(self.options.params)),
                symbol=symbol, window=window)
            if not page:
                break
            last = cursor - 1
            for bar in page:
                t = int(bar[0])
                if t < since:
                    continue  # an exchange that also sends bars before `since`: already read
                last = max(last, t)
                if t < window.end and t + interval_ms <= now:  # closed bars of the window only
                    rows.append([*bar[:6], *[None] * (6 - len(bar))])
            if last < cursor:
                break  # the exchange sent nothing new: it ignores `since` or has no more bars
            cursor = last + interval_ms
        return RawBatch(_table(rows), TsHints(unit="ms"))


def _table(bars: list[list[Any]]) -> pa.Table:
    cols = list(zip(*bars, strict=True)) if bars else [()] * 6
    names = ("open", "high", "low", "close", "volume")
    return pa.table({
        "ts": arrow_np.from_list([int(t) for t in cols[0]], pa.int64()),
        **{n: arrow_np.from_list([None if v is None else float(v) for v in col], pa.float64())
           for n, col in zip(names, cols[1:6], strict=True)},
    })
