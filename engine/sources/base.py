"""The interface every source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self, TypeVar

from pydantic import ValidationError
from qmtl_engine.clock import Clock
from qmtl_engine.conformance import RawBatch
from qmtl_engine.errors import PresetError
from qmtl_engine.ranges import TimeRange
from qmtl_engine.sources.options import SourceOptions

OptionsT = TypeVar("OptionsT", bound=SourceOptions)


class Source(ABC):
    """Delivers raw rows for one symbol and one partition window.

    A source must be deterministic for closed windows: asking twice for the same window gives the
    same rows (up to order), whatever else was asked before.
    """

    name: ClassVar[str]
    Options: ClassVar[type[SourceOptions]]
    symbols_fix: ClassVar[str] = ""  # how to make options tell symbols apart, for messages
    wall_clock: Clock | None = None  # the engine's clock, given by :meth:`use_clock`
    adjustment: str = "raw"  # the prices to deliver, given by :meth:`use_adjustment`

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
                fix=f"see the options of the {cls.name} source in docs/sources.md (and the presets "
                "as loaded in `qmtl-lock presets --json`)",
            ) from None

    @classmethod
    @abstractmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        """Build the source from preset options."""

    @abstractmethod
    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        """Rows for ``symbol`` whose bar open time lies in ``window`` (extra rows are flagged)."""

    @classmethod
    def distinguishes_symbols(cls, options: dict[str, Any]) -> bool:
        """Whether these options give each symbol its own rows (False: every symbol the same)."""
        return True

    def use_clock(self, clock: Clock) -> None:
        """Take the engine's wall clock (``QMTL_LOCK_NOW`` when pinned) as this source's now."""
        self.wall_clock = clock

    def use_adjustment(self, adjustment: str) -> None:
        """Deliver ``adjustment`` prices (the preset's ``adjustment``: raw, splits or
        splits_dividends). Raises :class:`PresetError` when these options cannot; catalogs are
        checked for that when they load, so this guards sources built another way."""
        options = getattr(self, "options", None)
        if not isinstance(options, SourceOptions):
            options = SourceOptions()
        problem = options.adjustment_problem(adjustment, self.name)
        if problem is not None:
            raise PresetError(f"the {self.name} source cannot give adjustment {adjustment}: "
                              f"{problem.what}", fix=problem.fix)
        self.adjustment = adjustment

    def data_extent(self, symbol: str) -> tuple[int, int] | None:
        """The first and last bar time (epoch ms) this source has for ``symbol``, when it can
        tell without fetching more (a files source knows the files it read); None otherwise.
        Only messages use it: a refusal for missing bars says where the data lies."""
        return None

    @staticmethod
    def available_until(now_ms: int) -> int | None:
        """End of the data this source can deliver at ``now_ms`` (None: up to now).

        Archives that publish a day's file only after the day ends say so here, so that
        ``end: now`` does not ask for data that cannot exist yet.
        """
        return None
