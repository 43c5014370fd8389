"""``resolve``: materialize what seamless.yaml asks for and write seamless.lock.

An entry whose request and preset are unchanged keeps its pin (``end: now`` included) and, when its
snapshot is in the store, costs no data read at all. Anything else is planned, materialized through
the engine and re-pinned. The lock is written last and atomically, only if its bytes change.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine.clock import Clock, SystemClock
from qmtl_engine.errors import InputError
from qmtl_engine.presets import OnViolation
from qmtl_engine.ranges import DAY_MS, TimeRange, iso, to_ms

from qmtl_lock.errors import LockOutOfDate, UpstreamChanged
from qmtl_lock.lockfile import (
    DatasetEntry,
    Lockfile,
    SymbolEntry,
    read_lock,
    render,
    write_lock,
)
from qmtl_lock.manifest import DATA_KEYS, DatasetRequest, LoadedManifest, load_manifest

if TYPE_CHECKING:
    from qmtl_engine.materialize import MaterializeResult
    from qmtl_engine.metrics import RunMetrics

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
    from qmtl_engine.presets import coverage_end

    kept: dict[str, dict[str, SymbolEntry]] = {}
    tasks: list[_Task] = []
    changes: list[Change] = []
    for name, ds in sorted(loaded.datasets.items()):
        old_ds = old_lock.datasets.get(name) if old_lock else None
        kept[name] = {}
        in_scope = not selected or name in selected
        why = _same_request(ds, old_ds) if old_ds else ["new dataset"]
        pinned_ends = [e.coverage_bounds[1] for e in (old_ds.symbols.values() if old_ds else [])]
        for symbol in sorted(ds.spec.symbols):
            old = old_ds.symbols.get(symbol) if old_ds else None
            moving = update and in_scope
            if old is not None and not why and not ((update or refresh) and in_scope):
                kept[name][symbol] = _with_retention(loaded, ds, old)
                tasks.append(_Task(ds, symbol, TimeRange(*old.coverage_bounds), old,
                                   "unchanged", ""))
                continue
            if not in_scope and old is not None:
                kept[name][symbol] = old  # not asked to touch it: stays as locked, even if stale
                continue
            # A fixed end still in the future pins what is final so far, as `end: now` does:
            # the change says so, and `--update` extends it up to that end.
            asked = None if ds.end_is_now else ds.end_ms()
            end = coverage_end(ds.preset, now_ms)
            if asked is not None and asked <= end:
                end = asked
            elif not moving and pinned_ends and not why:
                end = max(pinned_ends)  # a new symbol joins the dataset's pinned end
            if end <= ds.start_ms:
                raise InputError(
                    f"dataset {name!r}: nothing to resolve, start {iso(ds.start_ms)} is not "
                    f"before the last closed bar {iso(end)}",
                    where=str(loaded.path), fix="move start earlier")
            coverage = TimeRange(ds.start_ms, end)
            if old is None:
                reason: Action = "added"
                detail = "new symbol" if old_ds else "new dataset"
            elif why:
                reason, detail = "updated", "changed " + ", ".join(why)
            elif old.coverage_bounds[1] < coverage.end and old.coverage_bounds[0] == coverage.start:
                reason, detail = "extended", f"coverage end {iso(old.coverage_bounds[1])} -> " \
                    f"{iso(coverage.end)}"
            else:
                reason, detail = "updated", "--refresh" if refresh else "--update"
            if asked is not None and coverage.end < asked:
                detail += (f"; incomplete until {iso(asked)}: only bars before "
                           f"{iso(coverage.end)} are final yet, `qmtl-lock resolve --update` "
                           "extends it later")
            # Reused partitions carry the flags they were checked with: a change of preset,
            # contract or accepted gaps means checking again.
            same_source = not {"preset", "contract_version", "preset definition"} & set(why)
            reusable = not refresh and same_source and "accepted_gaps" not in why
            tasks.append(_Task(ds, symbol, coverage, old, reason, detail, reusable, same_source))
    if old_lock:
        for name in sorted(set(old_lock.datasets) - set(loaded.datasets)):
            changes.append(Change(name, None, "removed", "no longer in seamless.yaml"))
    return kept, tasks, changes


def resolve(
    manifest_path: str | Path = "seamless.yaml",
    *,
    datasets: Collection[str] = (),
    update: bool = False,
    refresh: bool = False,
    locked: bool = False,
    frozen: bool = False,
    dry_run: bool = False,
    jobs: int = 1,
    clock: Clock | None = None,
    progress: ProgressFactory | None = None,
    metrics: RunMetrics | None = None,
) -> ResolveResult:
    """Resolve the manifest into its lock; see the module docstring.

    ``locked`` fails with :class:`LockOutOfDate` if the lock would change; ``frozen`` takes the
    lock as it is and only materializes what it pins into the store. Raises the engine's
    materialization errors (exit 3) and :class:`UpstreamChanged` when a pinned fingerprint no
    longer reproduces; in every failure the previous lock is left untouched.
    """
    from qmtl_engine.store import Store

    clock = clock or clock_from_env()
    loaded = load_manifest(manifest_path)
    unknown = sorted(set(datasets) - set(loaded.datasets))
    if unknown:
        raise InputError(f"unknown dataset {unknown[0]!r}", where=str(loaded.path),
                         fix=f"choose from: {', '.join(sorted(loaded.datasets)) or '(none)'}")
    lock_path = loaded.lock_path
    old_lock = read_lock(lock_path) if lock_path.exists() else None
    if frozen and old_lock is None:
        raise InputError("--frozen needs an existing seamless.lock", where=str(lock_path),
                         fix="run `qmtl-lock resolve` first")
    if locked:  # refuse before fetching anything when the manifest already disagrees
        from qmtl_lock.check import compare

        drift = [d.line() for d in compare(loaded, old_lock)] if old_lock else [
            "seamless.lock does not exist"]
        if drift:
            raise LockOutOfDate(drift)
    if frozen:  # the lock as it is: rebuild what it pins, plan nothing new
        assert old_lock is not None
        tasks = _frozen_tasks(loaded, old_lock)
        kept = {n: dict(d.symbols) for n, d in old_lock.datasets.items()}
        changes: list[Change] = []
    else:
        kept, tasks, changes = _plan_tasks(loaded, old_lock, set(datasets), update,
                                           clock.now_ms(), refresh=refresh)
    pinning = {id(t.ds): t.ds for t in tasks if t.reason != "unchanged"}
    if pinning:  # before anything is fetched: one file served as every symbol is bad input
        from qmtl_engine.materialize import check_symbols

        for ds in pinning.values():
            check_symbols(ds.preset, ds.spec.symbols, dataset=ds.name)
    store = Store(loaded.store_url)
    engines: list[Any] = []  # the engine (and pyarrow) load only when there is work
    engine_lock = threading.Lock()
    reports: list[dict[str, Any]] = []

    def get_engine() -> Any:
        with engine_lock:
            if not engines:
                from qmtl_engine.materialize import Engine

                engines.append(Engine(store, mode="materialize", clock=clock))
            return engines[0]

    def work(task: _Task) -> Change:
        name, symbol = task.ds.name, task.symbol
        previous = None
        if task.old is not None and store.has_snapshot(task.old.dataset_fingerprint):
            if task.reason == "unchanged" and not frozen:
                return Change(name, symbol, "unchanged")
            previous = store.get_snapshot(task.old.dataset_fingerprint)
            if task.reason == "unchanged" and all(store.has_object(p.digest)
                                                  for p in previous.partitions):
                return Change(name, symbol, "unchanged")  # --frozen: every object is there
            if not task.reusable:
                previous = None
        from qmtl_engine.materialize import Request

        engine = get_engine()
        request = Request(task.ds.preset, symbol, task.coverage, task.ds.spec.contract_version,
                          dataset=name, accepted_gaps=task.ds.accepted_ranges(),
                          follows_now=task.ds.end_is_now)
        the_plan = engine.plan(request, previous=previous)
        if dry_run:
            fetch = len(the_plan.to_fetch)
            detail = task.detail or "snapshot missing from the store"
            return Change(name, symbol, "restored" if task.reason == "unchanged" else task.reason,
                          f"{detail}; would fetch {fetch} of {len(the_plan.partitions)} "
                          "partitions", the_plan.describe())
        tick = progress(f"{name}/{symbol}") if progress else None
        result = engine.apply(the_plan, progress=(lambda r, d, t: tick(d, t)) if tick else None)
        if metrics is not None:
            metrics.observe(request, result)
        reports.append(report_dict(name, symbol, task.ds.spec.retention_class, result))
        if task.reason == "unchanged" or frozen:
            assert task.old is not None
            if result.fingerprint != task.old.dataset_fingerprint:
                raise UpstreamChanged(dataset=name, symbol=symbol,
                                      expected=task.old.dataset_fingerprint,
                                      actual=result.fingerprint)
            return Change(name, symbol, "restored", "snapshot rebuilt in the store")
        held = task.ds.preset.sla.on_violation is OnViolation.HOLD and result.sla.violation
        if held and task.old is not None:  # `hold`: keep the last good pin, say why
            kept[name][symbol] = task.old
            return Change(name, symbol, "held", f"kept the locked data: {result.sla.violation}")
        if task.old is not None and result.fingerprint == task.old.dataset_fingerprint:
            entry = _with_retention(loaded, task.ds, task.old)
            if dict(entry.conformance_flags) != result.flags:  # e.g. newly accepted gaps
                entry = replace(entry, conformance_flags=result.flags)
            kept[name][symbol] = entry
            return Change(name, symbol, "unchanged", "same content")
        action, detail = task.reason, (f"{task.detail}; fetched {result.fetched}, reused "
                                       f"{result.reused} partitions").lstrip("; ")
        restated = (_restated_partitions(store, task.old, result)
                    if task.old is not None and task.same_source else None)
        if restated:  # windows fetched before now hold other data: the provider changed history
            action = "restated"
            detail = f"the source now gives other data for {restated}"
            if task.reason == "extended":
                detail += f"; {task.detail}"
        kept[name][symbol] = SymbolEntry(
            dataset_fingerprint=result.fingerprint,
            coverage_bounds=(result.coverage.start, result.coverage.end),
            as_of=result.as_of, rows=result.rows, partitions=result.partitions,
            conformance_flags=result.flags, sla=result.sla.to_dict(),
            retention_class=task.ds.spec.retention_class,
            expires_at=_expires(loaded, task.ds, result.as_of),
        )
        return Change(name, symbol, action, detail)

    ordered = sorted(tasks, key=lambda t: (t.ds.spec.priority == "low", t.ds.name, t.symbol))
    if jobs > 1 and len(ordered) > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            changes += list(pool.map(work, ordered))
    else:
        changes += [work(t) for t in ordered]
    changes.sort(key=lambda c: (c.dataset, c.symbol or ""))

    if frozen:
        assert old_lock is not None
        return ResolveResult(changes, old_lock, False, dry_run, lock_path, reports)
    entries: dict[str, DatasetEntry] = {}
    for name, ds in sorted(loaded.datasets.items()):
        if datasets and name not in datasets and old_lock and name in old_lock.datasets:
            entries[name] = old_lock.datasets[name]  # not selected: left exactly as locked
        else:
            entries[name] = DatasetEntry(ds.request_dict(), ds.preset.digest(), kept[name])
    new_lock = Lockfile(datasets=entries)
    if locked and (old_lock is None or render(old_lock) != render(new_lock)):
        raise LockOutOfDate([c.line() for c in changes if c.action != "unchanged"]
                            or ["the lock's text differs from what resolve would write"])
    wrote = False if dry_run else write_lock(lock_path, new_lock)
    return ResolveResult(changes, new_lock, wrote, dry_run, lock_path,
                         sorted(reports, key=lambda r: (r["dataset"], r["symbol"])))


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


def _restated_partitions(store: Any, old: SymbolEntry, result: MaterializeResult) -> str | None:
    """Name the partitions present in both the locked snapshot and the new one, with the same
    window but other content; None when there are none (or nothing to compare with)."""
    from qmtl_engine.ranges import TimeRange, window_name

    same_range = old.coverage_bounds == (result.coverage.start, result.coverage.end)
    if result.snapshot is None:
        return None
    if not store.has_snapshot(old.dataset_fingerprint):
        return "this range (the old snapshot is not in the store to compare partitions)" \
            if same_range and old.dataset_fingerprint != result.fingerprint else None
    before = {(p.start, p.end): p.digest
              for p in store.get_snapshot(old.dataset_fingerprint).partitions}
    scheme = _scheme(result)
    changed = [window_name(TimeRange(p.start, p.end), scheme)
               for p in result.snapshot.partitions
               if (p.start, p.end) in before and before[(p.start, p.end)] != p.digest]
    return "partitions " + ", ".join(changed) if changed else None


def _scheme(result: MaterializeResult) -> Any:
    from qmtl_engine.materialize import _scheme_guess

    assert result.snapshot is not None
    return _scheme_guess(result.snapshot)


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
