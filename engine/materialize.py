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
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pyarrow as pa
from qmtl_engine import arrow_np
from qmtl_engine.calendars import Calendar, get_calendar
from qmtl_engine.clock import Clock, SystemClock
from qmtl_engine.conformance import (
    ConformanceReport,
    Edges,
    RowMemory,
    blocking,
    boundary_jump,
    conform,
    edge_bars,
    refusal_hints,
)
from qmtl_engine.contracts import Contract, get_contract
from qmtl_engine.coverage import closed_before, coverage_end
from qmtl_engine.errors import (
    ConformanceError,
    InputError,
    QmtlLockError,
    SLAExceeded,
    SourceError,
)
from qmtl_engine.executor import Executor, LocalExecutor, Skipped
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
    # The name the source knows the symbol by (the vendor's XBTUSDT for our BTCUSD); None: the
    # symbol itself. It decides which rows are read, not what the data is called: the
    # fingerprint header names ``symbol`` (DESIGN §5), the job key names both.
    source_symbol: str | None = None

    @property
    def fetch_symbol(self) -> str:
        """What the source is asked for."""
        return self.source_symbol or self.symbol

    @property
    def contract_ref(self) -> str:
        return f"{self.preset.data.contract.name}@{self.contract_version}"

    def header(self) -> SnapshotHeader:
        return SnapshotHeader(
            contract=self.contract_ref, preset=self.preset.id, symbol=self.symbol,
            interval_ms=self.preset.interval_ms, coverage_start=self.coverage.start,
            coverage_end=self.coverage.end, adjustment=self.preset.adjustment,
        )

    def job_key(self) -> str:
        """Idempotent key of this materialization: preset (and its definition), symbol, range."""
        parts: list[Any] = [self.preset.id, self.preset.digest(), self.symbol,
                            self.coverage.start, self.coverage.end, self.contract_version,
                            [[g.start, g.end] for g in self.accepted_gaps]]
        if self.source_symbol is not None:  # only then, so that other keys stay as they were
            parts.append(self.source_symbol)
        text = json.dumps(parts)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def where(self) -> str:
        return "/".join(p for p in (self.dataset, self.symbol) if p)


@dataclass(frozen=True)
class PlannedPartition:
    """One window of a plan: fetched, or reused from the locked snapshot (``origin``
    "snapshot": its flags are final) or from a resume checkpoint ("checkpoint": its flags are
    those found within the window, and its boundary is checked again)."""

    window: TimeRange
    action: Literal["reuse", "fetch"]
    reused: SnapshotPartition | None = None
    why: str = ""
    origin: Literal["snapshot", "checkpoint", ""] = ""
    # the window is one of the locked snapshot's (fetched again when its object is missing):
    # the flags of the locked window after it already count their boundary with it
    locked_window: bool = False


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
         checkpoint: dict[str, dict[str, Any]] | None = None, now_ms: int,
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
            out.append(PlannedPartition(window, "reuse", old, "in the locked snapshot",
                                        "snapshot"))
        elif span in done:
            entry = done[span]
            refused = entry if isinstance(entry, str) else prove(entry)
            if refused is None and isinstance(entry, SnapshotPartition):
                out.append(PlannedPartition(window, "reuse", entry,
                                            "finished before an interruption", "checkpoint"))
                continue
            name = window_name(window, request.preset.partition)
            log.warning("checkpoint entry refused dataset=%s symbol=%s partition=%s: %s; "
                        "fetching it again", request.dataset, request.symbol, name, refused)
            out.append(PlannedPartition(window, "fetch", why=f"checkpoint refused: {refused}"))
        else:
            out.append(PlannedPartition(window, "fetch", locked_window=old is not None))
    if request.preset.adjustment != "raw" and any(p.action == "fetch" for p in out):
        # A split or dividend in the new bars rescales every bar before it: adjusted windows
        # fetched at another time are not of one series with the new ones, so all are fetched.
        out = [p if p.action == "fetch" else PlannedPartition(
            p.window, "fetch", why="adjusted prices: a new split or dividend rescales the bars "
            "before it, so every window is fetched again with the new ones") for p in out]
    return Plan(request, tuple(out))


def _same_series(header: SnapshotHeader, request: Request) -> bool:
    """Whether a snapshot holds the series ``request`` asks for (its partitions may be reused)."""
    return (header.preset, header.symbol, header.contract, header.interval_ms,
            header.adjustment) == (request.preset.id, request.symbol, request.contract_ref,
                                   request.preset.interval_ms, request.preset.adjustment)


def _checkpoint_entries(request: Request, checkpoint: dict[str, dict[str, Any]] | None,
                        ) -> dict[tuple[int, int], SnapshotPartition | str]:
    """The checkpoint's finished windows: the entry, or why it cannot be this request's."""
    key = request.job_key()
    out: dict[tuple[int, int], SnapshotPartition | str] = {}
    for span, value in (checkpoint or {}).items():
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
        checkpoint = self.store.read_checkpoints(key)
        # Before the plan looks at what it may reuse, the writer's lease names it, so that a gc
        # running meanwhile keeps it (or has finished when the plan looks).
        self.store.protect_objects(
            [p.digest for p in (previous.partitions if previous is not None else ())]
            + [str(v.get("digest")) for v in checkpoint.values() if v.get("digest")])
        return plan(request, previous=previous, checkpoint=checkpoint,
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
            table = self.store.check_object(part.digest, partition=name)
        except IntegrityError as exc:
            return exc.what
        if table.num_rows != part.rows:
            return f"its object has {table.num_rows} rows, the checkpoint says {part.rows}"
        ts = np.asarray(arrow_np.values(table["ts"], null=0), dtype=np.int64)
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

    def apply(self, the_plan: Plan, *, progress: ProgressFn | None = None,
              executor: Executor | None = None) -> MaterializeResult:
        """Carry out one plan (see :meth:`run`) and return its result, or raise its error."""
        for _, outcome in self.run([the_plan], executor=executor, progress=progress):
            if isinstance(outcome, QmtlLockError):
                raise outcome
            return outcome
        raise InputError("the plan produced no result", fix="make the plan with Engine.plan")

    def run(self, plans: Sequence[Plan], *, executor: Executor | None = None,
            progress: ProgressFn | None = None) -> Iterator[RunOutcome]:
        """Carry out ``plans``: every window to fetch becomes a task on ``executor`` (default:
        one at a time, here), which fetches, conforms, stores and checkpoints it; each plan is
        finalized here as soon as its last window is in, and yielded as ``(index, result)``,
        or ``(index, error)`` when it failed (the other plans go on). Memory stays that of the
        windows in flight, whatever the length of the ranges."""
        self._require_materialize()
        executor = executor or LocalExecutor(1)
        return _run_plans(self, plans, executor, progress)

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


# -- the one path: partition tasks, then a finalize per request ---------------------------------
#
# Every executor runs the same two functions: :func:`run_partition` fetches, conforms and stores
# one window wherever the executor puts it, and returns a small outcome; :func:`_finalize`, on
# the caller's side, runs the checks that span partitions, the blocking rules and the coverage
# and lag budgets, and publishes the snapshot. Nothing a task returns depends on where it ran,
# so the snapshot, and the lock, are the same under every executor by construction.


@dataclass(frozen=True)
class PartitionTask:
    """One window of one request, as an executor ships it (picklable: no open files, no
    secrets; the store and the source are rebuilt from their settings where the task runs)."""

    store: Store
    request: Request
    window: TimeRange
    key: str  # the request's job key
    source_key: str  # which cached source may serve it (preset, definition, symbol)
    clock: Clock
    source_factory: Callable[[ResolvedPreset], Source]


@dataclass
class PartitionOutcome:
    """What one fetched window produced. ``digest`` is None when its own flags refused it (it
    was not stored); ``keys`` are the window's distinct row hashes, for repeated bars across a
    boundary, and ``edges`` its first and last bar (time, close), for price jumps across one;
    the report holds the flags found within the window."""

    window: TimeRange
    rows: int
    digest: str | None
    report: ConformanceReport
    keys: Any  # numpy uint64 array, sorted and distinct
    violations: dict[str, str]
    elapsed_ms: float
    bytes_written: int = 0
    source_requests: int = 0
    retries: int = 0
    edges: Edges | None = None


_sources = threading.local()  # per thread: a source is used by one task at a time
_SOURCES_PER_THREAD = 4


def _source_for(task: PartitionTask) -> Source:
    """The source of ``task``'s request, built once per thread and reused by the next windows
    of the same symbol (an exchange's market list or a file's index is loaded once)."""
    cache: dict[tuple[int, str], Source] = getattr(_sources, "cache", None) or {}
    _sources.cache = cache
    found = cache.pop((id(task.source_factory), task.source_key), None)
    if found is None:
        found = task.source_factory(task.request.preset)
        found.use_clock(task.clock)
        found.use_adjustment(task.request.preset.adjustment)
    cache[(id(task.source_factory), task.source_key)] = found  # most recent last
    while len(cache) > _SOURCES_PER_THREAD:
        cache.pop(next(iter(cache)))
    return found


def forget_sources() -> None:
    """Drop the sources this thread keeps for the next windows (at the end of a run)."""
    _sources.cache = {}


def _source_stats(source: Source) -> tuple[int, int]:
    stats = getattr(getattr(source, "client", None), "stats", None) or getattr(
        source, "stats", None)
    return getattr(stats, "requests", 0), getattr(stats, "retries", 0)


def run_partition(task: PartitionTask) -> PartitionOutcome:
    """Fetch, conform and store one window; record it as finished for the job.

    The budgets of the request's SLA apply to this window's fetch. The checkpoint is written
    before a budget is checked, so a window that finished late is still kept for the rerun.
    """
    request, window = task.request, task.window
    preset = request.preset
    contract = get_contract(preset.data.contract.name, request.contract_version)
    calendar = get_calendar(preset.data.calendar)
    source = _source_for(task)
    requests_before, retries_before = _source_stats(source)
    timer = SLATimer(preset.sla, task.clock, dataset=request.dataset, symbol=request.symbol)
    with timer.phase("backfill"):
        table, report, memory = _fetch_and_conform(source, request, window, contract, calendar,
                                                   None)
        if report.counts["gap_bars"]:  # so a refusal can say where the data lies
            report.source_extent = source.data_extent(request.symbol)
    name = window_name(window, preset.partition)
    log.info("conformed dataset=%s symbol=%s partition=%s rows=%d flags=%s",
             request.dataset, request.symbol, name, table.num_rows,
             ",".join(f"{k}:{v}" for k, v in sorted(report.nonzero().items())) or "-")
    digest, written = None, 0
    if not blocking(report, preset.conformance):
        with timer.phase("storage"):
            found, written = task.store.store_object(table)
            digest = found.value
            part = SnapshotPartition(window.start, window.end, table.num_rows, digest,
                                     report.nonzero())
            task.store.write_checkpoint(task.key, window.start, window.end, {
                "request": request.where(), "rows": part.rows, "digest": part.digest,
                "flags": part.flags, "seal": checkpoint_seal(task.key, part)})
    timer.checkpoint()  # fail_fast raises here; what finished above stays for the rerun
    requests_after, retries_after = _source_stats(source)
    return PartitionOutcome(
        window, table.num_rows, digest, report, memory.hashes, dict(timer.violations),
        timer.elapsed_ms(), written, requests_after - requests_before,
        retries_after - retries_before, edge_bars(table))


@dataclass
class _Written:
    """Objects a run wrote for requests it then refused, and objects its published snapshots
    use. Two requests with the same bars in a window share one object, and with several tasks
    at once one of them may find the object the other wrote: so what a refused request wrote
    is removed only when the run is over, and only if no published snapshot of it uses it."""

    refused: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)

    def take_back(self, store: Store) -> None:
        store.remove_created(sorted(self.refused - self.used))


class _Finalize:
    """The per-request step after its tasks: cross-partition checks, rules, snapshot."""

    def __init__(self, engine: Engine, the_plan: Plan, outcomes: dict[int, PartitionOutcome],
                 as_of: int, written: _Written) -> None:
        self.engine, self.store, self.plan = engine, engine.store, the_plan
        self.request = the_plan.request
        self.preset = self.request.preset
        self.outcomes = outcomes
        self.as_of = as_of
        self.written = written
        self._edges_read: dict[int, Edges | None] = {}
        self._read: dict[str, pa.Table] = {}  # the last two objects _stored read

    def _stored(self, i: int, digest: str) -> pa.Table:
        """Partition ``i``'s stored object, read and checked once for the boundary checks on
        both its sides (repeated bars, their times, price jumps); the last two are kept."""
        table = self._read.get(digest)
        if table is None:
            name = window_name(self.plan.partitions[i].window, self.preset.partition)
            table = self.store.check_object(digest, partition=name)
            self._read = {**dict(list(self._read.items())[-1:]), digest: table}
        return table

    def _keys(self, i: int) -> Any:
        """The distinct row hashes of partition ``i`` (read from the store when reused)."""
        from qmtl_engine.conformance import row_keys

        if i in self.outcomes:
            return self.outcomes[i].keys
        step = self.plan.partitions[i]
        if step.reused is None:  # a bug: every fetched window has an outcome
            raise InputError(f"partition {i} of {self.request.where()} has no outcome",
                             fix="make the plan with Engine.plan")
        return row_keys(self._stored(i, step.reused.digest))

    def _digest(self, i: int) -> str | None:
        """Partition ``i``'s object (None: refused by its own flags, so not stored)."""
        if i in self.outcomes:
            return self.outcomes[i].digest
        reused = self.plan.partitions[i].reused
        return reused.digest if reused is not None else None

    def _rows(self, i: int) -> int:
        if i in self.outcomes:
            return self.outcomes[i].rows
        reused = self.plan.partitions[i].reused
        return reused.rows if reused is not None else 0

    def _boundary(self, i: int, prev_keys: Any, keys: Any) -> ConformanceReport:
        """Repeated bars of partition ``i`` that repeat a bar of partition ``i - 1``."""
        from qmtl_engine.conformance import common_keys, repeated_times

        report = ConformanceReport()
        common = common_keys(prev_keys, keys)
        if common.size:
            times: Any = ()
            digest = self._digest(i)
            if digest is not None:  # the times of the first few, as every flag shows them
                times = repeated_times(self._stored(i, digest), common)
            report.add("repeated_bars", int(common.size), times)
        return report

    def _edges(self, i: int) -> Edges | None:
        """The first and last bar (time, close) of partition ``i`` (None: it has no bars),
        read from the store, once, for a reused partition."""
        if i in self.outcomes:
            return self.outcomes[i].edges
        reused = self.plan.partitions[i].reused
        if reused is None or reused.rows == 0:
            return None
        if i not in self._edges_read:
            self._edges_read[i] = edge_bars(self._stored(i, reused.digest))
        return self._edges_read[i]

    def _new_before(self, i: int) -> bool:
        """Whether the window before locked window ``i`` was not in the locked snapshot: the
        snapshot's first window, with new windows now before it."""
        before = self.plan.partitions[i - 1]
        return before.origin != "snapshot" and not before.locked_window

    def _jump_boundary(self, i: int) -> ConformanceReport:
        """A price jump from the last bar before partition ``i`` (in the nearest earlier
        partition that has bars) to its first bar."""
        threshold = self.preset.conformance.price_jump_threshold
        edges = self._edges(i) if threshold is not None else None
        if threshold is None or edges is None:
            return ConformanceReport()
        before = next((e for j in range(i - 1, -1, -1) if (e := self._edges(j)) is not None),
                      None)
        return boundary_jump(before[1], edges[0], threshold) if before is not None \
            else ConformanceReport()

    def run(self) -> MaterializeResult:
        total, refused = ConformanceReport(), dict[str, int]()
        first_refused: str | None = None
        parts: list[SnapshotPartition] = []
        violations: dict[str, str] = {}
        prev_keys: Any = None
        for i, step in enumerate(self.plan.partitions):
            outcome = self.outcomes.get(i)
            report = outcome.report if outcome is not None else ConformanceReport.from_counts(
                step.reused.flags if step.reused is not None else {})
            if outcome is not None:
                for phase, detail in outcome.violations.items():
                    violations[phase] = detail
            # Flags of a window from the locked snapshot are final; a fetched or checkpointed
            # window holds only what was found within it, so its first boundary is checked. So
            # is a locked window's when the window before it is new (the range grew backward).
            if i > 0 and (step.origin != "snapshot" or self._new_before(i)):
                keys = self._keys(i)
                prev_keys = self._keys(i - 1) if prev_keys is None else prev_keys
                report = _merged(report, self._boundary(i, prev_keys, keys))
                report = _merged(report, self._jump_boundary(i))
                prev_keys = keys
            else:
                prev_keys = None
            blocked = blocking(report, self.preset.conformance)
            for flag, count in blocked.items():
                refused[flag] = refused.get(flag, 0) + count
            if blocked and first_refused is None:
                first_refused = window_name(step.window, self.preset.partition)
            total.merge(report)
            digest = self._digest(i)
            if digest is not None:
                parts.append(SnapshotPartition(step.window.start, step.window.end,
                                               self._rows(i), digest, report.nonzero()))
        if refused:
            raise self._refusal(total, refused, first_refused)
        return self._publish(total, parts, violations)

    def _refusal(self, total: ConformanceReport, refused: dict[str, int],
                 first: str | None) -> ConformanceError:
        """The error of a refused request; what its tasks wrote is taken back (DESIGN §4: a
        refused request leaves nothing in the store, though its windows were stored as each
        passed its own checks): its checkpoints now, its objects when the run is over."""
        self.store.discard_job(self.request.job_key())
        self.written.refused.update(o.digest for o in self.outcomes.values()
                                    if o.digest is not None and o.bytes_written)
        preset_name = self.preset.data.conformance_preset
        notes, hints = self._extent_findings(total) if "gap_bars" in refused else ([], [])
        err = ConformanceError(total, blocking=refused, symbol=self.request.symbol,
                               partition=first, preset=preset_name, notes=notes,
                               hints=[*hints, *refusal_hints(total, refused)])
        err.where = (f"{self.request.where()}, first in partition {first}, "
                     f"conformance preset {preset_name}")
        return err

    def _extent_findings(self, total: ConformanceReport) -> tuple[list[str], list[str]]:
        """When bars are missing because the range reaches past the data: where the data
        starts and ends (as the source lists it, else as the fetched windows had it), and how
        to ask for a range within it. Nothing when the data spans the range."""
        request, step = self.request, self.preset.interval_ms
        coverage, symbol = request.coverage, request.symbol
        asked = f"[{iso(coverage.start)}, {iso(coverage.end)})"
        known = total.source_extent
        count = len(self.plan.partitions)
        first = next((e[0][0] for i in range(count) if (e := self._edges(i)) is not None), None)
        last = next((e[1][0] for i in reversed(range(count)) if (e := self._edges(i)) is not None),
                    None)
        if first is None or last is None:
            note = f"the source gave no bars of {symbol} in the requested range {asked}"
            if known is None:
                return [note], [f"check the symbol {symbol!r} and the range against the source"]
            return [f"{note}; the data for {symbol} starts at {iso(known[0])} and ends at "
                    f"{iso(known[1])}"], [
                f"ask for a range within the data (from {iso(known[0])} to "
                f"{iso(known[1] + step)})"]
        calendar = get_calendar(self.preset.data.calendar)
        late = first > coverage.start and calendar.count(TimeRange(coverage.start, first), step)
        early = (last + step < coverage.end
                 and calendar.count(TimeRange(last + step, coverage.end), step))
        if not (late or early):
            return [], []
        hints = []
        if late:
            hints.append(f"move the dataset's `start` to {iso(first)} or later")
        if early:
            hints.append(f"move the dataset's `end` to {iso(last + step)} or earlier")
        if known is None:
            return [f"in the requested range {asked}, the data for {symbol} starts at "
                    f"{iso(first)} and ends at {iso(last)}"], hints
        return [f"the data for {symbol} starts at {iso(known[0])} and ends at {iso(known[1])} "
                f"(as the source lists it); the requested range is {asked}"], hints

    def _publish(self, total: ConformanceReport, parts: list[SnapshotPartition],
                 violations: dict[str, str]) -> MaterializeResult:
        """Check coverage and lag, publish the snapshot and its reference; the result."""
        request, preset = self.request, self.preset
        timer = SLATimer(preset.sla, self.engine.clock, dataset=request.dataset,
                         symbol=request.symbol)
        timer.violations.update(violations)
        expected = sum(get_calendar(preset.data.calendar).count(p.window, preset.interval_ms)
                       for p in self.plan.partitions)  # per partition: memory stays flat
        completion = 1.0 - total.counts["gap_bars"] / expected if expected else 1.0
        try:
            timer.check_coverage(completion)
        except SLAExceeded as exc:  # too few bars: say where the data lies, when it is short
            notes, hints = self._extent_findings(total)
            if notes:
                exc.what += "; " + "; ".join(notes)
                exc.fix = "; ".join(hints) + "; otherwise " + (exc.fix or "")
            raise
        if request.follows_now:
            timer.check_lag(request.coverage.end)
        header = request.header()
        fingerprint = dataset_fingerprint(header, [p.ref() for p in parts])
        snapshot = Snapshot(fingerprint.value, header, parts, partition=preset.partition)
        for outcome in self.outcomes.values():
            if outcome.digest is not None and outcome.bytes_written:  # written by this run
                self.store.note_present(outcome.digest)
        self.written.used.update(p.digest for p in parts)
        written = self.store.put_snapshot(snapshot)
        # Windows fetched now whose objects were already stored, and a manifest that was: a gc
        # may judge them old and unnamed, so the lease says this run relies on them (what the
        # plan reused was protected before the plan looked at it).
        found = sorted({o.digest for o in self.outcomes.values()
                        if o.digest is not None and not o.bytes_written})
        if found or not written:
            self.store.rely_on(snapshot, objects=found)
        self.store.write_ref(request.job_key(), snapshot.fingerprint, request=request.where())
        self.store.discard_job(request.job_key(), [  # the windows checkpointed, by this run
            (s.window.start, s.window.end) for s in self.plan.partitions  # or an earlier one
            if s.action == "fetch" or s.origin == "checkpoint"])
        outcomes = list(self.outcomes.values())
        retries = sum(o.retries for o in outcomes)
        elapsed = sum(o.elapsed_ms for o in outcomes) + timer.elapsed_ms()
        rows = sum(p.rows for p in parts)
        log.info("materialized dataset=%s symbol=%s fingerprint=%s rows=%d fetched=%d reused=%d",
                 request.dataset, request.symbol, snapshot.fingerprint, rows, len(outcomes),
                 len(parts) - len(outcomes))
        return MaterializeResult(
            fingerprint=snapshot.fingerprint, coverage=request.coverage, rows=rows,
            partitions=len(parts), flags=dict(sorted(total.counts.items())), report=total,
            sla=SLAResult(preset.sla.total_deadline_ms, round(elapsed),
                          "; ".join(timer.violations.values()) or None),
            as_of=self.as_of, fetched=len(outcomes), reused=len(parts) - len(outcomes),
            checkpoint_key=request.job_key(), attempts=1 + retries, completion=completion,
            retries=retries, source_requests=sum(o.source_requests for o in outcomes),
            bytes_written=sum(o.bytes_written for o in outcomes), snapshot=snapshot)


def _merged(a: ConformanceReport, b: ConformanceReport) -> ConformanceReport:
    out = ConformanceReport()
    out.merge(a)
    out.merge(b)
    return out


RunOutcome = tuple[int, "MaterializeResult | QmtlLockError"]


def _run_plans(engine: Engine, plans: Sequence[Plan], executor: Executor,
               progress: ProgressFn | None) -> Iterator[RunOutcome]:
    """:meth:`Engine.run`: every fetched window of every plan through ``executor``; each plan
    finalized as soon as its last window is in."""
    as_of = engine.clock.now_ms()  # once for the run: every request of it is as of one time
    tasks: list[PartitionTask] = []
    owner: list[tuple[int, int]] = []  # (plan, partition) of each task
    for p, the_plan in enumerate(plans):
        _check_closed(engine, the_plan)
        request = the_plan.request
        source_key = json.dumps([request.preset.id, request.preset.digest(),
                                 request.fetch_symbol])
        for i, step in enumerate(the_plan.partitions):
            if step.action == "fetch":
                tasks.append(PartitionTask(engine.store, request, step.window,
                                           request.job_key(), source_key, engine.clock,
                                           engine.source_factory))
                owner.append((p, i))
    waiting = [len(pl.to_fetch) for pl in plans]
    outcomes: list[dict[int, PartitionOutcome]] = [{} for _ in plans]
    failed: list[dict[int, QmtlLockError]] = [{} for _ in plans]
    written = _Written()
    for p, count in enumerate(waiting):  # nothing to fetch: only the reused windows to judge
        if count == 0:
            yield p, _finish(engine, plans[p], outcomes[p], failed[p], as_of, written)
    try:
        # A window that failed skips the windows of its request not started yet: they would
        # hit the same source, budget or data (the other requests go on; every window that
        # finished stays checkpointed for the rerun).
        skip = lambda t: bool(failed[owner[t][0]])  # noqa: E731
        for t, result in executor.map_unordered(run_partition, tasks, skip=skip):
            p, i = owner[t]
            if isinstance(result, QmtlLockError):
                failed[p][i] = result
            elif isinstance(result, Skipped):
                pass
            elif isinstance(result, BaseException):
                raise result  # a bug or an interrupt, not a failure of the data: stop
            else:
                outcomes[p][i] = result
            waiting[p] -= 1
            if progress is not None:
                done = len(plans[p].partitions) - waiting[p]
                progress(plans[p].request, done, len(plans[p].partitions))
            if waiting[p] == 0:
                yield p, _finish(engine, plans[p], outcomes[p], failed[p], as_of, written)
        # Not on an interrupt: a checkpoint written meanwhile may name what a refused request
        # wrote; gc removes what nothing names.
        written.take_back(engine.store)
    finally:
        forget_sources()


def _finish(engine: Engine, the_plan: Plan, outcomes: dict[int, PartitionOutcome],
            failed: dict[int, QmtlLockError], as_of: int,
            written: _Written) -> MaterializeResult | QmtlLockError:
    """The result of one request, or why it failed: its first failed window in time order
    (the same error whatever order the executor finished them in)."""
    if failed:
        return failed[min(failed)]
    try:
        return _Finalize(engine, the_plan, outcomes, as_of, written).run()
    except QmtlLockError as exc:
        return exc


def _check_closed(engine: Engine, the_plan: Plan) -> None:
    request = the_plan.request
    stable_end = closed_before(request.preset, engine.clock.now_ms())
    if request.coverage.end > stable_end:  # a plan not made by plan(), or another clock
        raise InputError(
            f"the plan for {request.where()} reaches {iso(request.coverage.end)}, past the "
            f"last closed bar {iso(stable_end)}",
            fix="make the plan with Engine.plan, which stops at the last closed bar")



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
        batch = source.fetch(request.fetch_symbol, window, preset.interval_ms)
    except SourceError as exc:
        exc.locate(dataset=request.dataset, symbol=request.symbol, window=window.label(),
                   source_symbol=request.source_symbol)
        raise
    except QmtlLockError:
        raise
    except Exception as exc:  # a source bug or an unexpected I/O failure
        error = SourceError(
            f"{type(exc).__name__}: {exc}", source=preset.data.source.name,
            symbol=request.symbol, window=window.label(),
            fix="rerun `qmtl-lock resolve`; finished partitions are kept",
        )
        error.locate(dataset=None, symbol=request.symbol, window=window.label(),
                     source_symbol=request.source_symbol)
        raise error from exc
    try:
        return conform(batch, window=window, interval_ms=preset.interval_ms, contract=contract,
                       calendar=calendar, memory=memory, accepted_gaps=request.accepted_gaps,
                       price_jump_threshold=preset.conformance.price_jump_threshold)
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
