"""The option models of every source, kept apart from the sources themselves.

A preset catalog names a source and its options. Loading a catalog validates those options here, so
a bad option is reported with its file and line by ``presets``, ``check`` and ``resolve --dry-run``,
not only when a fetch starts. The sources need pyarrow, numpy or ccxt; these models need pydantic
only, so ``check`` stays light (DESIGN §10). Each source module re-exports its model.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from qmtl_engine.adjust import ANCHOR, Adjustment, Method, Problem

if TYPE_CHECKING:
    from qmtl_engine.http import HttpClient, RateLimit


class SourceOptions(BaseModel):
    """Options of one source. Every field carries a ``description``: docs/sources.md is generated
    from these models (docs/gen_sources.py), so the documented options cannot drift from them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def adjustment_problem(self, adjustment: str, source: str = "this") -> Problem | None:
        """Why these options of ``source`` cannot give ``adjustment`` prices (None: they can).
        A source that knows no corporate actions gives raw prices only."""
        if adjustment == "raw":
            return None
        return Problem(f"the {source} source gives raw prices only",
                       f"remove `adjustment` (or set it to raw); see {ANCHOR}")


class RateLimitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float = Field(gt=0, description="Sustained request rate.")
    burst: int = Field(default=1, ge=1, description="Requests allowed at once after a pause.")


class NetworkOptions(SourceOptions):
    """Options every network source shares: its rate-limit profile and retry budget."""

    rate_limit: RateLimitOptions | None = Field(
        default=None, description="`{requests_per_second, burst}`; null: the source's own "
        "default profile.")
    max_attempts: int = Field(default=5, ge=1, le=20, description="Tries per request before a "
                              "timeout, reset, 429 or 5xx fails the resolve.")
    backoff_initial_ms: int = Field(default=200, ge=0, description="First wait between tries; "
                                    "it doubles each try, with jitter.")
    backoff_max_ms: int = Field(default=30_000, ge=0, description="Longest wait between tries "
                                "(a `Retry-After` header may ask for longer, up to "
                                "`max_retry_after_s`).")
    timeout_s: float = Field(default=30.0, gt=0, description="Seconds to wait for an answer.")
    # the default repeats qmtl_engine.http.MAX_RETRY_AFTER_S (tests/test_http.py keeps them equal)
    max_retry_after_s: float = Field(default=120.0, ge=0, description="Longest `Retry-After` "
                                     "wait honoured; a server asking for more (or for more than "
                                     "the SLA budget left) fails the fetch at once.")

    def client(self, default_rate: RateLimit, **kwargs: Any) -> HttpClient:
        """An :class:`HttpClient` with these settings (``kwargs`` override, e.g. ``sleep``)."""
        from qmtl_engine.http import HttpClient, RateLimit  # tenacity: only when fetching

        rate = (RateLimit(self.rate_limit.requests_per_second, self.rate_limit.burst)
                if self.rate_limit else default_rate)
        settings: dict[str, Any] = {
            "rate_limit": rate, "max_attempts": self.max_attempts,
            "backoff_initial_s": self.backoff_initial_ms / 1000,
            "backoff_max_s": self.backoff_max_ms / 1000, "timeout_s": self.timeout_s,
            "max_retry_after_s": self.max_retry_after_s,
        }
        settings.update(kwargs)
        return HttpClient(**settings)


class SyntheticOptions(SourceOptions):
    seed: int = Field(default=0, description="Another seed gives other bars; the same seed, "
                      "symbol and time always give the same bar.")
    start_price: float = Field(default=100.0, gt=0, description="Price level the walk starts "
                               "from.")
    step_volatility: float = Field(default=0.001, gt=0, le=0.01, description="Relative size of "
                                   "one bar's move.")
    base_volume: float = Field(default=10.0, gt=0, description="Typical volume of one bar.")


class FilesOptions(SourceOptions):
    url: str = Field(description="fsspec URL, path or glob of the files; `{symbol}` is filled "
                     "in. A relative path is relative to the catalog file.")
    format: Literal["csv", "parquet", "json"] = Field(
        default="csv", description="`csv` (any compression, inferred from the name), `parquet`, "
        "or `json` for REST dumps (see `records`).")
    skip_rows: int = Field(default=0, ge=0, description="csv: banner lines before the header.")
    header: bool = Field(default=True, description="csv: false when the first row holds data; "
                         "columns are then named by position (0, 1, ...).")
    delimiter: str = Field(default=",", min_length=1, max_length=1,
                           description="csv: the field separator.")
    columns: dict[str, str | int] = Field(
        default_factory=dict, description="Canonical column (`ts`, `open`, `high`, `low`, "
        "`close`, `volume`) to the file's column name, or to its position (0, 1, ...) in a "
        "headerless csv or in json records that are arrays. Unnamed ones keep their own name.")
    ts_format: str | None = Field(
        default=None, description="Python strptime format of text timestamps (`%f` too); null: "
        "ISO-8601 dates and times, or epoch numbers.")
    ts_unit: Literal["s", "ms", "us", "ns"] | None = Field(
        default=None, description="Unit of epoch timestamps; null: inferred from their size "
        "(counted as `ts_unit_inferred`).")
    timezone: str = Field(default="UTC", description="IANA zone of timestamps written without "
                          "an offset.")
    symbol_column: str | int | None = Field(
        default=None, description="Column naming each row's symbol, for files that hold many "
        "symbols; rows of other symbols are skipped.")
    records: str | None = Field(
        default=None, description="json: dotted path to the list of records in the document "
        "(`data`, `result.{symbol}`); null: the document is the list. Each record is an array "
        "(give `columns` as positions) or an object (give field names).")
    complete_until: str | None = Field(
        default=None, description="json: dotted path to the time up to which the dump is final "
        "(Kraken's `result.last`); bars at or after it are still open and are left out.")
    complete_column: str | int | None = Field(
        default=None, description="Column saying whether a bar is final (OKX's `confirm`): rows "
        "whose value is not 1 or true are still open and are left out.")

    file_adjustment: Adjustment = Field(
        default="raw", description="What the file's open, high, low and close already are: "
        "`raw` (as traded), `splits` (Yahoo's `Close`) or `splits_dividends`. The preset's "
        "`adjustment` says what to pin (see Adjustment below).")
    adj_close_column: str | int | None = Field(
        default=None, description="csv, parquet: the close adjusted for splits and dividends "
        "(Yahoo's `Adj Close`); gives `adjustment: splits_dividends` by the ratio method of "
        "yfinance's `auto_adjust`.")
    split_column: str | int | None = Field(
        default=None, description="csv, parquet: the split ratio on each ex-date (`4` or "
        "`4:1` for a 4-for-1 split; 0, 1 or empty: none), as Yahoo's `Stock Splits` or "
        "Quandl's `Split Ratio`.")
    dividend_column: str | int | None = Field(
        default=None, description="csv, parquet: the cash dividend per share on each ex-date, "
        "in the units of the close column (0 or empty: none), as Yahoo's `Dividends`.")

    @field_validator("records", "complete_until")
    @classmethod
    def _json_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("format") != "json":
            raise ValueError("applies to `format: json` only")
        return value

    @field_validator("adj_close_column", "split_column", "dividend_column")
    @classmethod
    def _not_json(cls, value: str | int | None, info: ValidationInfo) -> str | int | None:
        if value is not None and info.data.get("format") == "json":
            raise ValueError("applies to csv and parquet files only")
        return value

    @model_validator(mode="after")
    def _not_mapped(self) -> FilesOptions:
        mapped = {v: k for k, v in self.columns.items()}
        for option in ("adj_close_column", "split_column", "dividend_column"):
            column = getattr(self, option)
            if column is not None and column in mapped:
                raise ValueError(
                    f"{option} {column!r} is mapped to `{mapped[column]}` in `columns` too: "
                    "name the vendor's own adjustment column here (and map `close` to the "
                    "unadjusted close: `adjustment` does the rest)")
        return self

    def adjustment_method(self, adjustment: str) -> Method | Problem:
        """How these files give ``adjustment`` prices (see :func:`plan_adjustment`)."""
        from qmtl_engine.adjust import plan_adjustment

        return plan_adjustment(self.file_adjustment, adjustment,
                               adj_close=self.adj_close_column is not None,
                               split=self.split_column is not None,
                               dividend=self.dividend_column is not None)

    def adjustment_problem(self, adjustment: str, source: str = "files") -> Problem | None:
        method = self.adjustment_method(adjustment)
        return method if isinstance(method, Problem) else None


BINANCE_VISION_URL = "https://data.binance.vision"


class BinanceVisionOptions(NetworkOptions):
    market: Literal["spot", "um_futures"] = Field(default="spot", description="Spot or USD-M "
                                                  "futures klines.")
    base_url: str = Field(default=BINANCE_VISION_URL, description="The archive, or a mirror of "
                          "its layout: a folder (relative to the catalog), file://, s3://, any "
                          "fsspec URL.")
    verify_checksum: bool = Field(default=True, description="Check every zip against its "
                                  "`.CHECKSUM` file (sha256).")
    concurrency: int = Field(default=4, ge=1, le=32, description="Files of one window fetched "
                             "in parallel.")


CCXT_CREDENTIALS = frozenset({"apikey", "secret", "password", "uid", "privatekey",
                              "walletaddress", "token", "login", "twofa"})


class CcxtOptions(NetworkOptions):
    exchange: str = Field(min_length=1, description="A ccxt exchange id (`ccxt.exchanges`), "
                          "e.g. `kraken`.")
    page_limit: int = Field(default=1000, ge=1, le=100_000, description="Bars asked per "
                            "request (an exchange may send fewer).")
    market_type: str = Field(default="spot", description="Which market an exchange-native id "
                             "means when several share it (spot, swap, ...).")
    symbols: dict[str, str] = Field(default_factory=dict, description="Lock symbol (its "
                                    "`source_symbol` where the dataset gives one) to ccxt "
                                    "symbol, checked first (`{XBTUSD: BTC/USD}`).")
    params: dict[str, Any] = Field(default_factory=dict, description="Extra exchange-specific "
                                   "`fetch_ohlcv` parameters.")
    config: dict[str, Any] = Field(default_factory=dict, description="Extra ccxt constructor "
                                   "options; never credentials (refused).")

    @field_validator("config")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(k for k in value if k.lower() in CCXT_CREDENTIALS)
        if bad:
            raise ValueError(f"holds credentials ({', '.join(bad)}); OHLCV is public data and "
                             "a preset must never carry secrets")
        return value


API_KEY_PARAM = re.compile(r"(?i)(apikey=)[^&#\s\"']*")


class PolygonOptions(NetworkOptions):
    base_url: str = Field(default="https://api.polygon.io", description="Polygon, or a proxy "
                          "with the same paths (http or https; never with a key in it).")
    api_key_env: str = Field(default="POLYGON_API_KEY", min_length=1, description="The "
                             "environment variable that holds the API key.")
    auth: Literal["header", "query"] = Field(default="header", description="Send the key as "
                                             "`Authorization: Bearer` or as `?apiKey=`.")
    adjusted: bool | None = Field(
        default=None, description="Replaced by the preset's `adjustment` (raw sends "
        "`adjusted=false`, splits `adjusted=true`). Accepted only where it agrees with it, as "
        "in older catalogs (the built-in one says `adjusted: false`); otherwise refused with "
        "the fix.")
    limit: int = Field(default=50_000, ge=1, le=50_000, description="Bars per page.")
    trades: bool = Field(default=True, description="Keep Polygon's `n` as the optional "
                         "`trades` column.")
    daily_timezone: str = Field(default="America/New_York", description="The zone whose "
                                "midnight opens Polygon's daily bars.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        if API_KEY_PARAM.search(value):
            raise ValueError("must not carry an API key; name the variable in api_key_env")
        return value.rstrip("/")

    def adjustment_problem(self, adjustment: str, source: str = "polygon") -> Problem | None:
        """Polygon adjusts for splits only (``adjusted=true``), never for dividends."""
        if adjustment == "splits_dividends":
            return Problem("Polygon's aggregates are adjusted for splits only, never for "
                           "dividends",
                           f"set `adjustment: splits` (or raw) on the preset; see {ANCHOR}")
        legacy = self.adjusted
        if legacy is None or legacy == (adjustment == "splits"):
            return None
        what = (f"the polygon option `adjusted: {str(legacy).lower()}` says otherwise: it is "
                "replaced by the preset's `adjustment`")
        if legacy:
            return Problem(what, "remove `adjusted: true` from the polygon source options and "
                           "set `adjustment: splits` on the preset (a field of the preset, next "
                           f"to `calendar`); see {ANCHOR}")
        return Problem(what, f"remove `adjusted: false` from the polygon source options: the "
                       f"preset's `adjustment` decides; see {ANCHOR}")
        return None

    @field_validator("daily_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


# The options model of each source in qmtl_engine.sources.REGISTRY, by source name.
OPTIONS: dict[str, type[SourceOptions]] = {
    "synthetic": SyntheticOptions,
    "files": FilesOptions,
    "binance_vision": BinanceVisionOptions,
    "ccxt": CcxtOptions,
    "polygon": PolygonOptions,
}
