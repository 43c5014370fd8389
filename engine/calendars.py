"""Trading calendars: which bars a preset expects in a window, so that closures are not gaps.

``24x7`` expects every bar. An exchange calendar name (``XNYS``, ``XLON``, ...) is looked up in
the ``exchange_calendars`` library, which knows holidays and unplanned closures.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from qmtl_engine.errors import PresetError
from qmtl_engine.ranges import DAY_MS, TimeRange, ceil_to


class Calendar(Protocol):
    name: str

    def expected(self, window: TimeRange, interval_ms: int) -> np.ndarray:
        """Sorted int64 epoch-ms open times of the bars expected in ``window``."""
        ...

    def count(self, window: TimeRange, interval_ms: int) -> int:
        """How many bars are expected in ``window`` (without building them when possible)."""
        ...


class AlwaysOpen:
    """Every bar on the interval grid is expected (crypto markets)."""

    name = "24x7"

    def expected(self, window: TimeRange, interval_ms: int) -> np.ndarray:
        first = ceil_to(window.start, interval_ms)
        return np.arange(first, window.end, interval_ms, dtype=np.int64)

    def count(self, window: TimeRange, interval_ms: int) -> int:
        return window.bars(interval_ms)


class ForexWeek:
    """FX: open from Sunday 17:00 to Friday 17:00 New York time, so UTC hours move with DST.

    The trading days of 25 December and 1 January (from 17:00 New York the evening before)
    are closed too, as at most FX venues. Daily bars are expected Monday to Friday (UTC date).
    """

    name = "24x5"
    _ZONE = "America/New_York"

    def expected(self, window: TimeRange, interval_ms: int) -> np.ndarray:
        import pandas as pd

        grid = AlwaysOpen().expected(window, interval_ms)
        if interval_ms >= DAY_MS:
            weekday = (grid // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday (3)
            return grid[weekday < 5]
        # The trading day of a bar is its New York time shifted by 7 hours: 17:00 Sunday New York
        # becomes 00:00 Monday, so the open week is Monday..Friday of the shifted clock.
        local = pd.to_datetime(grid, unit="ms", utc=True).tz_convert(self._ZONE).tz_localize(None)
        shifted = local + pd.Timedelta(hours=7)
        open_ = np.asarray(shifted.day_of_week < 5)
        holiday = np.asarray(((shifted.month == 12) & (shifted.day == 25))
                             | ((shifted.month == 1) & (shifted.day == 1)))
        return grid[open_ & ~holiday]

    def count(self, window: TimeRange, interval_ms: int) -> int:
        return int(self.expected(window, interval_ms).size)


class ExchangeCalendar:
    """Sessions of an exchange, from ``exchange_calendars``.

    Daily and longer bars are expected at midnight UTC of each session date; intraday bars at the
    grid points that fall inside a session's trading minutes.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @staticmethod
    @lru_cache(maxsize=16)
    def _calendar(name: str, first_year: int, last_year: int) -> Any:
        import exchange_calendars as xcals

        return xcals.get_calendar(name, start=f"{first_year - 1}-12-01",
                                  end=f"{last_year + 1}-01-31")

    def _load(self, window: TimeRange) -> Any:
        import pandas as pd

        first = pd.Timestamp(window.start, unit="ms").year
        last = pd.Timestamp(window.end, unit="ms").year
        # Whole decades keep the cache small while ranges move.
        return self._calendar(self.name, first - first % 10, last - last % 10 + 9)

    def expected(self, window: TimeRange, interval_ms: int) -> np.ndarray:
        import pandas as pd

        cal = self._load(window)
        if interval_ms >= DAY_MS:
            lo = pd.Timestamp(window.start, unit="ms").normalize()
            hi = pd.Timestamp(window.end - 1, unit="ms").normalize()
            sessions = cal.sessions_in_range(max(lo, cal.first_session),
                                             min(hi, cal.last_session))
            ms = np.asarray(sessions.as_unit("ms").asi8, dtype=np.int64)
            on_grid = ms[(ms % interval_ms) == 0]
            return on_grid[(on_grid >= window.start) & (on_grid < window.end)]
        lo_ts = pd.Timestamp(window.start, unit="ms", tz="UTC")
        hi_ts = pd.Timestamp(window.end - 1, unit="ms", tz="UTC")
        minutes = cal.minutes_in_range(max(lo_ts, cal.first_minute),
                                       min(hi_ts, cal.last_minute))
        ms = np.asarray(minutes.as_unit("ms").asi8, dtype=np.int64)
        return ms[(ms % interval_ms) == 0]

    def count(self, window: TimeRange, interval_ms: int) -> int:
        return int(self.expected(window, interval_ms).size)


_BUILTIN: dict[str, Calendar] = {"24x7": AlwaysOpen(), "24x5": ForexWeek()}


def get_calendar(name: str) -> Calendar:
    """Return the calendar called ``name``, or raise :class:`PresetError` naming the known ones."""
    if name in _BUILTIN:
        return _BUILTIN[name]
    import exchange_calendars as xcals

    if name in xcals.get_calendar_names(include_aliases=True):
        return ExchangeCalendar(name)
    raise PresetError(
        f"unknown calendar {name!r}",
        fix="use 24x7 (crypto), 24x5 (FX) or an exchange calendar such as XNYS, XLON or XTKS",
    )
