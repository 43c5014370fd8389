"""Half-open UTC time ranges on integer milliseconds, and the partition windows that tile them.

Every instant inside the engine is an ``int`` of milliseconds since the Unix epoch, UTC. Ranges are
half-open ``[start, end)``: a bar belongs to a range when its open time lies in it.
"""

from __future__ import annotations

import calendar as _calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from qmtl_engine.errors import RangeError

MS = 1
SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

PartitionScheme = Literal["day", "month", "year"]

_INTERVAL_RE = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_MS = {"s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_interval(text: str) -> int:
    """Return the length in ms of an interval written like ``1m``, ``15m``, ``1h`` or ``1d``."""
    m = _INTERVAL_RE.fullmatch(text)
    if not m or int(m.group(1)) == 0:
        raise RangeError(
            f"invalid interval {text!r}",
            fix="write an interval as a number and a unit: 1s, 1m, 15m, 1h, 4h, 1d or 1w",
        )
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def format_interval(ms: int) -> str:
    """Inverse of :func:`parse_interval` for whole units (largest unit that divides)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def to_ms(value: datetime | date | str | int) -> int:
    """Convert a date, an aware or naive (taken as UTC) datetime, or an ISO string to epoch ms."""
    if isinstance(value, bool):
        raise RangeError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise RangeError(
                f"invalid date or time {value!r}",
                fix="write dates as YYYY-MM-DD or times as YYYY-MM-DDTHH:MM:SSZ (UTC)",
            ) from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return delta.days * DAY_MS + delta.seconds * SECOND_MS + delta.microseconds // 1000
    if isinstance(value, date):
        return (value - date(1970, 1, 1)).days * DAY_MS
    raise RangeError(f"not a time: {value!r}")


def iso(ms: int) -> str:
    """Format epoch ms as ISO-8601 UTC with a ``Z``; milliseconds only when not zero."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms - ms % 1000)
    day = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
    text = f"{day}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


def floor_to(ms: int, interval_ms: int) -> int:
    return ms - ms % interval_ms


def ceil_to(ms: int, interval_ms: int) -> int:
    return -((-ms) // interval_ms) * interval_ms


@dataclass(frozen=True, order=True)
class TimeRange:
    """A half-open range ``[start, end)`` of epoch milliseconds."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise RangeError(
                f"impossible range: start {iso(self.start)} is after end {iso(self.end)}",
                fix="make start earlier than end",
            )

    @property
    def empty(self) -> bool:
        return self.end <= self.start

    def __contains__(self, ms: object) -> bool:
        return isinstance(ms, int) and self.start <= ms < self.end

    def intersect(self, other: TimeRange) -> TimeRange | None:
        lo, hi = max(self.start, other.start), min(self.end, other.end)
        return TimeRange(lo, hi) if lo < hi else None

    def bars(self, interval_ms: int) -> int:
        """Number of grid points of ``interval_ms`` in the range."""
        first = ceil_to(self.start, interval_ms)
        return max(0, (self.end - first + interval_ms - 1) // interval_ms)

    def label(self) -> str:
        return f"[{iso(self.start)}, {iso(self.end)})"

    def to_json(self) -> list[str]:
        return [iso(self.start), iso(self.end)]


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def window_containing(ms: int, scheme: PartitionScheme) -> TimeRange:
    """The UTC calendar window (day, month or year) that contains ``ms``."""
    if scheme == "day":
        start = floor_to(ms, DAY_MS)
        return TimeRange(start, start + DAY_MS)
    dt = datetime.fromtimestamp(floor_to(ms, DAY_MS) // 1000, tz=UTC)
    if scheme == "month":
        y, m = dt.year, dt.month
        ny, nm = _add_months(y, m, 1)
        return TimeRange(to_ms(date(y, m, 1)), to_ms(date(ny, nm, 1)))
    return TimeRange(to_ms(date(dt.year, 1, 1)), to_ms(date(dt.year + 1, 1, 1)))


def partition_windows(span: TimeRange, scheme: PartitionScheme) -> Iterator[TimeRange]:
    """The calendar windows tiling ``span``, each clipped to it, in order."""
    cursor = span.start
    while cursor < span.end:
        window = window_containing(cursor, scheme)
        # cursor lies in both the window and the span, so they always overlap
        yield TimeRange(max(window.start, span.start), min(window.end, span.end))
        cursor = window.end


def window_name(window: TimeRange, scheme: PartitionScheme) -> str:
    """A short human name for a partition window: ``2024-03``, ``2024-03-05`` or ``2024``."""
    dt = datetime.fromtimestamp(window.start // 1000, tz=UTC)
    full = window_containing(window.start, scheme)
    name = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[scheme]
    text = dt.strftime(name)
    if full != window:
        text += f" {window.label()}"
    return text


def default_partition(interval_ms: int) -> PartitionScheme:
    """Partition scheme for an interval: about 1e3–1e5 bars per partition."""
    if interval_ms < MINUTE_MS:
        return "day"
    if interval_ms < HOUR_MS:
        return "month"
    return "year"


def days_in_month(year: int, month: int) -> int:
    return _calendar.monthrange(year, month)[1]
