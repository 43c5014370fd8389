"""``repair``: put back in the store what ``verify`` finds corrupted or missing, as locked.

For each locked symbol with a problem, :func:`repair` moves the corrupted files aside (to
``<store>/quarantine/<UTC time>/``, never deleted), fetches again only the partitions whose objects
are then absent, and checks that the rebuilt snapshot has the locked fingerprint. When it has
another, the source now gives other data: nothing pinned is replaced and the lock is not touched;
the fix is ``qmtl-lock resolve --update DATASET``, then a review of the diff. A snapshot manifest
that is corrupted or missing is rebuilt from every partition, since nothing else records which
stored object holds which window (objects that are already there are not written again).

Why not ``resolve --frozen``: it only looks whether files exist, so a corrupted object under an
intact manifest passes as "up to date"; it stops at a corrupted manifest; it rebuilds every
locked dataset, not the ones asked for; and it stops at the first symbol that does not reproduce.
The rebuild here makes the engine calls resolve makes for a pinned entry (``Engine.plan`` with
the locked snapshot as the previous one, ``Engine.apply``, the fingerprint compared with the pin),
one symbol at a time, so each symbol gets its own outcome.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine import IntegrityError, MaterializationError, ObjectMissing, TimeRange, window_name

from qmtl_lock.errors import UpstreamChanged
from qmtl_lock.lockfile import DatasetEntry, Lockfile, SymbolEntry, read_lock
from qmtl_lock.manifest import DatasetRequest, LoadedManifest, load_manifest
from qmtl_lock.verify import Problem, VerifyResult, verify

if TYPE_CHECKING:
    from qmtl_engine import Clock, Engine, Request, Snapshot, Store

# What repair can put right: the store lost or damaged pinned data. A lock entry that contradicts
# its snapshot (lock-mismatch) is the lock's fault, and the store is fine.
REPAIRABLE = frozenset({"object-corrupted", "object-missing", "fingerprint-mismatch",
                        "snapshot-missing"})

Outcome = Literal["repaired", "would-repair", "source-changed", "failed", "not-repairable"]
Stored = tuple[Literal["object", "snapshot"], str]  # a stored file: its kind and its name


def repair_command(datasets: Iterable[str] = (), manifest: str | Path = "seamless.yaml") -> str:
    """The command line that repairs ``datasets`` (every locked one when none) of ``manifest``."""
    words = ["qmtl-lock", "repair"]
    if Path(manifest) != Path("seamless.yaml"):
        words += ["--manifest", str(manifest)]
    return shlex.join(words + sorted(set(datasets)))


@dataclass(frozen=True)
class RepairStep:
    """What repair will do for one locked symbol; :func:`plan_repair` makes these, no I/O."""

    dataset: str
    symbol: str
    fingerprint: str
    problems: tuple[Problem, ...]
    move: tuple[Stored, ...] = ()  # the corrupted files to set aside, in order
    refused: str | None = None  # why repair cannot put this symbol right
    fix: str | None = None  # what to do instead, when refused


@dataclass
class SymbolRepair:
    """What repair did (or, in a dry run, would do) for one locked symbol."""

    dataset: str
    symbol: str
    fingerprint: str
    problems: list[Problem]
    outcome: Outcome = "would-repair"
    quarantined: list[tuple[str, str | None]] = field(default_factory=list)  # (from, to)
    # Partitions fetched again, by name (to be fetched, in a dry run or when the fetch failed)
    fetched: list[str] = field(default_factory=list)
    partitions: int = 0  # partitions of the snapshot
    detail: str = ""
    fix: str | None = None
    error: str | None = None  # the error class, when one stopped the repair

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "symbol": self.symbol, "outcome": self.outcome,
                "dataset_fingerprint": self.fingerprint,
                "problems": [p.to_dict() for p in self.problems],
                "quarantined": [{"from": src, "to": dest} for src, dest in self.quarantined],
                "fetched": self.fetched, "partitions": self.partitions, "detail": self.detail,
                "fix": self.fix, "error": self.error}


@dataclass
class RepairResult:
    repairs: list[SymbolRepair]
    checked: int  # snapshots verify looked at
    dry_run: bool

    def count(self, *outcomes: Outcome) -> int:
        return sum(r.outcome in outcomes for r in self.repairs)


def plan_repair(found: VerifyResult, loaded: LoadedManifest, lock: Lockfile) -> list[RepairStep]:
    """One step per locked symbol that ``found`` has problems with, sorted. Reads nothing."""
    by_symbol: dict[tuple[str, str], list[Problem]] = {}
    for problem in found.problems:
        by_symbol.setdefault((problem.dataset, problem.symbol), []).append(problem)
    steps = []
    for (name, symbol), problems in sorted(by_symbol.items()):
        entry = lock.datasets[name]
        fingerprint = entry.symbols[symbol].dataset_fingerprint
        refused = _refusal(name, problems, loaded.datasets.get(name), entry)
        if refused:
            steps.append(RepairStep(name, symbol, fingerprint, tuple(problems),
                                    refused=refused[0], fix=refused[1]))
            continue
        move = dict.fromkeys((p.stored, p.digest) for p in problems if p.stored and p.digest)
        steps.append(RepairStep(name, symbol, fingerprint, tuple(problems), tuple(move)))
    return steps


def _refusal(name: str, problems: list[Problem], ds: DatasetRequest | None,
             entry: DatasetEntry) -> tuple[str, str] | None:
    """Why the pinned data of a symbol cannot be rebuilt here, and the fix; None if it can."""
    if any(p.kind == "lock-mismatch" for p in problems):
        return ("the lock entry does not describe its snapshot (was the lock edited by hand?); "
                "the stored data is fine", "restore seamless.lock from git, or run "
                "`qmtl-lock resolve` to pin the data again")
    odd = sorted({p.kind for p in problems} - REPAIRABLE)
    if odd:
        return f"repair does not know how to fix: {', '.join(odd)}", "run `qmtl-lock verify`"
    if ds is None:
        return ("the dataset is locked but no longer in seamless.yaml, so nothing says where to "
                "fetch it", f"restore dataset {name} in seamless.yaml, or run "
                "`qmtl-lock resolve` to take it out of the lock")
    changed = [k for k in ("preset", "contract_version") if ds.request_dict()[k] !=
               entry.request.get(k)]
    if ds.preset.digest() != entry.preset_digest:
        changed.append("preset definition")
    if changed:
        return (f"seamless.yaml changed since the lock was written ({', '.join(changed)}): "
                "rebuilding from it would not give the locked data",
                f"restore seamless.yaml from git, then run `{repair_command([name])}`; or pin "
                f"what seamless.yaml asks for now with `qmtl-lock resolve {name}`")
    return None


def repair(manifest_path: str | Path = "seamless.yaml", *, datasets: Collection[str] = (),
           dry_run: bool = False, clock: Clock | None = None) -> RepairResult:
    """Verify the store against the lock and put back what is corrupted or missing.

    Returns one :class:`SymbolRepair` per symbol that had a problem. A symbol that cannot be
    repaired does not stop the others: its outcome says why (``source-changed``: the source now
    gives other data; ``failed``: the source, conformance or an SLA failed; ``not-repairable``:
    the lock or seamless.yaml is at fault). Raises :class:`InputError` for bad input (an unknown
    dataset, an unreadable manifest or lock). The lock is never written.
    """
    from qmtl_lock.resolve import clock_from_env

    found = verify(manifest_path, datasets=datasets)
    loaded = load_manifest(manifest_path)
    lock = read_lock(loaded.lock_path)
    steps = plan_repair(found, loaded, lock)
    result = RepairResult([], found.checked, dry_run)
    if steps:
        repairer = _Repairer(loaded, clock or clock_from_env(), dry_run=dry_run)
        result.repairs = [repairer.run(step, lock.datasets[step.dataset].symbols[step.symbol])
                          for step in steps]
    return result


class _Repairer:
    """Applies repair steps on one store, through one engine, with one quarantine folder."""

    def __init__(self, loaded: LoadedManifest, clock: Clock, *, dry_run: bool) -> None:
        from qmtl_engine import Engine

        self.loaded = loaded
        self.store: Store = loaded.open_store()
        self.store.check_reachable()
        self.engine: Engine = Engine(self.store, mode="materialize", clock=clock)
        self.dry_run = dry_run
        self.at_ms = clock.now_ms()
        # Files set aside in this run (where they went; None in a dry run). A file two symbols
        # share is moved once: by the second symbol's turn it may already be rebuilt and good.
        self.moved: dict[Stored, str | None] = {}

    def run(self, step: RepairStep, entry: SymbolEntry) -> SymbolRepair:
        report = SymbolRepair(step.dataset, step.symbol, step.fingerprint, list(step.problems))
        if step.refused:
            report.outcome, report.detail, report.fix = "not-repairable", step.refused, step.fix
            return report
        for stored in step.move:
            self._set_aside(stored, report)
        try:
            self._rebuild(self._request(step, entry), report)
        except UpstreamChanged as exc:
            report.outcome, report.error = "source-changed", type(exc).__name__
            report.detail = (f"{exc.what}; the locked data was not replaced and seamless.lock "
                             "is unchanged")
            report.fix = exc.fix
        except MaterializationError as exc:
            report.outcome, report.error = "failed", type(exc).__name__
            report.detail = exc.what + (f" ({exc.where})" if exc.where else "")
            report.fix = exc.fix or f"run `{repair_command([step.dataset])}` again"
        return report

    def _request(self, step: RepairStep, entry: SymbolEntry) -> Request:
        """The request resolve made when it pinned the entry. Not ``follows_now``: a repair
        reproduces a pinned range, how far that lags behind now is ``resolve --update``'s
        business (and a lag budget must not refuse restoring the pin)."""
        ds = self.loaded.datasets[step.dataset]
        return ds.engine_request(step.symbol, TimeRange(*entry.coverage_bounds),
                                 follows_now=False)

    def _set_aside(self, stored: Stored, report: SymbolRepair) -> None:
        kind, name = stored
        src = self.store.display(self.store.object_path(name) if kind == "object"
                                 else self.store.snapshot_path(name))
        if stored not in self.moved:
            if self.dry_run:
                self.moved[stored] = None
            else:
                try:
                    self.moved[stored] = self.store.quarantine(name, kind=kind, at_ms=self.at_ms)
                except ObjectMissing:
                    return  # gone since verify looked: nothing to set aside, it is fetched again
        report.quarantined.append((src, self.moved[stored]))

    def _previous(self, fingerprint: str) -> Snapshot | None:
        """The locked snapshot to plan against, without what this run set aside; None when its
        manifest is not there (or, in a dry run, would be set aside)."""
        if ("snapshot", fingerprint) in self.moved and self.dry_run:
            return None
        if not self.store.has_snapshot(fingerprint):
            return None
        snap = self.store.get_snapshot(fingerprint)
        if not self.dry_run:
            return snap  # what was set aside is really gone: the plan sees it missing
        # Only plan() reads this copy, and it reads nothing but the partitions.
        return replace(snap, partitions=[p for p in snap.partitions
                                         if ("object", p.digest) not in self.moved])

    def _rebuild(self, request: Request, report: SymbolRepair) -> None:
        """Fetch what is missing and check the pin. A second round puts right an object that was
        already in the store, so not written again, but does not verify (possible only when the
        manifest was rebuilt: verify could not look at its objects before)."""
        previous = self._previous(report.fingerprint)
        why = "" if previous is not None else (
            " (its manifest was not there to say which stored object holds which partition, "
            "so every partition was fetched)")
        for _ in range(2):
            the_plan = self.engine.plan(request, previous=previous)
            report.partitions = len(the_plan.partitions)
            for step in the_plan.to_fetch:
                name = window_name(step.window, request.preset.partition)
                if name not in report.fetched:  # a second round fetches some again
                    report.fetched.append(name)
            if self.dry_run:
                report.outcome = "would-repair"
                report.detail = f"would rebuild {report.fingerprint}{why}"
                return
            result = self.engine.apply(the_plan)
            if result.fingerprint != report.fingerprint:
                raise UpstreamChanged(dataset=report.dataset, symbol=report.symbol,
                                      expected=report.fingerprint, actual=result.fingerprint)
            previous = result.snapshot or self.store.get_snapshot(report.fingerprint)
            fetched = {(p.window.start, p.window.end) for p in the_plan.to_fetch}
            bad = self._unverified(previous, fetched, report)
            if not bad:
                report.outcome = "repaired"
                report.detail = (f"rebuilt {report.fingerprint}, the fingerprint the lock "
                                 f"pins{why}")
                return
            for digest in bad:
                self.moved.pop(("object", digest), None)  # set aside again, if it was before
                self._set_aside(("object", digest), report)
        report.outcome, report.error = "failed", "ObjectCorrupted"
        report.detail = ("objects fetched again still do not verify: the store does not keep "
                         "what is written to it")
        report.fix = "check the store's disk or bucket, then run `qmtl-lock verify`"

    def _unverified(self, snapshot: Snapshot, fetched: set[tuple[int, int]],
                    report: SymbolRepair) -> list[str]:
        """Digests of the fetched partitions whose stored object does not verify."""
        from qmtl_engine import check_partition

        bad = []
        for part in snapshot.partitions:
            if (part.start, part.end) not in fetched:
                continue
            try:
                check_partition(self.store, snapshot, part, dataset=report.dataset,
                                symbol=report.symbol)
            except IntegrityError:
                bad.append(part.digest)
        return bad


__all__ = ["REPAIRABLE", "RepairResult", "RepairStep", "SymbolRepair", "plan_repair", "repair",
           "repair_command"]
