"""The ccxt source with a fake exchange injected through its constructor (ccxt is not needed).

The fake behaves like a ccxt exchange: ``fetch_ohlcv(symbol, timeframe, since, limit, params)``
returns ``[[ms, o, h, l, c, v], ...]`` from ``since`` on, at most its own page size, the open
candle included; ``rateLimit``, ``timeframes``, ``has``, ``milliseconds()``, ``load_markets()`` and
``markets_by_id`` as in ccxt 4. Its errors carry ccxt's class names and hierarchy.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import pytest
from qmtl_engine.errors import MissingDependency, PresetError, SourceError
from qmtl_engine.ranges import DAY_MS, HOUR_MS, MINUTE_MS, TimeRange, to_ms
from qmtl_engine.sources import get_source_class, make_source
from qmtl_engine.sources.ccxt_source import CcxtOptions, CcxtSource, classify
from test_sources import SourceFactory, SourceSuite, bar_times, row_set


# -- ccxt's error hierarchy (ccxt 4.4), by name ------------------------------------------------
class BaseError(Exception):
    pass


class ExchangeError(BaseError):
    pass


class AuthenticationError(ExchangeError):
    pass


class PermissionDenied(AuthenticationError):
    pass


class BadRequest(ExchangeError):
    pass


class BadSymbol(BadRequest):
    pass


class OperationFailed(BaseError):
    pass


class NetworkError(OperationFailed):
    pass


class DDoSProtection(NetworkError):
    pass


class RateLimitExceeded(NetworkError):
    pass


class ExchangeNotAvailable(NetworkError):
    pass


class OnMaintenance(ExchangeNotAvailable):
    pass


class RequestTimeout(NetworkError):
    pass


# -- the fake exchange -------------------------------------------------------------------------
T0 = to_ms("2024-01-01")
SPAN = TimeRange(T0, T0 + 7 * DAY_MS)
TIMEFRAMES = {"1m": "1m", "5m": "5m", "1h": "1h", "1d": "1d"}
MARKETS = [
    {"id": "BTCUSDT", "symbol": "BTC/USDT", "type": "spot"},
    {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "type": "swap"},
    {"id": "ETHUSDT", "symbol": "ETH/USDT", "type": "spot"},
]


def history(symbol: str, interval_ms: int, span: TimeRange) -> list[list[float]]:
    return [list(bar) for bar in _history(symbol, interval_ms, span)]


@functools.cache
def _history(symbol: str, interval_ms: int, span: TimeRange) -> tuple[tuple[float, ...], ...]:
    tbl = make_source("synthetic", {"seed": 9, "start_price": 40_000.0}, base_dir=".").fetch(
        symbol, span, interval_ms).table
    cols = [tbl["ts"].cast("int64").to_pylist(),
            *(tbl[c].to_pylist() for c in ("open", "high", "low", "close", "volume"))]
    return tuple(zip(*cols, strict=True))


class FakeExchange:
    id = "fakex"

    def __init__(self, *, now: int, rate_limit_ms: float = 50, max_page: int = 500,
                 failures: list[BaseException] | None = None, ignore_since: bool = False,
                 span: TimeRange = SPAN) -> None:
        self.now = now
        self.rateLimit = rate_limit_ms
        self.timeframes = dict(TIMEFRAMES)
        self.has = {"fetchOHLCV": True}
        self.max_page = max_page
        self.failures = list(failures or [])
        self.ignore_since = ignore_since
        self.span = span
        self.calls: list[tuple[str, str, int, int]] = []
        self.loads = 0
        self.markets: dict[str, Any] = {}
        self.markets_by_id: dict[str, list[dict[str, Any]]] = {}
        self._bars: dict[tuple[str, str], list[list[float]]] = {}

    def milliseconds(self) -> int:
        return self.now

    def load_markets(self) -> dict[str, Any]:
        self.loads += 1
        self.markets = {m["symbol"]: m for m in MARKETS}
        self.markets_by_id = {}
        for m in MARKETS:
            self.markets_by_id.setdefault(m["id"], []).append(m)
        return self.markets

    def bars(self, symbol: str, timeframe: str) -> list[list[float]]:
        if (symbol, timeframe) not in self._bars:
            interval = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": HOUR_MS, "1d": DAY_MS}
            self._bars[symbol, timeframe] = history(symbol, interval[timeframe], self.span)
        return self._bars[symbol, timeframe]

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                    limit: int | None = None, params: dict[str, Any] | None = None
                    ) -> list[list[float]]:
        self.calls.append((symbol, timeframe, since or 0, limit or 0))
        if self.failures:
            raise self.failures.pop(0)
        if symbol not in {m["symbol"] for m in MARKETS}:
            raise BadSymbol(f"fakex does not have market symbol {symbol}")
        rows = [b for b in self.bars(symbol, timeframe) if b[0] <= self.now]  # open one too
        if not self.ignore_since and since is not None:
            rows = [b for b in rows if b[0] >= since]
        return [list(b) for b in rows[: min(limit or self.max_page, self.max_page)]]


class FakeTime:
    """A monotonic clock that only sleeping moves, so rate-limit waits are exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        # A nanosecond more: TokenBucket's refill (1/rate * rate) can land a hair under one
        # token, and a clock that only sleeping moves would then never get there.
        self.now += seconds + 1e-9


def ccxt(exchange: FakeExchange, time: FakeTime | None = None, **options: Any) -> CcxtSource:
    time = time or FakeTime()
    opts = CcxtOptions.model_validate({"exchange": "fakex", "backoff_initial_ms": 10,
                                       "backoff_max_ms": 1000, **options})
    return CcxtSource(opts, exchange=exchange, sleep=time.sleep, clock=time.clock)


LATER = SPAN.end + DAY_MS
DAY1 = TimeRange(T0, T0 + DAY_MS)


# -- paging ------------------------------------------------------------------------------------
def test_paginates_with_since_until_the_window_end() -> None:
    ex = FakeExchange(now=LATER)
    batch = ccxt(ex, page_limit=500).fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert [c[2] for c in ex.calls] == [T0, T0 + 500 * MINUTE_MS, T0 + 1000 * MINUTE_MS]
    assert {c[:2] for c in ex.calls} == {("BTC/USDT", "1m")} and ex.loads == 0
    assert bar_times(batch).tolist() == list(range(T0, DAY1.end, MINUTE_MS))
    expected = history("BTC/USDT", MINUTE_MS, DAY1)
    assert batch.table.to_pylist()[700] == dict(zip(
        ["ts", "open", "high", "low", "close", "volume"], expected[700], strict=True))
    assert batch.hints.unit == "ms"


def test_pages_smaller_than_asked_are_followed() -> None:
    ex = FakeExchange(now=LATER, max_page=300)
    batch = ccxt(ex, page_limit=1000).fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert len(ex.calls) == 5 and all(c[3] == 1000 for c in ex.calls)
    assert batch.table.num_rows == 1440


def test_the_open_candle_is_never_returned() -> None:
    now = T0 + 90 * MINUTE_MS + 30_000  # bar 90 opened 30 s ago and is still open
    ex = FakeExchange(now=now)
    src = ccxt(ex)
    batch = src.fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert bar_times(batch).tolist() == list(range(T0, T0 + 90 * MINUTE_MS, MINUTE_MS))
    assert len(ex.calls) == 1  # no request past the present
    ex.now = T0 + 91 * MINUTE_MS  # now it closed
    assert bar_times(src.fetch("BTC/USDT", DAY1, MINUTE_MS))[-1] == T0 + 90 * MINUTE_MS


@pytest.mark.parametrize(("exchange_now", "engine_now", "closed"), [
    (LATER, T0 + 90 * MINUTE_MS + 30_000, 90),  # QMTL_LOCK_NOW pinned before the exchange
    (T0 + 90 * MINUTE_MS + 30_000, LATER, 90),  # the exchange is behind: its clock wins
    (LATER, T0 + 90 * MINUTE_MS, 90),  # bar 90 opens at the pinned now: not closed
], ids=["pinned-earlier", "exchange-earlier", "at-a-bar-open"])
def test_the_earlier_of_the_exchange_and_engine_clocks_decides_what_is_closed(
        exchange_now: int, engine_now: int, closed: int) -> None:
    from qmtl_engine.clock import FixedClock

    ex = FakeExchange(now=exchange_now)
    src = ccxt(ex)
    src.use_clock(FixedClock(engine_now))
    batch = src.fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert bar_times(batch).tolist() == list(range(T0, T0 + closed * MINUTE_MS, MINUTE_MS))
    assert all(c[2] < T0 + closed * MINUTE_MS for c in ex.calls)  # nothing asked past it


def test_a_window_in_the_future_asks_nothing() -> None:
    ex = FakeExchange(now=T0)
    assert ccxt(ex).fetch("BTC/USDT", DAY1, MINUTE_MS).table.num_rows == 0
    assert ex.calls == []


def test_an_exchange_that_ignores_since_cannot_loop_forever() -> None:
    ex = FakeExchange(now=LATER, ignore_since=True, max_page=100)
    window = TimeRange(T0 + DAY_MS, T0 + 2 * DAY_MS)
    batch = ccxt(ex, page_limit=100).fetch("BTC/USDT", window, MINUTE_MS)
    assert batch.table.num_rows == 0 and len(ex.calls) == 1


def test_empty_page_ends_the_window() -> None:
    ex = FakeExchange(now=LATER, span=TimeRange(T0, T0 + 2 * HOUR_MS))  # delisted after 2 h
    batch = ccxt(ex).fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert batch.table.num_rows == 120 and len(ex.calls) == 2


# -- rate limit --------------------------------------------------------------------------------
def test_the_exchange_rate_limit_is_honoured() -> None:
    ex, time = FakeExchange(now=LATER, rate_limit_ms=250), FakeTime()
    ccxt(ex, time, page_limit=500).fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert len(ex.calls) == 3
    assert time.sleeps == pytest.approx([0.25, 0.25])  # one request per rateLimit ms


def test_the_rate_limit_option_overrides_the_exchange() -> None:
    ex, time = FakeExchange(now=LATER, rate_limit_ms=250), FakeTime()
    ccxt(ex, time, page_limit=500,
         rate_limit={"requests_per_second": 2, "burst": 2}).fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert time.sleeps == pytest.approx([0.5])  # two at once, the third after half a second


# -- failures ----------------------------------------------------------------------------------
TRANSIENT: list[Callable[[str], BaseException]] = [
    NetworkError, RequestTimeout, DDoSProtection, RateLimitExceeded, ExchangeNotAvailable,
    OnMaintenance, TimeoutError, ConnectionResetError]
PERMANENT: list[Callable[[str], BaseException]] = [
    AuthenticationError, PermissionDenied, BadSymbol, BadRequest, ExchangeError, ValueError]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: e.__name__)
def test_transient_errors_are_retried_with_backoff(error: Callable[[str], BaseException]) -> None:
    ex, time = FakeExchange(now=LATER, rate_limit_ms=100, max_page=2000), FakeTime()
    ex.failures = [error("binance GET https://api.binance.com/... 503"), error("again")]
    src = ccxt(ex, time, page_limit=2000)
    assert src.fetch("BTC/USDT", DAY1, MINUTE_MS).table.num_rows == 1440
    assert len(ex.calls) == 3 and src.stats.retries == 2 and src.stats.requests == 3
    assert classify(error("x")) == "transient"
    assert len(time.sleeps) >= 2 and all(0 <= s <= 1.0 for s in time.sleeps)
    if error in (RateLimitExceeded, DDoSProtection):  # never sooner than rateLimit
        assert min(time.sleeps) >= 0.1


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: e.__name__)
def test_permanent_errors_fail_fast(error: Callable[[str], BaseException]) -> None:
    ex, time = FakeExchange(now=LATER), FakeTime()
    ex.failures = [error("fakex says no")]
    with pytest.raises(SourceError) as info:
        ccxt(ex, time).fetch("BTC/USDT", DAY1, MINUTE_MS)
    err = info.value
    assert len(ex.calls) == 1 and time.sleeps == []
    assert classify(error("x")) == "permanent"
    assert (err.source, err.symbol, err.window, err.url) == (
        "ccxt", "BTC/USDT", DAY1.label(), "ccxt://fakex/BTC/USDT")
    assert "fakex says no" in err.what and err.exit_code == 3
    if error in (AuthenticationError, PermissionDenied):
        assert "bad credentials" in err.what
    if error is BadSymbol:
        assert "`symbols:`" in (err.fix or "")


def test_gives_up_after_max_attempts() -> None:
    ex = FakeExchange(now=LATER)
    ex.failures = [ExchangeNotAvailable("down")] * 10
    with pytest.raises(SourceError) as info:
        ccxt(ex, max_attempts=3).fetch("BTC/USDT", DAY1, MINUTE_MS)
    assert len(ex.calls) == 3
    assert "did not answer after 3 attempts" in info.value.what
    assert "ExchangeNotAvailable: down" in info.value.what


def test_classification_follows_the_class_hierarchy() -> None:
    class ChecksumError(NetworkError):  # a class this source has never heard of
        pass

    class AccountSuspended(AuthenticationError):
        pass

    assert classify(ChecksumError("x")) == "transient"
    assert classify(AccountSuspended("x")) == "permanent"
    assert classify(KeyError("x")) == "permanent"


# -- symbols and timeframes --------------------------------------------------------------------
def test_exchange_ids_are_mapped_through_the_markets() -> None:
    ex = FakeExchange(now=LATER)
    src = ccxt(ex)
    src.fetch("BTCUSDT", DAY1, HOUR_MS)
    src.fetch("BTCUSDT", DAY1, HOUR_MS)
    assert ex.loads == 1 and {c[0] for c in ex.calls} == {"BTC/USDT"}
    swap = ccxt(FakeExchange(now=LATER), market_type="swap")
    assert swap.market_symbol("BTCUSDT") == "BTC/USDT:USDT"
    mapped = ccxt(FakeExchange(now=LATER), symbols={"XBT": "BTC/USDT"})
    assert mapped.market_symbol("XBT") == "BTC/USDT" and mapped.exchange.loads == 0
    assert row_set(mapped.fetch("XBT", DAY1, HOUR_MS)) == row_set(
        ccxt(FakeExchange(now=LATER)).fetch("BTC/USDT", DAY1, HOUR_MS))


def test_unknown_symbol_is_a_source_error() -> None:
    with pytest.raises(SourceError) as info:
        ccxt(FakeExchange(now=LATER)).fetch("DOGEUSDT", DAY1, HOUR_MS)
    assert "no spot market with id 'DOGEUSDT'" in info.value.what
    assert "BTC/USDT" in (info.value.fix or "")


def test_interval_the_exchange_lacks_is_a_preset_error() -> None:
    with pytest.raises(PresetError) as info:
        ccxt(FakeExchange(now=LATER)).fetch("BTC/USDT", DAY1, 15 * MINUTE_MS)
    assert "no 15m candles" in info.value.what and "1m, 5m, 1h, 1d" in (info.value.fix or "")


def test_params_are_passed_to_fetch_ohlcv() -> None:
    seen: list[Any] = []
    ex = FakeExchange(now=LATER)
    original = ex.fetch_ohlcv

    def spy(*args: Any) -> list[list[float]]:
        seen.append(args[4])
        return original(*args)

    ex.fetch_ohlcv = spy  # type: ignore[method-assign]
    ccxt(ex, params={"price": "mark"}).fetch("BTC/USDT", DAY1, HOUR_MS)
    assert seen == [{"price": "mark"}]


# -- options and the optional dependency -------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"exchange": ""}, {"exchange": "x", "page_limit": 0},
                                     {"exchange": "x", "config": {"apiKey": "k", "secret": "s"}},
                                     {"exchange": "x", "unknown": 1}])
def test_bad_options_are_preset_errors(options: dict[str, Any]) -> None:
    with pytest.raises(PresetError):
        CcxtSource.from_options(options, base_dir=".")


def test_without_ccxt_the_registry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ccxt", None)  # `import ccxt` raises ImportError
    for attempt in (lambda: get_source_class("ccxt"),
                    lambda: make_source("ccxt", {"exchange": "binance"}, base_dir=".")):
        with pytest.raises(MissingDependency) as info:
            attempt()
        assert info.value.fix == "pip install 'qmtl-lock[ccxt]'"
        assert info.value.exit_code == 3
    # the module itself imports without ccxt, and says the same when it would need it
    src = CcxtSource.from_options({"exchange": "binance"}, base_dir=".")
    with pytest.raises(MissingDependency, match="qmtl-lock\\[ccxt\\]"):
        src.fetch("BTC/USDT", DAY1, MINUTE_MS)


# -- the contract every source passes ----------------------------------------------------------
class TestCcxtSource(SourceSuite):
    @pytest.fixture
    def new_source(self) -> SourceFactory:
        return lambda: ccxt(FakeExchange(now=LATER, max_page=500), page_limit=1000)

    @pytest.fixture
    def symbols(self) -> list[str]:
        return ["BTC/USDT", "ETHUSDT"]

    @pytest.fixture(params=[MINUTE_MS, HOUR_MS], ids=["1m", "1h"])
    def interval_ms(self, request: pytest.FixtureRequest) -> int:
        return int(request.param)

    @pytest.fixture
    def span(self) -> TimeRange:
        return SPAN
