"""The interface every source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from qmtl_engine.conformance import RawBatch
from qmtl_engine.errors import PresetError
from qmtl_engine.http import MAX_RETRY_AFTER_S, HttpClient, RateLimit
from qmtl_engine.ranges import TimeRange


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
    max_retry_after_s: float = Field(default=MAX_RETRY_AFTER_S, ge=0)  # longer asks fail at once

    def client(self, default_rate: RateLimit, **kwargs: Any) -> HttpClient:
        """An :class:`HttpClient` with these settings (``kwargs`` override, e.g. ``sleep``)."""
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


OptionsT = TypeVar("OptionsT", bound=SourceOptions)


class Source(ABC):
    """Delivers raw rows for one symbol and one partition window.

    A source must be deterministic for closed windows: asking twice for the same window gives the
    same rows (up to order), whatever else was asked before.
    """

    name: ClassVar[str]
    Options: ClassVar[type[SourceOptions]]

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> SourceOptions:
        """Validate preset options against this source's option model."""
        return cls._parse(cls.Options, options)

    @classmethod
    def _parse(cls, model: type[OptionsT], options: dict[str, Any]) -> OptionsT:
        try:
            return model.model_validate(options)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise PresetError(
                f"invalid option {key!r} for the {cls.name} source: {err['msg']}",
                fix=f"see the {cls.name} source options in `qmtl-lock presets --json` and the docs",
            ) from None

    @classmethod
    @abstractmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        """Build the source from preset options."""

    @abstractmethod
    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        """Rows for ``symbol`` whose bar open time lies in ``window`` (extra rows are flagged)."""

    @staticmethod
    def available_until(now_ms: int) -> int | None:
        """End of the data this source can deliver at ``now_ms`` (None: up to now).

        Archives that publish a day's file only after the day ends say so here, so that
        ``end: now`` does not ask for data that cannot exist yet.
        """
        return None
