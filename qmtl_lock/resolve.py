"""``resolve``: materialize what seamless.yaml asks for and write seamless.lock.

An entry whose request and preset are unchanged keeps its pin (``end: now`` included) and, when its
snapshot is in the store, costs no data read at all. Anything else is planned, materialized through
the engine and re-pinned. The lock is written last and atomically, only if its bytes change.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine import (
    DAY_MS,
    Clock,
    InputError,
    OnViolation,
    QmtlLockError,
    StoreBusy,
    SystemClock,
    TimeRange,
    default_jobs,
    iso,
    to_ms,
)

from qmtl_lock.errors import LockOutOfDate, RequestsFailed, UpstreamChanged
from qmtl_lock.lockfile import (
    DatasetEntry,
    Lockfile,
    SymbolEntry,
    read_lock,
    render,
    write_lock,
)
from qmtl_lock.manifest import DATA_KEYS, DatasetRequest, LoadedManifest, load_manifest
from qmtl_lock.project_lock import DEFAULT_WAIT_S, writing_lock
from qmtl_lock.symbols import changed_settings, symbol_settings

if TYPE_CHECKING:
    from qmtl_engine import Executor, MaterializeResult, RunMetrics

Action = Literal["unchanged", "restored", "added", "updated", "extended", "removed", "held",
                 "restated"]


def clock_from_env() -> Clock:
    """``QMTL_LOCK_NOW`` (an ISO time) pins wall-clock time, for reproducible runs and tests."""
    pinned = os.environ.get("QMTL_LOCK_NOW")
    return PinnedNowClock(to_ms(pinned)) if pinned else SystemClock()


class PinnedNowClock(SystemClock):
    """Wall-clock ``now`` fixed (for ``as_of`` and ``end: now``); elapsed time stays real."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        return self._now


@dataclass
class Change:
    dataset: str
    symbol: str | None
    action: Action
    detail: str = ""
    plan: list[str] = field(default_factory=list)

    def line(self) -> str:
        who = f"{self.dataset}/{self.symbol}" if self.symbol else self.dataset
        return f"{self.action:9} {who}" + (f": {self.detail}" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "symbol": self.symbol, "action": self.action,
                "detail": self.detail, "plan": self.plan}


@dataclass
class ResolveResult:
    changes: list[Change]
    lock: Lockfile
    wrote: bool
    dry_run: bool
    lock_path: Path
    reports: list[dict[str, Any]] = field(default_factory=list)  # one per materialization

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


@dataclass
class _Task:
    ds: DatasetRequest
    symbol: str
    coverage: TimeRange
    old: SymbolEntry | None
    reason: Action
    detail: str
    reusable: bool = True  # may partitions of the old snapshot be reused?
    same_source: bool = True  # same preset, definition and contract as the locked entry


ProgressFactory = Callable[[str], Callable[[int, int], None]]


def _same_request(ds: DatasetRequest, old: DatasetEntry) -> list[str]:
    """Fields of the request that decide the data and differ from the lock (symbols aside)."""
    new = ds.request_dict()
    changed = [k for k in DATA_KEYS if new.get(k) != old.request.get(k)]
    if ds.preset.digest() != old.preset_digest:
        changed.append("preset definition")
    return changed


def _symbol_changes(want: dict[str, str], have: dict[str, str]) -> list[str]:
    """The settings of a symbol of its own (``source_symbol``, ``start``, ``end``) that differ
    between seamless.yaml (``want``) and the lock (``have``), named as resolve prints them."""
    return [key if key == "source_symbol" else f"symbol {key}"
            for key in changed_settings(want, have)]


def _expires(loaded: LoadedManifest, ds: DatasetRequest, as_of: int) -> int | None:
    ttl = loaded.registry.retention_ttl_days(ds.spec.retention_class)
    return None if ttl is None else as_of + ttl * DAY_MS


def _with_retention(loaded: LoadedManifest, ds: DatasetRequest, entry: SymbolEntry) -> SymbolEntry:
    """An entry keeps its as_of; a changed retention class or TTL moves its expiry."""
    expires = _expires(loaded, ds, entry.as_of)
    if entry.retention_class == ds.spec.retention_class and entry.expires_at == expires:
        return entry
    return replace(entry, retention_class=ds.spec.retention_class, expires_at=expires)


Planned = tuple[dict[str, dict[str, SymbolEntry]], list["_Task"], list[Change]]


def _plan_tasks(loaded: LoadedManifest, old_lock: Lockfile | None, selected: set[str],
                update: bool, now_ms: int, refresh: bool = False) -> Planned:
    """Split every (dataset, symbol) into kept entries and tasks to materialize. No I/O."""
    kept: dict[str, dict[str, SymbolEntry]] = {}
    tasks: list[_Task] = []
    changes: list[Change] = []
    for name, ds in sorted(loaded.datasets.items()):
        old_ds = old_lock.datasets.get(name) if old_lock else None
        kept[name] = {}
        in_scope = not selected or name in selected
        why = _same_request(ds, old_ds) if old_ds else ["new dataset"]
        pinned_ends = [e.coverage_bounds[1] for e in (old_ds.symbols.values() if old_ds else [])]
        own_want = symbol_settings({"symbol_settings": ds.spec.symbol_settings()})
        own_have = symbol_settings(old_ds.request) if old_ds else {}
        for symbol in sorted(ds.spec.symbol_names):
            old = old_ds.symbols.get(symbol) if old_ds else None
            moving = update and in_scope
            own = (_symbol_changes(own_want.get(symbol, {}), own_have.get(symbol, {}))
                   if old is not None else [])
            if old is not None and not why and not own and not ((update or refresh) and in_scope):
                kept[name][symbol] = _with_retention(loaded, ds, old)
                tasks.append(_Task(ds, symbol, TimeRange(*old.coverage_bounds), old,
                                   "unchanged", ""))
                continue
            if not in_scope and old is not None:
                kept[name][symbol] = old  # not asked to touch it: stays as locked, even if stale
                continue
            pinned = max(pinned_ends) if pinned_ends and not moving and not why else None
            coverage = _planned_coverage(loaded, ds, symbol, now_ms, pinned)
            reason, detail = _reason(old, old_ds is not None, why + own, coverage, refresh)
            detail += _incomplete_note(ds, symbol, coverage)
            # Reused partitions carry the flags they were checked with: a change of preset,
            # contract or accepted gaps means checking again; another source symbol is other
            # data (not a restatement of the same).
            same_source = not {"preset", "contract_version", "preset definition",
                               "source_symbol"} & {*why, *own}
            reusable = not refresh and same_source and "accepted_gaps" not in why
            tasks.append(_Task(ds, symbol, coverage, old, reason, detail, reusable, same_source))
    if old_lock:
        for name in sorted(set(old_lock.datasets) - set(loaded.datasets)):
            changes.append(Change(name, None, "removed", "no longer in seamless.yaml"))
    return kept, tasks, changes


def _planned_coverage(loaded: LoadedManifest, ds: DatasetRequest, symbol: str, now_ms: int,
                      pinned_end: int | None) -> TimeRange:
    """The coverage to materialize for ``symbol``, inside its range (the dataset's, cut to the
    symbol's own start and end): a fixed end that is final already; else the dataset's pinned
    end (a new symbol joins it) unless asked to move; else the last closed, stable bar. A fixed
    end still in the future so pins what is final so far, as ``end: now`` does."""
    from qmtl_engine import coverage_end

    start, asked = ds.symbol_range(symbol)
    end = coverage_end(ds.preset, now_ms)
    if asked is not None and asked <= end:
        end = asked
    elif pinned_end is not None:
        end = pinned_end if asked is None else min(pinned_end, asked)
    if end <= start:
        if start == ds.start_ms:
            raise InputError(
                f"dataset {ds.name!r}: nothing to resolve, start {iso(start)} is not before "
                f"the last closed bar {iso(end)}", where=str(loaded.path), fix="move start earlier")
        at = ("datasets", ds.name, "symbols", ds.spec.symbol_names.index(symbol), "start")
        raise InputError(  # a listing still to come: nothing of it is final yet
            f"symbol {symbol} of dataset {ds.name!r}: nothing to resolve, its start {iso(start)} "
            f"is not before the last closed bar {iso(end)}",
            where=f"{loaded.path}:{loaded.doc.line_of(at)}",
            fix=f"move its start earlier, or add {symbol} once it has closed bars")
    return TimeRange(start, end)


def _incomplete_note(ds: DatasetRequest, symbol: str, coverage: TimeRange) -> str:
    asked = ds.symbol_range(symbol)[1]
    if asked is None or coverage.end >= asked:
        return ""
    return (f"; incomplete until {iso(asked)}: only bars before {iso(coverage.end)} are "
            "final yet, `qmtl-lock resolve --update` extends it later")


def _reason(old: SymbolEntry | None, dataset_locked: bool, why: list[str],
            coverage: TimeRange, refresh: bool) -> tuple[Action, str]:
    """Why a symbol is materialized, as the action and detail resolve prints."""
    if old is None:
        return "added", "new symbol" if dataset_locked else "new dataset"
    if why:
        return "updated", "changed " + ", ".join(why)
    start, end = old.coverage_bounds
    if end < coverage.end and start == coverage.start:
        return "extended", f"coverage end {iso(end)} -> {iso(coverage.end)}"
    return "updated", "--refresh" if refresh else "--update"


def resolve(
    manifest_path: str | Path = "seamless.yaml",
    *,
    datasets: Collection[str] = (),
    update: bool = False,
    refresh: bool = False,
    locked: bool = False,
    frozen: bool = False,
    dry_run: bool = False,
    jobs: int | None = None,
    clock: Clock | None = None,
    progress: ProgressFactory | None = None,
    metrics: RunMetrics | None = None,
    lock_timeout_s: float = DEFAULT_WAIT_S,
    on_wait: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> ResolveResult:
    """Resolve the manifest into its lock; see the module docstring.

    ``locked`` fails with :class:`LockOutOfDate` if the lock would change; ``frozen`` takes the
    lock as it is and only materializes what it pins into the store. Raises the engine's
    materialization errors (exit 3) and :class:`UpstreamChanged` when a pinned fingerprint no
    longer reproduces; in every failure the previous lock is left untouched. A resolve that may
    write the lock waits for any other one of the same project (``on_wait`` is told), and
    raises :class:`~qmtl_lock.project_lock.ProjectBusy` after ``lock_timeout_s``; one that
    materializes waits for a gc running on the store (``on_wait`` is told too), and raises
    :class:`~qmtl_engine.StoreBusy` when it runs on too long. Windows are fetched on
    ``executor`` (a Dask cluster, say) when one is given, else on ``jobs`` threads (default:
    one per core, :func:`~qmtl_engine.default_jobs`); the lock is the same either way.
    """
    loaded = load_manifest(manifest_path)
    _refuse_unknown(loaded, datasets)
    writer = (nullcontext() if dry_run or frozen else
              writing_lock(loaded.root, timeout_s=lock_timeout_s, on_wait=on_wait))
    with writer:
        return _resolve(loaded, datasets=datasets, update=update, refresh=refresh,
                        locked=locked, frozen=frozen, dry_run=dry_run,
                        jobs=default_jobs() if jobs is None else jobs,
                        clock=clock or clock_from_env(), progress=progress, metrics=metrics,
                        executor=executor, on_wait=on_wait)


def _resolve(loaded: LoadedManifest, *, datasets: Collection[str], update: bool, refresh: bool,
             locked: bool, frozen: bool, dry_run: bool, jobs: int, clock: Clock,
             progress: ProgressFactory | None, metrics: RunMetrics | None,
             executor: Executor | None = None,
             on_wait: Callable[[str], None] | None = None) -> ResolveResult:
    """:func:`resolve` once the manifest is read and the project's lock writer is held."""
    lock_path = loaded.lock_path
    old_lock = read_lock(lock_path) if lock_path.exists() else None
    if locked:  # refuse before fetching anything when the manifest already disagrees
        _refuse_drift(loaded, old_lock)
    if frozen:  # the lock as it is: rebuild what it pins, plan nothing new
        if old_lock is None:
            raise InputError("--frozen needs an existing seamless.lock", where=str(lock_path),
                             fix="run `qmtl-lock resolve` first")
        tasks = _frozen_tasks(loaded, old_lock)
        kept = {n: dict(d.symbols) for n, d in old_lock.datasets.items()}
        changes: list[Change] = []
    else:
        kept, tasks, changes = _plan_tasks(loaded, old_lock, set(datasets), update,
                                           clock.now_ms(), refresh=refresh)
    _refuse_one_file_for_many_symbols(tasks)
    runner = _Runner(loaded, clock, frozen=frozen, dry_run=dry_run, progress=progress,
                     executor=executor, on_wait=on_wait)
    try:  # the store lease, taken when the first materialization starts, lasts until the lock
        outcomes = runner.run_all(tasks, jobs)  # pins the result
        reports = _fold(outcomes, kept, changes, metrics)
        if frozen and old_lock is not None:
            runner.forget_pinned(outcomes, old_lock)
            return ResolveResult(changes, old_lock, False, dry_run, lock_path, reports)
        new_lock = _assemble(loaded, old_lock, kept, datasets)
        if locked and (old_lock is None or render(old_lock) != render(new_lock)):
            raise LockOutOfDate([c.line() for c in changes if c.action != "unchanged"]
                                or ["the lock's text differs from what resolve would write"])
        wrote = False if dry_run else write_lock(lock_path, new_lock)
        runner.forget_pinned(outcomes, new_lock)
        if not dry_run:  # lets check and the next no-op resolve answer without the models
            from qmtl_lock.check import remember_in_sync

            remember_in_sync(loaded, new_lock)
    finally:
        runner.release()
    return ResolveResult(changes, new_lock, wrote, dry_run, lock_path, reports)


def _fold(outcomes: list[_Outcome], kept: dict[str, dict[str, SymbolEntry]],
          changes: list[Change], metrics: RunMetrics | None) -> list[dict[str, Any]]:
    """Fold the tasks' outcomes into the kept entries and the changes (both sorted after);
    return the materialize reports."""
    reports = []
    for outcome in outcomes:
        changes.append(outcome.change)
        if outcome.entry is not None:
            kept[outcome.change.dataset][outcome.task.symbol] = outcome.entry
        if outcome.result is not None:
            if metrics is not None:
                metrics.observe(outcome.request, outcome.result)
            reports.append(report_dict(outcome.change.dataset, outcome.task.symbol,
                                       outcome.task.ds.spec.retention_class, outcome.result))
    changes.sort(key=lambda c: (c.dataset, c.symbol or ""))
    return sorted(reports, key=lambda r: (r["dataset"], r["symbol"]))


def _refuse_unknown(loaded: LoadedManifest, datasets: Collection[str]) -> None:
    unknown = sorted(set(datasets) - set(loaded.datasets))
    if unknown:
        raise InputError(f"unknown dataset {unknown[0]!r}", where=str(loaded.path),
                         fix=f"choose from: {', '.join(sorted(loaded.datasets)) or '(none)'}")


def _refuse_one_file_for_many_symbols(tasks: list[_Task]) -> None:
    """Before anything is fetched: a source that would serve one file as every symbol of a
    dataset is bad input."""
    pinning = {id(t.ds): t.ds for t in tasks if t.reason != "unchanged"}
    if pinning:
        from qmtl_engine import check_symbols

        for ds in pinning.values():
            # what the source is asked for: symbols read from one source symbol over
            # disjoint ranges (a reused ticker) are told apart by their range
            check_symbols(ds.preset, [ds.source_symbol(s) for s in ds.spec.symbol_names],
                          dataset=ds.name)


def _refuse_drift(loaded: LoadedManifest, old_lock: Lockfile | None) -> None:
    from qmtl_lock.check import compare

    drift = [d.line() for d in compare(loaded, old_lock)] if old_lock else [
        "seamless.lock does not exist"]
    if drift:
        raise LockOutOfDate(drift)


def _assemble(loaded: LoadedManifest, old_lock: Lockfile | None,
              kept: dict[str, dict[str, SymbolEntry]], selected: Collection[str]) -> Lockfile:
    """The new lock: each dataset's request with its entries; unselected datasets as locked."""
    entries: dict[str, DatasetEntry] = {}
    for name, ds in sorted(loaded.datasets.items()):
        if selected and name not in selected and old_lock and name in old_lock.datasets:
            entries[name] = old_lock.datasets[name]  # not selected: left exactly as locked
        else:
            entries[name] = DatasetEntry(ds.request_dict(), ds.preset.digest(), kept[name])
    return Lockfile(datasets=entries)


@dataclass
class _Outcome:
    """What running one task produced. Workers return these; only the caller folds them into
    the lock, so no worker thread touches shared state."""

    task: _Task
    change: Change
    entry: SymbolEntry | None = None  # the entry to lock; None keeps what the plan kept
    request: Any = None  # the engine Request, when something was materialized
    result: MaterializeResult | None = None


_PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}  # materialization order of datasets


class _Runner:
    """Runs the tasks of one resolve through one engine, created only when there is work (the
    engine and pyarrow are not imported for a no-op)."""

    def __init__(self, loaded: LoadedManifest, clock: Clock, *, frozen: bool, dry_run: bool,
                 progress: ProgressFactory | None, executor: Executor | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.on_wait = on_wait  # told when the store lease waits for a running gc
        self.loaded = loaded
        self.clock = clock
        self.frozen = frozen
        self.dry_run = dry_run
        self.progress = progress
        self.executor = executor  # None: `jobs` threads here, made for the run
        self.store = loaded.open_store()
        self.store.check_reachable()  # a missing bucket or a dead endpoint: one message, now
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        self._lease: Any = None  # held from the first materialization on (see release)
        self._busy: StoreBusy | None = None  # the lease gave up waiting for a gc
        self._missing: set[tuple[str, str]] = set()  # locked symbols whose snapshot is gone

    def run_all(self, tasks: list[_Task], jobs: int) -> list[_Outcome]:
        """Run every task (a failure does not stop the others, so that one run reports every
        failing symbol); raise the failure, or :class:`RequestsFailed` for several.

        Each task is planned here; the windows to fetch of every plan then go through one
        engine run on the executor (``jobs`` threads unless one was given), in priority order.
        """
        ordered = sorted(tasks, key=lambda t: (_PRIORITY_RANK[t.ds.spec.priority], t.ds.name,
                                               t.symbol))
        results: dict[int, _Outcome | QmtlLockError] = {}
        pending: list[tuple[int, Any, Any]] = []  # (task number, engine Request, Plan)
        for n, task in enumerate(ordered):
            try:
                prepared = self.prepare(task)
            except QmtlLockError as exc:
                results[n] = exc
                continue
            if isinstance(prepared, _Outcome):
                results[n] = prepared
            else:
                pending.append((n, *prepared))
        if pending:
            self._run_plans(ordered, pending, jobs, results)
        failures = sorted(((t.ds.name, t.symbol, r) for n, t in enumerate(ordered)
                           if isinstance(r := results[n], QmtlLockError)),
                          key=lambda f: (f[0], f[1]))
        done = [r for _, r in sorted(results.items()) if isinstance(r, _Outcome)]
        if failures:
            error = failures[0][2] if len(failures) == 1 else RequestsFailed(
                failures, total=len(ordered))
            # what `resolve --report` writes though the lock is not: each symbol that finished,
            # and each failure with what it found (a refusal's flags and first offenders)
            error.reports = sorted(  # type: ignore[attr-defined]
                [report_dict(o.change.dataset, o.task.symbol, o.task.ds.spec.retention_class,
                             o.result) for o in done if o.result is not None]
                + [failure_dict(name, symbol, exc) for name, symbol, exc in failures],
                key=lambda r: (r["dataset"], r["symbol"]))
            raise error
        return done

    def _run_plans(self, ordered: list[_Task], pending: list[tuple[int, Any, Any]], jobs: int,
                   results: dict[int, _Outcome | QmtlLockError]) -> None:
        from qmtl_engine import LocalExecutor

        executor = self.executor or LocalExecutor(jobs)
        ticks: dict[int, Callable[[int, int], None]] = {}

        def progress(request: Any, done: int, total: int) -> None:
            k = by_request[id(request)]
            if self.progress is not None:
                task = ordered[pending[k][0]]
                tick = ticks.get(k) or ticks.setdefault(
                    k, self.progress(f"{task.ds.name}/{task.symbol}"))
                tick(done, total)

        plans = [the_plan for _, _, the_plan in pending]
        by_request = {id(the_plan.request): k for k, the_plan in enumerate(plans)}
        try:
            for k, outcome in self.engine().run(plans, executor=executor, progress=progress):
                n, request, _ = pending[k]
                if isinstance(outcome, QmtlLockError):
                    results[n] = outcome
                    continue
                try:
                    judged = self._judge(ordered[n], outcome)
                except QmtlLockError as exc:
                    results[n] = exc
                    continue
                judged.request, judged.result = request, outcome
                results[n] = judged
        finally:  # on Ctrl-C, windows not started yet are not started at all
            if self.executor is None:
                executor.close(cancel=True)

    def engine(self) -> Any:
        with self._engine_lock:
            if self._engine is None:
                from qmtl_engine import Engine

                if self._busy is not None:  # every task would wait for that gc again
                    raise self._busy
                if not self.dry_run:  # gc keeps the jobs and new files of a resolve that runs
                    lease = self.store.lease(owner=f"resolve {self.loaded.path}",
                                             on_wait=self.on_wait)
                    try:  # raises OSError when the store cannot be written
                        lease.__enter__()
                    except StoreBusy as exc:  # a gc held the store for too long
                        self._busy = exc
                        raise
                    self._lease = lease
                self._engine = Engine(self.store, mode="materialize", clock=self.clock)
            return self._engine

    def forget_pinned(self, outcomes: list[_Outcome], lock: Lockfile) -> None:
        """Drop the store's reference to each finished snapshot that ``lock`` now pins (one it
        does not pin, e.g. under SLA ``hold``, stays named for the next run to reuse)."""
        for outcome in outcomes:
            if outcome.result is None:
                continue
            entry = lock.datasets.get(outcome.task.ds.name)
            sym = entry.symbols.get(outcome.task.symbol) if entry else None
            if sym is not None and sym.dataset_fingerprint == outcome.result.fingerprint:
                self.store.delete_ref(outcome.result.checkpoint_key)

    def release(self) -> None:
        """Give the store lease back (a no-op when nothing was materialized)."""
        if self._lease is not None:
            self._lease.__exit__(None, None, None)
            self._lease = None

    def prepare(self, task: _Task) -> _Outcome | tuple[Any, Any]:
        """The outcome of a task that needs no data (unchanged, or a dry run), or the engine
        request and plan of one that does."""
        name, symbol = task.ds.name, task.symbol
        previous = None
        if task.old is not None and not self.store.has_snapshot(task.old.dataset_fingerprint):
            self._missing.add((name, symbol))
        elif task.old is not None:
            if task.reason == "unchanged" and not self.frozen:
                return _Outcome(task, Change(name, symbol, "unchanged"))
            previous = self.store.get_snapshot(task.old.dataset_fingerprint)
            if task.reason == "unchanged" and all(self.store.has_object(p.digest)
                                                  for p in previous.partitions):
                return _Outcome(task, Change(name, symbol, "unchanged"))  # --frozen: all there
            if not task.reusable:
                previous = None
        engine = self.engine()
        request = task.ds.engine_request(symbol, task.coverage,
                                         follows_now=task.ds.follows_now(
                                             symbol, task.coverage.end))
        the_plan = engine.plan(request, previous=previous)
        if self.dry_run:
            fetch = len(the_plan.to_fetch)
            still = (task.old is not None and task.detail.startswith("--update")
                     and TimeRange(*task.old.coverage_bounds) == task.coverage)
            if fetch == 0 and still:  # --update that moves nothing: as a real run reports it
                return _Outcome(task, Change(name, symbol, "unchanged"))
            restore = task.reason == "unchanged" or (still and (name, symbol) in self._missing)
            detail = "snapshot missing from the store" if restore else task.detail
            action: Action = "restored" if restore else task.reason
            return _Outcome(task, Change(name, symbol, action,
                                         f"{detail}; would fetch {fetch} of "
                                         f"{len(the_plan.partitions)} partitions",
                                         the_plan.describe()))
        return request, the_plan

    def _judge(self, task: _Task, result: MaterializeResult) -> _Outcome:
        """What a materialization means for the lock entry of its task."""
        name, symbol, old = task.ds.name, task.symbol, task.old
        if old is not None and (task.reason == "unchanged" or self.frozen):
            if result.fingerprint != old.dataset_fingerprint:
                raise UpstreamChanged(dataset=name, symbol=symbol,
                                      expected=old.dataset_fingerprint,
                                      actual=result.fingerprint)
            return _Outcome(task, Change(name, symbol, "restored", "snapshot rebuilt in the store"))
        held = task.ds.preset.sla.on_violation is OnViolation.HOLD and result.sla.violation
        if held and old is not None:  # `hold`: keep the last good pin, say why
            return _Outcome(task, Change(name, symbol, "held",
                                         f"kept the locked data: {result.sla.violation}"), old)
        if old is not None and result.fingerprint == old.dataset_fingerprint:
            entry = _with_retention(self.loaded, task.ds, old)
            if dict(entry.conformance_flags) != result.flags:  # e.g. newly accepted gaps
                entry = replace(entry, conformance_flags=result.flags)
            same = (Change(name, symbol, "restored", "snapshot rebuilt in the store")
                    if (name, symbol) in self._missing  # --update of data that did not move
                    else Change(name, symbol, "unchanged", "same content"))
            return _Outcome(task, same, entry)
        return _Outcome(task, self._new_pin_change(task, result), self._new_entry(task, result))

    def _new_pin_change(self, task: _Task, result: MaterializeResult) -> Change:
        action, detail = task.reason, (f"{task.detail}; fetched {result.fetched}, reused "
                                       f"{result.reused} partitions").lstrip("; ")
        restated = (_restated_partitions(self.store, task.old, result)
                    if task.old is not None and task.same_source else None)
        if restated:  # windows fetched before now hold other data: the provider changed history
            action = "restated"
            detail = f"the source now gives other data for {restated}"
            if task.reason == "extended":
                detail += f"; {task.detail}"
        return Change(task.ds.name, task.symbol, action, detail)

    def _new_entry(self, task: _Task, result: MaterializeResult) -> SymbolEntry:
        return SymbolEntry(
            dataset_fingerprint=result.fingerprint,
            coverage_bounds=(result.coverage.start, result.coverage.end),
            as_of=result.as_of, rows=result.rows, partitions=result.partitions,
            conformance_flags=result.flags, sla=result.sla.to_dict(),
            retention_class=task.ds.spec.retention_class,
            expires_at=_expires(self.loaded, task.ds, result.as_of),
        )


def report_dict(dataset: str, symbol: str, retention_class: str,
                result: MaterializeResult) -> dict[str, Any]:
    """The JSON materialize report of one request (``resolve --report``)."""
    return {
        "dataset": dataset, "symbol": symbol,
        "dataset_fingerprint": result.fingerprint, "as_of": iso(result.as_of),
        "coverage_bounds": result.coverage.to_json(), "rows": result.rows,
        "partitions": result.partitions, "fetched_partitions": result.fetched,
        "reused_partitions": result.reused, "completion": round(result.completion, 6),
        "conformance": result.report.to_dict(),
        "sla_deadline_ms": result.sla.deadline_ms, "sla_elapsed_ms": result.sla.elapsed_ms,
        "sla_violation": result.sla.violation, "attempts": result.attempts,
        "source_requests": result.source_requests, "retries": result.retries,
        "bytes_written": result.bytes_written, "checkpoint_key": result.checkpoint_key,
        "retention_class": retention_class,
    }


def failure_dict(dataset: str, symbol: str, error: QmtlLockError) -> dict[str, Any]:
    """The JSON report of a symbol that failed (``resolve --report`` on a failed resolve)."""
    from qmtl_engine import ConformanceError

    out: dict[str, Any] = {"dataset": dataset, "symbol": symbol, "outcome": "failed",
                           "error": type(error).__name__, "what": error.what,
                           "where": error.where, "fix": error.fix,
                           "exit_code": error.exit_code}
    if isinstance(error, ConformanceError):
        out["blocking"] = dict(sorted(error.blocking.items()))
        as_dict = getattr(error.report, "to_dict", None)  # the engine's report: with samples
        out["conformance"] = as_dict() if callable(as_dict) else {
            "counts": dict(sorted(error.report.counts.items()))}
    return out


def _restated_partitions(store: Any, old: SymbolEntry, result: MaterializeResult) -> str | None:
    """Name the partitions present in both the locked snapshot and the new one, with the same
    window but other content; None when there are none (or nothing to compare with)."""
    same_range = old.coverage_bounds == (result.coverage.start, result.coverage.end)
    if result.snapshot is None:
        return None
    if not store.has_snapshot(old.dataset_fingerprint):
        return "this range (the old snapshot is not in the store to compare partitions)" \
            if same_range and old.dataset_fingerprint != result.fingerprint else None
    before = {(p.start, p.end): p.digest
              for p in store.get_snapshot(old.dataset_fingerprint).partitions}
    new = result.snapshot  # names its partitions on the scheme the engine recorded in it
    changed = [new.partition_name(p) for p in new.partitions
               if (p.start, p.end) in before and before[(p.start, p.end)] != p.digest]
    return "partitions " + ", ".join(changed) if changed else None


def _frozen_tasks(loaded: LoadedManifest, old_lock: Lockfile) -> list[_Task]:
    tasks = []
    for name, entry in sorted(old_lock.datasets.items()):
        ds = loaded.datasets.get(name)
        if ds is None:
            raise InputError(f"--frozen: locked dataset {name!r} is not in seamless.yaml",
                             where=str(loaded.path),
                             fix="run `qmtl-lock resolve` to bring the lock up to date")
        for symbol, sym in sorted(entry.symbols.items()):
            tasks.append(_Task(ds, symbol, TimeRange(*sym.coverage_bounds), sym,
                               "unchanged", ""))
    return tasks
