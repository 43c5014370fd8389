"""SLA budgets: deadlines and minimum coverage, evaluated against an injected clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.clock import Clock
from engine.errors import SLAExceeded
from engine.presets import OnViolation, SLAPreset


@dataclass(frozen=True)
class SLAResult:
    deadline_ms: int | None
    elapsed_ms: int
    violation: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"deadline_ms": self.deadline_ms, "elapsed_ms": self.elapsed_ms,
                "violation": self.violation}


class SLATimer:
    """Tracks one request's budget. ``checkpoint`` raises under fail_fast once it is spent."""

    def __init__(self, policy: SLAPreset, clock: Clock, *, dataset: str | None,
                 symbol: str) -> None:
        self.policy = policy
        self.clock = clock
        self.dataset = dataset
        self.symbol = symbol
        self.started = clock.monotonic_ms()
        self.violations: list[str] = []

    def elapsed_ms(self) -> float:
        return self.clock.monotonic_ms() - self.started

    def _violate(self, phase: str, budget: float, elapsed: float, detail: str) -> None:
        if self.policy.on_violation is OnViolation.FAIL_FAST:
            raise SLAExceeded(phase=phase, budget_ms=budget, elapsed_ms=elapsed,
                              dataset=self.dataset, symbol=self.symbol, detail=detail)
        if detail not in self.violations:
            self.violations.append(detail)

    def checkpoint(self, phase: str = "backfill") -> None:
        elapsed = self.elapsed_ms()
        total = self.policy.total_deadline_ms
        if total is not None and elapsed > total:
            self._violate("total", total, elapsed,
                          f"total deadline exceeded: {elapsed:.0f} ms spent, budget {total} ms")
        phase_budget = {"backfill": self.policy.max_wait_backfill_ms,
                        "storage": self.policy.max_wait_storage_ms}.get(phase)
        if phase_budget is not None and elapsed > phase_budget:
            self._violate(phase, phase_budget, elapsed,
                          f"{phase} budget exceeded: {elapsed:.0f} ms spent, "
                          f"budget {phase_budget} ms")

    def check_coverage(self, coverage: float) -> None:
        if coverage + 1e-12 < self.policy.min_coverage:
            self._violate("coverage", 0, self.elapsed_ms(),
                          f"coverage {coverage:.4f} is below min_coverage "
                          f"{self.policy.min_coverage}")

    def result(self) -> SLAResult:
        return SLAResult(self.policy.total_deadline_ms, round(self.elapsed_ms()),
                         "; ".join(self.violations) or None)
