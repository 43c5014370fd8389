"""Materialization: plan the partitions a request needs, then fetch, conform, store and hash them.

``plan()`` is pure: it decides, from a request, an optional earlier snapshot and a resume
checkpoint, which partition windows can be reused and which must be fetched. ``Engine.apply()``
does the work one partition at a time, so memory does not grow with the length of the range.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from qmtl_engine.calendars import Calendar, get_calendar
from qmtl_engine.clock import Clock, SystemClock
from qmtl_engine.conformance import ConformanceReport, RowMemory, blocking, conform
from qmtl_engine.contracts import Contract, get_contract
from qmtl_engine.coverage import closed_before, coverage_end
from qmtl_engine.errors import (
    ConformanceError,
    InputError,
    QmtlLockError,
    SourceError,
)
from qmtl_engine.fingerprint import Fingerprint, SnapshotHeader, dataset_fingerprint
from qmtl_engine.presets import ResolvedPreset
from qmtl_engine.ranges import TimeRange, iso, partition_windows, window_name
from qmtl_engine.read import PinnedReader, VerifyOutcome
from qmtl_engine.sla import SLAResult, SLATimer
from qmtl_engine.sources import make_source
from qmtl_engine.sources.base import Source
from qmtl_engine.store import Snapshot, SnapshotPartition, Store

Mode = Literal["materialize", "strategy"]
log = logging.getLogger("qmtl_lock.engine")


@dataclass(frozen=True)
class Request:
    """One symbol of one preset over a fixed coverage range (``end: now`` already resolved)."""

    preset: ResolvedPreset
    symbol: str
    coverage: TimeRange
    contract_version: str
    dataset: str | None = None  # for messages only
    accepted_gaps: tuple[TimeRange, ...] = ()  # missing bars here are not counted as gaps
    follows_now: bool = False  # `end: now`: the SLA's max_lag_seconds applies

    @property
    def contract_ref(self) -> str:
        return f"{self.preset.data.contract.name}@{self.contract_version}"

    def header(self) -> SnapshotHeader:
        return SnapshotHeader(
            contract=self.contract_ref, preset=self.preset.id, symbol=self.symbol,
            interval_ms=self.preset.interval_ms, coverage_start=self.coverage.start,
            coverage_end=self.coverage.end,
        )

    def job_key(self) -> str:
        """Idempotent key of this materialization: preset (and its definition), symbol, range."""
        text = json.dumps([self.preset.id, self.preset.digest(), self.symbol, self.coverage.start,
                           self.coverage.end, self.contract_version,
                           [[g.start, g.end] for g in self.accepted_gaps]])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def where(self) -> str:
        return "/".join(p for p in (self.dataset, self.symbol) if p)


@dataclass(frozen=True)
class PlannedPartition:
    window: TimeRange
    action: Literal["reuse", "fetch"]
    reused: SnapshotPartition | None = None
    why: str = ""


@dataclass(frozen=True)
class Plan:
    request: Request
    partitions: tuple[PlannedPartition, ...]

    @property
    def to_fetch(self) -> list[PlannedPartition]:
        return [p for p in self.partitions if p.action == "fetch"]

    def describe(self) -> list[str]:
        scheme = self.request.preset.partition
        return [f"{p.action:5} {window_name(p.window, scheme)}" + (f" ({p.why})" if p.why else "")
                for p in self.partitions]


def plan(request: Request, *, previous: Snapshot | None = None,
         checkpoint: dict[str, Any] | None = None, now_ms: int,
         has_object: Callable[[str], bool] = lambda d: True) -> Plan:
    """Decide which partitions to reuse and which to fetch. Reads nothing but its arguments.

    A partition is reused when an earlier snapshot or the resume checkpoint has exactly the same
    window, the window was closed (stable) when it was fetched, and its object is in the store.
    """
    stable_end = closed_before(request.preset, now_ms)
    known: dict[tuple[int, int], tuple[SnapshotPartition, str]] = {}
    if previous is not None:
        for p in previous.partitions:
            known[(p.start, p.end)] = (p, "in the locked snapshot")
    done = (checkpoint or {}).get("done", {})
    for key, value in done.items():
        start, end = (int(x) for x in key.split("-"))
        known.setdefault((start, end), (SnapshotPartition(start, end, value["rows"],
                                                          value["digest"], value["flags"]),
                                         "finished before an interruption"))
    out = []
    for window in partition_windows(request.coverage, request.preset.partition):
        hit = known.get((window.start, window.end))
        if hit and window.end <= stable_end and has_object(hit[0].digest):
            out.append(PlannedPartition(window, "reuse", hit[0], hit[1]))
        else:
            out.append(PlannedPartition(window, "fetch"))
    return Plan(request, tuple(out))


@dataclass
class MaterializeResult:
    """What materializing one request produced: identity plus observed metadata."""

    fingerprint: str
    coverage: TimeRange
    rows: int
    partitions: int
    flags: dict[str, int]
    report: ConformanceReport
    sla: SLAResult
    as_of: int
    fetched: int
    reused: int
    checkpoint_key: str
    attempts: int = 1
    completion: float = 1.0  # share of the calendar's expected bars that are present
    retries: int = 0
    source_requests: int = 0
    bytes_written: int = 0
    snapshot: Snapshot | None = field(default=None, repr=False)


ProgressFn = Callable[[Request, int, int], None]


class Engine:
    """The one engine. ``materialize`` mode may fetch and write; ``strategy`` mode only reads."""

    def __init__(self, store: Store, *, mode: Mode = "materialize",
                 clock: Clock | None = None,
                 source_factory: Callable[[ResolvedPreset], Source] | None = None) -> None:
        self.store = store
        self.mode = mode
        self.clock = clock or SystemClock()
        # The seam for tests and embedders: how a preset's source is built.
        self.source_factory = source_factory or _source_from_registry

    def _require_materialize(self) -> None:
        if self.mode != "materialize":
            raise InputError("this engine was opened in strategy mode and never fetches data",
                             fix="open an Engine with mode='materialize' to resolve data")

    # -- materialize ---------------------------------------------------------------------------
    def plan(self, request: Request, *, previous: Snapshot | None = None) -> Plan:
        key = request.job_key()
        return plan(request, previous=previous, checkpoint=self.store.read_job(key),
                    now_ms=self.clock.now_ms(),
                    has_object=lambda digest: self.store.has_staged_or_object(key, digest))

    def materialize(self, request: Request, *, previous: Snapshot | None = None,
                    progress: ProgressFn | None = None) -> MaterializeResult:
        """Materialize ``request`` into the store and return its snapshot's fingerprint.

        Raises :class:`ConformanceError` (after scanning every partition, so the report is
        complete), :class:`SLAExceeded` under fail_fast, :class:`SourceError` from the source.
        No snapshot is published unless every partition passed.
        """
        self._require_materialize()
        return self.apply(self.plan(request, previous=previous), progress=progress)

    def apply(self, the_plan: Plan, *, progress: ProgressFn | None = None) -> MaterializeResult:
        self._require_materialize()
        request = the_plan.request
        preset = request.preset
        contract = get_contract(preset.data.contract.name, request.contract_version)
        calendar = get_calendar(preset.data.calendar)
        source = self.source_factory(preset) if the_plan.to_fetch else None
        timer = SLATimer(preset.sla, self.clock, dataset=request.dataset, symbol=request.symbol)
        key = request.job_key()
        checkpoint = self.store.read_job(key) or {"request": request.where(), "done": {}}
        stable_end = closed_before(preset, self.clock.now_ms())
        total = ConformanceReport()
        refused: dict[str, int] = {}
        first_refused: str | None = None
        parts: list[SnapshotPartition] = []
        memory: RowMemory | None = None
        fetched = 0
        for i, step in enumerate(the_plan.partitions):
            name = window_name(step.window, preset.partition)
            if step.action == "reuse":
                assert step.reused is not None
                part = step.reused
                memory = None
                total.merge(ConformanceReport.from_counts(part.flags))
            else:
                assert source is not None
                with timer.phase("backfill"):
                    table, report, memory = _fetch_and_conform(
                        source, request, step.window, contract, calendar, memory)
                fetched += 1
                total.merge(report)
                log.info("conformed dataset=%s symbol=%s partition=%s rows=%d flags=%s",
                         request.dataset, request.symbol, name, table.num_rows,
                         ",".join(f"{k}:{v}" for k, v in sorted(report.nonzero().items()))
                         or "-")
                blocked = blocking(report, preset.conformance)
                if blocked:
                    for flag, count in blocked.items():
                        refused[flag] = refused.get(flag, 0) + count
                    first_refused = first_refused or name
                    continue
                if refused:
                    continue  # keep scanning for a complete report, but write nothing more
                with timer.phase("storage"):
                    digest = self.store.stage_object(key, table)
                    part = SnapshotPartition(step.window.start, step.window.end,
                                             table.num_rows, digest.value, report.nonzero())
                    if step.window.end <= stable_end:
                        checkpoint["done"][f"{step.window.start}-{step.window.end}"] = {
                            "rows": part.rows, "digest": part.digest, "flags": part.flags}
                        self.store.write_job(key, checkpoint)
            parts.append(part)
            if progress is not None:
                progress(request, i + 1, len(the_plan.partitions))
            timer.checkpoint()
        if refused:
            self.store.discard_job(key)  # a refused request leaves nothing in the store
            err = ConformanceError(total, blocking=refused, symbol=request.symbol,
                                   partition=first_refused, preset=preset.data.conformance_preset)
            err.where = f"{request.where()}, first in partition {first_refused}, " \
                        f"conformance preset {preset.data.conformance_preset}"
            raise err
        expected = sum(calendar.count(p.window, preset.interval_ms)
                       for p in the_plan.partitions)  # per partition: memory stays flat
        coverage_ratio = 1.0 - total.counts["gap_bars"] / expected if expected else 1.0
        timer.check_coverage(coverage_ratio)
        if request.follows_now:
            timer.check_lag(request.coverage.end)
        header = request.header()
        fingerprint = dataset_fingerprint(header, [p.ref() for p in parts])
        snapshot = Snapshot(fingerprint.value, header, parts, partition=preset.partition)
        with timer.phase("storage"):
            self.store.publish_staged(key, [p.digest for p in parts])
            self.store.put_snapshot(snapshot)
            self.store.discard_job(key)
        timer.checkpoint()
        stats = getattr(getattr(source, "client", None), "stats", None)
        rows = sum(p.rows for p in parts)
        log.info("materialized dataset=%s symbol=%s fingerprint=%s rows=%d fetched=%d reused=%d",
                 request.dataset, request.symbol, fingerprint.value, rows, fetched,
                 len(parts) - fetched)
        return MaterializeResult(
            completion=coverage_ratio,
            retries=getattr(stats, "retries", 0), source_requests=getattr(stats, "requests", 0),
            attempts=1 + getattr(stats, "retries", 0),
            bytes_written=self.store.bytes_written_for(key),
            fingerprint=fingerprint.value, coverage=request.coverage,
            rows=rows, partitions=len(parts),
            flags=dict(sorted(total.counts.items())), report=total, sla=timer.result(),
            as_of=self.clock.now_ms(), fetched=fetched, reused=len(parts) - fetched,
            checkpoint_key=key, snapshot=snapshot,
        )

    # -- read: the strategy path is qmtl_engine.read, which never loads the machinery above ----
    def iter_verified(self, fingerprint: str, *, dataset: str | None = None,
                      symbol: str | None = None,
                      window: TimeRange | None = None,
                      snapshot: Snapshot | None = None,
                      ) -> Iterator[tuple[SnapshotPartition, pa.Table]]:
        """:meth:`PinnedReader.iter_verified` on this engine's store."""
        return PinnedReader(self.store).iter_verified(
            fingerprint, dataset=dataset, symbol=symbol, window=window, snapshot=snapshot)

    def verify(self, fingerprint: str, *, dataset: str | None = None,
               symbol: str | None = None) -> VerifyOutcome:
        """:meth:`PinnedReader.verify` on this engine's store."""
        return PinnedReader(self.store).verify(fingerprint, dataset=dataset, symbol=symbol)

    def load(self, fingerprint: str, *, dataset: str | None = None, symbol: str | None = None,
             window: TimeRange | None = None, snapshot: Snapshot | None = None) -> pa.Table:
        """:meth:`PinnedReader.load` on this engine's store."""
        return PinnedReader(self.store).load(fingerprint, dataset=dataset, symbol=symbol,
                                             window=window, snapshot=snapshot)


def _source_from_registry(preset: ResolvedPreset) -> Source:
    return make_source(preset.data.source.name, preset.data.source.options,
                       base_dir=preset.base_dir)


def _fetch_and_conform(source: Source, request: Request, window: TimeRange, contract: Contract,
                       calendar: Calendar, memory: RowMemory | None,
                       ) -> tuple[pa.Table, ConformanceReport, RowMemory]:
    """Fetch one partition window and conform it; errors name the dataset, symbol and window."""
    preset = request.preset
    try:
        batch = source.fetch(request.symbol, window, preset.interval_ms)
    except SourceError as exc:
        if request.dataset and exc.where and "dataset" not in exc.where:
            exc.where = f"dataset {request.dataset}, {exc.where}"
        raise
    except QmtlLockError:
        raise
    except Exception as exc:  # a source bug or an unexpected I/O failure
        raise SourceError(
            f"{type(exc).__name__}: {exc}", source=preset.data.source.name,
            symbol=request.symbol, window=window.label(),
            fix="rerun `qmtl-lock resolve`; finished partitions are kept",
        ) from exc
    try:
        return conform(batch, window=window, interval_ms=preset.interval_ms, contract=contract,
                       calendar=calendar, memory=memory, accepted_gaps=request.accepted_gaps)
    except ConformanceError as exc:
        exc.symbol, exc.preset = request.symbol, preset.data.conformance_preset
        raise


__all__ = [
    "Engine",
    "Fingerprint",
    "MaterializeResult",
    "Plan",
    "Request",
    "VerifyOutcome",
    "closed_before",
    "coverage_end",
    "iso",
    "plan",
]
