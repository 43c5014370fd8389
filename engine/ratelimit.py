"""Rate limits that hold for a whole run: one limiter per source endpoint, not per symbol.

A source asks :func:`limiter` for the limiter of its endpoint (a key such as
``polygon:https://api.polygon.io``) and every symbol, thread and partition task of the process
that asks with the same key shares it. On a cluster the workers install a factory
(:func:`set_limiter_factory`) whose limiters hold for every worker together; a source never
knows which it got.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests_per_second`` on average, with bursts of up to ``burst`` requests."""

    requests_per_second: float
    burst: int = 1


class Limiter(Protocol):
    """Anything that blocks until one more request may start."""

    def acquire(self) -> None: ...


class TokenBucket:
    """A thread-safe token bucket; ``acquire`` blocks until a request may start."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(limit.burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                rate = self.limit.requests_per_second
                self._tokens = min(self.limit.burst, self._tokens + (now - self._last) * rate)
                self._last = now
                if self._tokens >= 1 - 1e-9:  # float refill can land a hair under 1
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / rate
            self._sleep(wait)


LimiterFactory = Callable[[str, RateLimit], Limiter]

_registry: dict[tuple[str, RateLimit], Limiter] = {}
_registry_lock = threading.Lock()
_factory: LimiterFactory | None = None


def _local(key: str, limit: RateLimit) -> Limiter:
    return TokenBucket(limit)


def limiter(key: str, limit: RateLimit) -> Limiter:
    """The limiter every user of endpoint ``key`` under ``limit`` shares in this process."""
    with _registry_lock:
        found = _registry.get((key, limit))
        if found is None:
            found = (_factory or _local)(key, limit)
            _registry[(key, limit)] = found
        return found


def set_limiter_factory(factory: LimiterFactory | None) -> None:
    """Make :func:`limiter` build its limiters with ``factory`` from now on (None: a token
    bucket per process); limiters handed out before are forgotten."""
    global _factory
    with _registry_lock:
        _factory = factory
        _registry.clear()
