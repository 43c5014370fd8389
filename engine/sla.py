"""SLA budgets: deadlines and minimum coverage, evaluated against an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from qmtl_engine.clock import Clock
from qmtl_engine.errors import SLAExceeded
from qmtl_engine.http import wait_budget
from qmtl_engine.presets import OnViolation, SLAPreset


@dataclass(frozen=True)
class SLAResult:
    deadline_ms: int | None
    elapsed_ms: int
    violation: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"deadline_ms": self.deadline_ms, "elapsed_ms": self.elapsed_ms,
                "violation": self.violation}


class SLATimer:
    """Tracks one request's budgets against an injected clock.

    Work is timed per phase (``with timer.phase("backfill"): ...``): ``backfill`` is fetching
    and conforming, ``storage`` is reading and writing the store. ``checkpoint`` compares the
    total and each phase with its budget; under ``fail_fast`` a violation raises
    :class:`SLAExceeded` at once, under ``partial_fill`` and ``hold`` it is recorded.
    """

    _BUDGETS: ClassVar[dict[str, str]] = {
        "backfill": "max_wait_backfill_ms", "storage": "max_wait_storage_ms",
        "live": "max_wait_live_ms"}

    def __init__(self, policy: SLAPreset, clock: Clock, *, dataset: str | None,
                 symbol: str) -> None:
        self.policy = policy
        self.clock = clock
        self.dataset = dataset
        self.symbol = symbol
        self.started = clock.monotonic_ms()
        self.spent: dict[str, float] = dict.fromkeys(self._BUDGETS, 0.0)
        self.violations: dict[str, str] = {}  # phase -> latest detail

    def elapsed_ms(self) -> float:
        return self.clock.monotonic_ms() - self.started

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begun = self.clock.monotonic_ms()
        try:
            with wait_budget(self.left_s(name)):  # no Retry-After outlasts the budget
                yield
        finally:
            self.spent[name] += self.clock.monotonic_ms() - begun

    def left_s(self, phase: str) -> float | None:
        """Seconds left in ``phase``'s budget and the total deadline (None: no budget)."""
        budget = getattr(self.policy, self._BUDGETS[phase])
        total = self.policy.total_deadline_ms
        left = [ms for ms in (None if budget is None else budget - self.spent[phase],
                              None if total is None else total - self.elapsed_ms())
                if ms is not None]
        return min(left) / 1000 if left else None

    def _violate(self, phase: str, budget: float, elapsed: float, detail: str) -> None:
        if self.policy.on_violation is OnViolation.FAIL_FAST:
            raise SLAExceeded(phase=phase, budget_ms=budget, elapsed_ms=elapsed,
                              dataset=self.dataset, symbol=self.symbol, detail=detail)
        self.violations[phase] = detail  # the latest reading of a phase says the most

    def checkpoint(self) -> None:
        elapsed = self.elapsed_ms()
        total = self.policy.total_deadline_ms
        if total is not None and elapsed > total:
            self._violate("total", total, elapsed,
                          f"total deadline exceeded: {elapsed:.0f} ms spent, budget {total} ms")
        for phase, attr in self._BUDGETS.items():
            budget = getattr(self.policy, attr)
            if budget is not None and self.spent[phase] > budget:
                self._violate(phase, budget, self.spent[phase],
                              f"{phase} budget exceeded: {self.spent[phase]:.0f} ms spent, "
                              f"budget {budget} ms")

    def check_coverage(self, coverage: float) -> None:
        if coverage + 1e-12 < self.policy.min_coverage:
            self._violate("coverage", 0, self.elapsed_ms(),
                          f"coverage {coverage:.4f} is below min_coverage "
                          f"{self.policy.min_coverage}")

    def check_lag(self, last_bar_end_ms: int) -> None:
        """Staleness of data that should reach `now`: now minus the end of the last bar."""
        limit = self.policy.max_lag_seconds
        if limit is None:
            return
        lag_s = (self.clock.now_ms() - last_bar_end_ms) / 1000
        if lag_s > limit:
            self._violate("lag", limit * 1000, lag_s * 1000,
                          f"data is {lag_s:.0f} s behind now, max_lag_seconds is {limit}")

    def result(self) -> SLAResult:
        return SLAResult(self.policy.total_deadline_ms, round(self.elapsed_ms()),
                         "; ".join(self.violations.values()) or None)
