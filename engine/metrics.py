"""Prometheus metrics of a materialization run, in a registry of their own.

``resolve --metrics-file PATH`` writes them in the text exposition format, atomically, for a
node-exporter textfile collector. Nothing is exported globally, so two runs in one process (tests,
notebooks) do not mix.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

if TYPE_CHECKING:
    from qmtl_engine.materialize import MaterializeResult, Request


class RunMetrics:
    """The metrics of one run; :meth:`observe` records one materialized request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        r = self.registry
        self.sla_deadline = Gauge(
            "seamless_sla_deadline_seconds", "SLA budget of a phase, in seconds",
            ["preset", "phase"], registry=r)
        self.sla_elapsed = Gauge(
            "seamless_sla_elapsed_seconds", "Time spent materializing a request, in seconds",
            ["preset", "symbol"], registry=r)
        self.sla_violations = Counter(
            "seamless_sla_violations", "Requests that ended with an SLA violation",
            ["preset"], registry=r)
        self.completion = Gauge(
            "backfill_completion_ratio", "Share of expected bars present after backfill",
            ["preset", "symbol"], registry=r)
        self.flags = Counter(
            "seamless_conformance_flag", "Conformance flags counted, by flag",
            ["preset", "flag"], registry=r)
        self.retries = Counter(
            "seamless_source_retries", "Source requests retried after a transient failure",
            ["preset"], registry=r)
        self.requests = Counter(
            "seamless_source_requests", "Requests sent to sources", ["preset"], registry=r)
        self.bytes_written = Counter(
            "seamless_store_bytes_written", "Bytes of partition objects written to the store",
            ["preset"], registry=r)
        self.partitions = Counter(
            "seamless_partitions", "Partitions materialized, by how",
            ["preset", "action"], registry=r)

    def observe(self, request: Request, result: MaterializeResult) -> None:
        preset = request.preset
        sla = preset.sla
        with self._lock:
            for phase, budget in (("total", sla.total_deadline_ms),
                                  ("backfill", sla.max_wait_backfill_ms),
                                  ("storage", sla.max_wait_storage_ms),
                                  ("live", sla.max_wait_live_ms)):
                if budget is not None:
                    self.sla_deadline.labels(preset.id, phase).set(budget / 1000)
            self.sla_elapsed.labels(preset.id, request.symbol).set(result.sla.elapsed_ms / 1000)
            if result.sla.violation:
                self.sla_violations.labels(preset.id).inc()
            self.completion.labels(preset.id, request.symbol).set(result.completion)
            for flag, count in result.flags.items():
                self.flags.labels(preset.id, flag).inc(count)
            self.retries.labels(preset.id).inc(result.retries)
            self.requests.labels(preset.id).inc(result.source_requests)
            self.bytes_written.labels(preset.id).inc(result.bytes_written)
            self.partitions.labels(preset.id, "fetched").inc(result.fetched)
            self.partitions.labels(preset.id, "reused").inc(result.reused)

    def write(self, path: str | Path) -> None:
        write_to_textfile(str(path), self.registry)
