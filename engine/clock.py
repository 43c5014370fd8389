"""Injected time: wall-clock ``now`` for ``as_of`` and ``end: now``; monotonic time for SLAs."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time, epoch milliseconds UTC."""
        ...

    def monotonic_ms(self) -> float:
        """A monotonic reading in milliseconds, for measuring elapsed time."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> float:
        return time.monotonic_ns() / 1e6


class FixedClock:
    """A clock that only moves when told to; for tests and reproducible runs."""

    def __init__(self, now_ms: int, *, step_ms: float = 0.0) -> None:
        self._now = now_ms
        self._mono = 0.0
        self.step_ms = step_ms  # advance per monotonic reading, to simulate slow work

    def now_ms(self) -> int:
        return self._now

    def monotonic_ms(self) -> float:
        self._mono += self.step_ms
        return self._mono

    def advance(self, ms: float) -> None:
        self._now += int(ms)
        self._mono += ms
