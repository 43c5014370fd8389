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

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from qmtl_engine.http import HttpClient, RateLimit


class SourceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class NetworkOptions(SourceOptions):
    """Options every network source shares: its rate-limit profile and retry budget."""

    rate_limit: RateLimitOptions | None = None  # None: the source's own default profile
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_initial_ms: int = Field(default=200, ge=0)
    backoff_max_ms: int = Field(default=30_000, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    # a longer Retry-After fails the fetch at once (qmtl_engine.http.MAX_RETRY_AFTER_S)
    max_retry_after_s: float = Field(default=120.0, ge=0)

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
    seed: int = 0
    start_price: float = Field(default=100.0, gt=0)
    step_volatility: float = Field(default=0.001, gt=0, le=0.01)
    base_volume: float = Field(default=10.0, gt=0)


class FilesOptions(SourceOptions):
    url: str
    format: Literal["csv", "parquet"] = "csv"
    skip_rows: int = Field(default=0, ge=0)
    header: bool = True
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    columns: dict[str, str | int] = Field(default_factory=dict)
    ts_format: str | None = None
    ts_unit: Literal["s", "ms", "us", "ns"] | None = None
    timezone: str = "UTC"
    symbol_column: str | int | None = None


BINANCE_VISION_URL = "https://data.binance.vision"


class BinanceVisionOptions(NetworkOptions):
    market: Literal["spot", "um_futures"] = "spot"
    base_url: str = BINANCE_VISION_URL
    verify_checksum: bool = True
    concurrency: int = Field(default=4, ge=1, le=32)


CCXT_CREDENTIALS = frozenset({"apikey", "secret", "password", "uid", "privatekey",
                              "walletaddress", "token", "login", "twofa"})


class CcxtOptions(NetworkOptions):
    exchange: str = Field(min_length=1)
    page_limit: int = Field(default=1000, ge=1, le=100_000)
    market_type: str = "spot"
    symbols: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)

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
    base_url: str = "https://api.polygon.io"
    api_key_env: str = Field(default="POLYGON_API_KEY", min_length=1)
    auth: Literal["header", "query"] = "header"
    adjusted: bool = False
    limit: int = Field(default=50_000, ge=1, le=50_000)
    trades: bool = True
    daily_timezone: str = "America/New_York"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        if API_KEY_PARAM.search(value):
            raise ValueError("must not carry an API key; name the variable in api_key_env")
        return value.rstrip("/")

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
