"""Materialization: plan the partitions a request needs, then fetch, conform, store and hash them.

``plan()`` is pure: it decides, from a request, an optional earlier snapshot and a resume
checkpoint, which partition windows can be reused and which must be fetched. ``Engine.apply()``
does the work one partition at a time, so memory does not grow with the length of the range.

Nothing wrong gets pinned: a request is cut at its last final bar before it is planned (whatever
the source would deliver), an earlier snapshot lends partitions only to its own series, and a
checkpointed partition is reused only when its entry is sealed for the request and its object
is re-read and found to be that window's data; anything else is fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
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
from qmtl_engine.sources import get_source_class, make_source
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


def closed_request(request: Request, now_ms: int) -> Request:
    """``request`` cut at the last bar that is closed and stable at ``now_ms``.

    Nothing later may be pinned, whatever the source would deliver: a bar still open, or within
    the preset's ``stabilization_bars``, may change. Raises :class:`InputError` when not one bar
    of the request has closed yet.
    """
    preset = request.preset
    stable_end = closed_before(preset, now_ms)
    if request.coverage.end <= stable_end:
        return request
    if stable_end <= request.coverage.start:
        settled = request.coverage.start + (1 + preset.data.stabilization_bars) * preset.interval_ms
        raise InputError(
            f"no bar of {request.where()} has closed yet: the first one, at "
            f"{iso(request.coverage.start)}, is final from {iso(settled)}",
            fix="move start earlier, or resolve again after that time")
    return replace(request, coverage=TimeRange(request.coverage.start, stable_end))


def checkpoint_seal(job_key: str, part: SnapshotPartition) -> str:
    """What binds a checkpoint entry to its job: a digest over the job key (preset and its
    definition, symbol, range, contract, accepted gaps), the window and the entry itself, so
    an entry copied from another job's checkpoint, or edited, is not taken for this one's."""
    text = json.dumps([job_key, part.start, part.end, part.rows, part.digest,
                       sorted(part.flags.items())])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


ProveFn = Callable[[SnapshotPartition], str | None]


def plan(request: Request, *, previous: Snapshot | None = None,
         checkpoint: dict[str, Any] | None = None, now_ms: int,
         has_object: Callable[[str], bool] = lambda d: True,
         prove: ProveFn = lambda part: "nothing was given to prove its object") -> Plan:
    """Decide which partitions to reuse and which to fetch. Reads nothing but its arguments
    (``has_object`` and ``prove`` are how :meth:`Engine.plan` lets it ask the store).

    The request is first cut at the last closed bar (:func:`closed_request`). A partition is
    reused from the earlier snapshot when that snapshot is of the same series (preset, symbol,
    contract, interval), has exactly the same window, and the window was closed when fetched
    and its object is in the store (``has_object``). A partition of the resume checkpoint is
    reused only if its entry is sealed for this request (:func:`checkpoint_seal`) and ``prove``
    finds its stored object to be that window's data (``prove`` returns why not, or None); any
    other entry is fetched again, with the reason in the plan and the log.
    """
    request = closed_request(request, now_ms)  # so every window below is closed
    locked: dict[tuple[int, int], SnapshotPartition] = {}
    if previous is not None and _same_series(previous.header, request):
        locked = {(p.start, p.end): p for p in previous.partitions}
    done = _checkpoint_entries(request, checkpoint)
    out = []
    for window in partition_windows(request.coverage, request.preset.partition):
        span = (window.start, window.end)
        old = locked.get(span)
        if old is not None and has_object(old.digest):
            out.append(PlannedPartition(window, "reuse", old, "in the locked snapshot"))
        elif span in done:
            entry = done[span]
            refused = entry if isinstance(entry, str) else prove(entry)
            if refused is None and isinstance(entry, SnapshotPartition):
                out.append(PlannedPartition(window, "reuse", entry,
                                            "finished before an interruption"))
                continue
            name = window_name(window, request.preset.partition)
            log.warning("checkpoint entry refused dataset=%s symbol=%s partition=%s: %s; "
                        "fetching it again", request.dataset, request.symbol, name, refused)
            out.append(PlannedPartition(window, "fetch", why=f"checkpoint refused: {refused}"))
        else:
            out.append(PlannedPartition(window, "fetch"))
    return Plan(request, tuple(out))


def _same_series(header: SnapshotHeader, request: Request) -> bool:
    """Whether a snapshot holds the series ``request`` asks for (its partitions may be reused)."""
    return (header.preset, header.symbol, header.contract, header.interval_ms) == (
        request.preset.id, request.symbol, request.contract_ref, request.preset.interval_ms)


def _checkpoint_entries(request: Request, checkpoint: dict[str, Any] | None,
                        ) -> dict[tuple[int, int], SnapshotPartition | str]:
    """The checkpoint's finished windows: the entry, or why it cannot be this request's."""
    key = request.job_key()
    out: dict[tuple[int, int], SnapshotPartition | str] = {}
    for span, value in ((checkpoint or {}).get("done") or {}).items():
        try:
            start, end = (int(x) for x in str(span).split("-"))
            part = SnapshotPartition(start, end, int(value["rows"]), str(value["digest"]),
                                     {str(k): int(v) for k, v in value["flags"].items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a malformed entry is no entry: the window is fetched
        sealed = value.get("seal") == checkpoint_seal(key, part)
        out[(start, end)] = part if sealed else (
            "its seal does not match this request (copied from another job, or edited)")
    return out


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
        """:func:`plan` against this engine's store and clock (the request is cut at the last
        closed bar first, so the checkpoint read is the one of the request that will run)."""
        now = self.clock.now_ms()
        request = closed_request(request, now)
        key = request.job_key()
        previous = self._finished(request, key) or previous
        return plan(request, previous=previous, checkpoint=self.store.read_job(key),
                    now_ms=now, has_object=self.store.has_object,
                    prove=lambda part: self._prove(request, key, part))

    def _finished(self, request: Request, key: str) -> Snapshot | None:
        """The snapshot an earlier run of exactly this request finished (and no lock pinned
        yet), when the store still holds it: its header must be this request's, so every one
        of its partitions is this request's window."""
        from qmtl_engine.errors import IntegrityError

        fingerprint = self.store.read_ref(key)
        if fingerprint is None:
            return None
        try:
            snapshot = self.store.get_snapshot(fingerprint)
        except (IntegrityError, InputError) as exc:
            log.warning("finished snapshot of %s not reused: %s", request.where(), exc.what)
            return None
        return snapshot if snapshot.header == request.header() else None

    def _prove(self, request: Request, key: str, part: SnapshotPartition) -> str | None:
        """Why the stored object of a checkpointed partition is not that window's data of
        ``request`` (None when it is): it must hash to its name, hold the checkpoint's row
        count, and every bar must lie in the window and on the preset's grid."""
        import numpy as np
        from qmtl_engine.errors import IntegrityError

        name = window_name(TimeRange(part.start, part.end), request.preset.partition)
        try:
            table = self.store.check_staged(key, part.digest, partition=name)
        except IntegrityError as exc:
            return exc.what
        if table.num_rows != part.rows:
            return f"its object has {table.num_rows} rows, the checkpoint says {part.rows}"
        ts = np.asarray(table["ts"].cast(pa.int64()).to_numpy(), dtype=np.int64)
        stray = (ts < part.start) | (ts >= part.end) | (ts % request.preset.interval_ms != 0)
        if stray.any():
            return (f"its object holds a bar at {iso(int(ts[stray][0]))}, outside the window "
                    "or off the interval grid")
        return None

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
        """Carry out a plan partition by partition: reuse, or fetch, conform, stage and
        checkpoint; then, when no partition was refused, publish the objects and the snapshot.
        Memory stays that of one partition whatever the length of the range."""
        self._require_materialize()
        run = _Application(self, the_plan)
        for i, step in enumerate(the_plan.partitions):
            part = run.reuse(step) if step.reused is not None else run.fetch(step)
            if part is not None:
                run.parts.append(part)
            if progress is not None:
                progress(the_plan.request, i + 1, len(the_plan.partitions))
            run.timer.checkpoint()
        if run.refused:
            raise run.refusal()
        return run.publish()

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


class _Application:
    """The state of one :meth:`Engine.apply`: what was fetched, refused and checkpointed."""

    def __init__(self, engine: Engine, the_plan: Plan) -> None:
        request = the_plan.request
        preset = request.preset
        stable_end = closed_before(preset, engine.clock.now_ms())
        if request.coverage.end > stable_end:  # a plan not made by plan(), or another clock
            raise InputError(
                f"the plan for {request.where()} reaches {iso(request.coverage.end)}, past the "
                f"last closed bar {iso(stable_end)}",
                fix="make the plan with Engine.plan, which stops at the last closed bar")
        self.engine, self.store, self.plan = engine, engine.store, the_plan
        self.request, self.preset = request, preset
        self.contract = get_contract(preset.data.contract.name, request.contract_version)
        self.calendar = get_calendar(preset.data.calendar)
        self.source = engine.source_factory(preset) if the_plan.to_fetch else None
        if self.source is not None:
            self.source.use_clock(engine.clock)
        self.timer = SLATimer(preset.sla, engine.clock, dataset=request.dataset,
                              symbol=request.symbol)
        self.key = request.job_key()
        self.checkpoint = self.store.read_job(self.key) or {"request": request.where(),
                                                            "done": {}}
        self.total = ConformanceReport()
        self.refused: dict[str, int] = {}
        self.first_refused: str | None = None
        self.parts: list[SnapshotPartition] = []
        self.memory: RowMemory | None = None
        self.fetched = 0

    def reuse(self, step: PlannedPartition) -> SnapshotPartition | None:
        part = step.reused
        self.memory = None  # the cross-partition checks start again after a reused window
        if part is not None:
            self.total.merge(ConformanceReport.from_counts(part.flags))
        return part

    def fetch(self, step: PlannedPartition) -> SnapshotPartition | None:
        """Fetch and conform one window; stage and checkpoint it unless a flag blocks (then, or
        after an earlier refusal, keep scanning for a complete report but store nothing)."""
        if self.source is None:  # plan() and apply() disagree: a bug, not bad data
            raise InputError(f"the plan for {self.request.where()} fetches a window but no "
                             "source was made for it", fix="make the plan with Engine.plan")
        name = window_name(step.window, self.preset.partition)
        with self.timer.phase("backfill"):
            table, report, self.memory = _fetch_and_conform(
                self.source, self.request, step.window, self.contract, self.calendar,
                self.memory)
        self.fetched += 1
        self.total.merge(report)
        log.info("conformed dataset=%s symbol=%s partition=%s rows=%d flags=%s",
                 self.request.dataset, self.request.symbol, name, table.num_rows,
                 ",".join(f"{k}:{v}" for k, v in sorted(report.nonzero().items())) or "-")
        blocked = blocking(report, self.preset.conformance)
        for flag, count in blocked.items():
            self.refused[flag] = self.refused.get(flag, 0) + count
        if blocked:
            self.first_refused = self.first_refused or name
        if self.refused:
            return None
        with self.timer.phase("storage"):
            digest = self.store.stage_object(self.key, table)
            part = SnapshotPartition(step.window.start, step.window.end, table.num_rows,
                                     digest.value, report.nonzero())
            self.checkpoint["done"][f"{step.window.start}-{step.window.end}"] = {
                "rows": part.rows, "digest": part.digest, "flags": part.flags,
                "seal": checkpoint_seal(self.key, part)}
            self.store.write_job(self.key, self.checkpoint)
        return part

    def refusal(self) -> ConformanceError:
        """The error of a refused request, after its staged objects are discarded (a refused
        request leaves nothing in the store)."""
        self.store.discard_job(self.key)
        preset_name = self.preset.data.conformance_preset
        err = ConformanceError(self.total, blocking=self.refused, symbol=self.request.symbol,
                               partition=self.first_refused, preset=preset_name)
        err.where = (f"{self.request.where()}, first in partition {self.first_refused}, "
                     f"conformance preset {preset_name}")
        unreadable = self.total.sample_texts("invalid_timestamp")
        if "invalid_timestamp" in self.refused and unreadable:
            err.what += f"; timestamps that cannot be read, first: {', '.join(unreadable)}"
        return err

    def publish(self) -> MaterializeResult:
        """Check coverage and lag, publish objects, snapshot and its reference; the result."""
        request, preset, timer = self.request, self.preset, self.timer
        expected = sum(self.calendar.count(p.window, preset.interval_ms)
                       for p in self.plan.partitions)  # per partition: memory stays flat
        coverage_ratio = 1.0 - self.total.counts["gap_bars"] / expected if expected else 1.0
        timer.check_coverage(coverage_ratio)
        if request.follows_now:
            timer.check_lag(request.coverage.end)
        header = request.header()
        fingerprint = dataset_fingerprint(header, [p.ref() for p in self.parts])
        snapshot = Snapshot(fingerprint.value, header, self.parts, partition=preset.partition)
        with timer.phase("storage"):
            self.store.publish_staged(self.key, [p.digest for p in self.parts])
            self.store.put_snapshot(snapshot)
            self.store.write_ref(self.key, snapshot.fingerprint, request=request.where())
            self.store.discard_job(self.key)
        timer.checkpoint()
        return self._result(snapshot, coverage_ratio)

    def _result(self, snapshot: Snapshot, completion: float) -> MaterializeResult:
        stats = getattr(getattr(self.source, "client", None), "stats", None)
        parts, request = self.parts, self.request
        rows = sum(p.rows for p in parts)
        log.info("materialized dataset=%s symbol=%s fingerprint=%s rows=%d fetched=%d reused=%d",
                 request.dataset, request.symbol, snapshot.fingerprint, rows, self.fetched,
                 len(parts) - self.fetched)
        return MaterializeResult(
            completion=completion,
            retries=getattr(stats, "retries", 0), source_requests=getattr(stats, "requests", 0),
            attempts=1 + getattr(stats, "retries", 0),
            bytes_written=self.store.bytes_written_for(self.key),
            fingerprint=snapshot.fingerprint, coverage=request.coverage,
            rows=rows, partitions=len(parts),
            flags=dict(sorted(self.total.counts.items())), report=self.total,
            sla=self.timer.result(), as_of=self.engine.clock.now_ms(), fetched=self.fetched,
            reused=len(parts) - self.fetched, checkpoint_key=self.key, snapshot=snapshot,
        )


def _source_from_registry(preset: ResolvedPreset) -> Source:
    return make_source(preset.data.source.name, preset.data.source.options,
                       base_dir=preset.base_dir)


def check_symbols(preset: ResolvedPreset, symbols: Collection[str], *,
                  dataset: str | None = None) -> None:
    """Refuse several symbols from a source that would give each of them the same rows.

    Raises :class:`InputError` (exit 2) naming the dataset, the preset and the fix; call it
    before fetching anything.
    """
    if len(set(symbols)) < 2:
        return
    source = get_source_class(preset.data.source.name)
    if source.distinguishes_symbols(preset.data.source.options):
        return
    asked = ", ".join(sorted(set(symbols)))
    catalog = "built-in catalog" if preset.catalog == "built-in" else f"catalog {preset.catalog}"
    raise InputError(
        f"dataset {dataset or '?'!r} asks for {len(set(symbols))} symbols ({asked}), but the "
        f"{source.name} source of preset {preset.id} reads the same data for every symbol, so "
        "each would be pinned with the others' rows",
        where=f"preset {preset.id} of the {catalog}",
        fix=source.symbols_fix or "give each symbol its own dataset")


def _fetch_and_conform(source: Source, request: Request, window: TimeRange, contract: Contract,
                       calendar: Calendar, memory: RowMemory | None,
                       ) -> tuple[pa.Table, ConformanceReport, RowMemory]:
    """Fetch one partition window and conform it; errors name the dataset, symbol and window."""
    preset = request.preset
    try:
        batch = source.fetch(request.symbol, window, preset.interval_ms)
    except SourceError as exc:
        exc.locate(dataset=request.dataset, symbol=request.symbol, window=window.label())
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
    "check_symbols",
    "checkpoint_seal",
    "closed_before",
    "closed_request",
    "coverage_end",
    "iso",
    "plan",
]
