"""Decide what gc removes, without any I/O: :func:`plan_gc` turns a
:class:`~qmtl_lock.gc.listing.StoreListing`, the :class:`~qmtl_lock.gc.keep.KeptLock` pins and
the :class:`~qmtl_lock.gc.keep.Retention` per snapshot into a :class:`GcPlan`. The rules are in
the :mod:`qmtl_lock.gc` docstring.

Two inputs make it delete less: the leases in the listing (a live one means a resolve is running:
its jobs, and whatever was written since the oldest live lease began, stay), and a history of
``None`` (no git history to tell what earlier locks pinned: nothing is deleted at all)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine import DAY_MS, LEASE_TIMEOUT_MS, iso

if TYPE_CHECKING:
    from qmtl_engine import StoredFile, StoredJob, StoredLease

    from qmtl_lock.gc.keep import KeptLock, Retention
    from qmtl_lock.gc.listing import StoredSnapshot, StoreListing

GcKind = Literal["snapshot", "object", "job", "temporary"]

# File times come from the store's clock, a lease's start from its holder's (and Linux stamps
# files from a coarse clock): files written up to a minute before a live lease began count as
# written after it.
LEASE_CLOCK_SLACK_MS = 60_000


@dataclass(frozen=True)
class GcAction:
    """One file (or a job's staged folder) to delete or archive, and why."""

    kind: GcKind
    path: str  # relative to the store root
    reason: str
    size: int
    files: tuple[str, ...]  # what to move or delete: ``(path,)``, or a folder's files
    listed: tuple[StoredFile, ...] = ()  # those files as listed: each is deleted only unchanged
    fingerprint: str | None = None  # of a snapshot

    @property
    def is_folder(self) -> bool:
        return self.files != (self.path,)

    def as_listed(self, path: str) -> StoredFile | None:
        """The listing's view of one of :attr:`files` (None: delete it unconditionally)."""
        return next((f for f in self.listed if f.path == path), None)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "reason": self.reason, "bytes": self.size}


@dataclass(frozen=True)
class GcKept:
    kind: GcKind
    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class GcPinned:
    """A project's registered pins (``pins/<project>/<ref>.json``), and what they kept."""

    label: str  # project <name>@<ref>
    path: str  # the pin file, relative to the store root
    snapshots: int  # pinned snapshots in the store: kept
    missing: int  # pinned snapshots not in the store

    def line(self) -> str:
        gone = f"; {self.missing} it pins are not in the store" if self.missing else ""
        return f"kept {_n(self.snapshots, 'snapshot')} pinned by {self.label} ({self.path}){gone}"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "path": self.path, "kept_snapshots": self.snapshots,
                "missing_snapshots": self.missing}


@dataclass(frozen=True)
class GcPlan:
    actions: tuple[GcAction, ...]  # in the order they must run: snapshots, objects, jobs, temps
    kept: tuple[GcKept, ...]  # every kept snapshot and job, and unreferenced objects kept young
    kept_objects: int
    kept_locks: tuple[str, ...]
    warnings: tuple[str, ...]
    now_ms: int
    grace_ms: int
    leases: tuple[StoredLease, ...] = ()  # live: respected
    stale_leases: tuple[StoredLease, ...] = ()  # their holders died: removed after the actions
    wall_ms: int = 0  # the real time the leases were judged at
    lease_timeout_ms: int = LEASE_TIMEOUT_MS
    pinned: tuple[GcPinned, ...] = ()  # other projects' (and this one's) registered pins

    def paths(self, kind: GcKind | None = None) -> list[str]:
        return [a.path for a in self.actions if kind is None or a.kind == kind]

    @property
    def size(self) -> int:
        return sum(a.size for a in self.actions)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("snapshot", "object", "job", "temporary")}
        for a in self.actions:
            out[a.kind] += 1
        return out

    def summary(self, *, dry_run: bool, archive: str | None) -> str:
        c = self.counts()
        verb = ("would archive" if dry_run else "archived") if archive else (
            "would delete" if dry_run else "deleted")
        done = (f"{verb} {_n(c['snapshot'], 'snapshot')}, {_n(c['object'], 'object')}, "
                f"{_n(c['job'] + c['temporary'], 'stale job file')} ({_bytes(self.size)})")
        kept_snaps = sum(1 for k in self.kept if k.kind == "snapshot")
        return (f"{done}; kept {_n(kept_snaps, 'snapshot')} and "
                f"{_n(self.kept_objects, 'object')}" + ("; dry run: nothing changed"
                                                       if dry_run else ""))

    def respected_lines(self) -> list[str]:
        """One line per live lease: whose it is, how old, and what gc keeps for it."""
        since = iso(self.lease_floor_ms) if self.lease_floor_ms is not None else "ever"
        return [f"respecting the lease {lease.path} of {_holder(lease)}, "
                f"{_held(lease, self.wall_ms)}: keeping every job, and anything written since "
                f"{since}" for lease in self.leases]

    def stale_line(self, lease: StoredLease, verb: str) -> str:
        """``<verb> stale lease …``: a lease whose holder stopped refreshing it."""
        return (f"{verb} stale lease {lease.path} of {_holder(lease)}, "
                f"{_held(lease, self.wall_ms)} (stale after {_age(self.lease_timeout_ms)})")

    @property
    def lease_floor_ms(self) -> int | None:
        """Files written since then are kept: when the oldest live lease began, less
        :data:`LEASE_CLOCK_SLACK_MS` (None: ever)."""
        return _floor(self.leases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": iso(self.now_ms), "grace_days": round(self.grace_ms / DAY_MS, 6),
            "kept_locks": list(self.kept_locks),
            "pins": [x.to_dict() for x in self.pinned],
            "leases": {"respected": [_lease_dict(x, self.wall_ms) for x in self.leases],
                       "stale": [_lease_dict(x, self.wall_ms) for x in self.stale_leases]},
            "delete": [a.to_dict() for a in self.actions],
            "kept": [k.to_dict() for k in self.kept],
            "counts": {"delete": self.counts(), "bytes": self.size,
                       "kept_snapshots": sum(1 for k in self.kept if k.kind == "snapshot"),
                       "kept_objects": self.kept_objects},
            "warnings": list(self.warnings),
        }


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _holder(lease: StoredLease) -> str:
    if lease.owner is None:
        return "an unreadable lease file (torn, or written by a newer qmtl-lock)"
    return f"{lease.owner} (pid {lease.pid} on {lease.host})"


def _age(ms: int) -> str:
    seconds = max(ms, 0) / 1000
    for unit, size in (("day", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}{'s' if unit == 'day' else ''}"
    return f"{seconds:.0f} s"


def _held(lease: StoredLease, wall_ms: int) -> str:
    started = (f"started {_age(wall_ms - lease.started_ms)} ago"
               if lease.started_ms is not None else "started at an unknown time")
    beat = (f"last heartbeat {_age(wall_ms - lease.heartbeat_ms)} ago"
            if lease.heartbeat_ms is not None else "no heartbeat time")
    return f"{started}, {beat}"


def _lease_dict(lease: StoredLease, wall_ms: int) -> dict[str, Any]:
    return {"path": lease.path, "owner": lease.owner, "pid": lease.pid, "host": lease.host,
            "started": iso(lease.started_ms) if lease.started_ms is not None else None,
            "heartbeat": iso(lease.heartbeat_ms) if lease.heartbeat_ms is not None else None,
            "age_s": (wall_ms - lease.started_ms) // 1000 if lease.started_ms is not None
            else None}


def _floor(live: Sequence[StoredLease]) -> int | None:
    """When the oldest of ``live`` began, less :data:`LEASE_CLOCK_SLACK_MS`; None when there is
    none, or one began at an unknown time (then everything counts as written since)."""
    starts = [lease.started_ms for lease in live]
    if not starts or None in starts:
        return None
    return min(t for t in starts if t is not None) - LEASE_CLOCK_SLACK_MS


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


# -- the planner -----------------------------------------------------------------------------
@dataclass
class _Draft:
    """The plan as it is being decided."""

    now_ms: int
    grace_ms: int
    actions: list[GcAction] = field(default_factory=list)
    kept: list[GcKept] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kept_snapshots: list[StoredSnapshot] = field(default_factory=list)
    dropped_objects: set[str] = field(default_factory=set)  # named by a snapshot this gc removes
    kept_objects: int = 0
    live: tuple[StoredLease, ...] = ()  # live leases: a resolve is running

    def relied_on(self, path: str) -> str | None:
        """Why ``path`` stays because a running writer named it in its lease, or None."""
        for lease in self.live:
            if path in lease.protects:
                return (f"a running resolve relies on it ({_holder(lease)}, lease "
                        f"{lease.path})")
        return None

    def too_young(self, mtime: int | None) -> str | None:
        """Why a file written at ``mtime`` is kept whatever else holds, or None."""
        if mtime is None:
            return "written at a time the filesystem does not report"
        if self.now_ms - mtime < self.grace_ms:
            return f"written {iso(mtime)}, within the {self.grace_ms / DAY_MS:g}-day grace period"
        floor = _floor(self.live)
        if self.live and (floor is None or mtime >= floor):
            oldest = min(self.live, key=lambda x: x.started_ms or 0)
            return (f"written {iso(mtime)}, after the lease of {_holder(oldest)} began: that "
                    "resolve may need it")
        return None


def plan_gc(listing: StoreListing, kept_locks: Sequence[KeptLock],
            history: Mapping[str, Retention] | None, *, now_ms: int, grace_ms: int,
            wall_ms: int | None = None, lease_timeout_ms: int = LEASE_TIMEOUT_MS) -> GcPlan:
    """Decide what to delete; see the :mod:`qmtl_lock.gc` docstring for the rules. Pure: no I/O.

    ``history`` None means there is no git history to read: the plan then deletes nothing and
    says so. ``wall_ms`` is the real time the listing's leases are judged at (it defaults to
    ``now_ms``, which may be pinned for reproducible runs; leases age in real time). The actions
    come in the order they must run: snapshots, objects, jobs, temporaries.
    """
    wall = now_ms if wall_ms is None else wall_ms
    live = tuple(x for x in listing.leases if not x.is_stale(wall, lease_timeout_ms))
    draft = _Draft(now_ms, grace_ms, live=live)
    pinned: dict[str, str] = {}
    for lock in kept_locks:
        for fp, who in lock.pins.items():
            pinned.setdefault(fp, f"{lock.label} ({', '.join(who)})")
    for fp, snap in sorted(listing.snapshots.items()):
        _plan_snapshot(draft, fp, snap,
                       *_snapshot_verdict(draft, fp, snap, pinned, history or {}))
    missing = sorted(set(pinned) - set(listing.snapshots))
    if missing:
        draft.warnings.append(f"{_n(len(missing), 'snapshot')} pinned by the kept locks "
                              "not in the store (nothing to keep; `qmtl-lock resolve --frozen` "
                              "rebuilds the current lock's)")
    _plan_objects(draft, listing.objects)
    for job in sorted(listing.jobs, key=lambda j: j.key):
        _plan_job(draft, job)
    for f in sorted(listing.temporaries, key=lambda t: t.path):
        if draft.too_young(f.mtime_ms) is None:
            draft.actions.append(GcAction("temporary", f.path, "leftover of an interrupted "
                                          f"write, written {iso(f.mtime_ms or 0)}", f.size,
                                          (f.path,), (f,)))
    if history is None:
        _hold_everything(draft)
    registered = tuple(GcPinned(k.label, k.registered,
                                sum(fp in listing.snapshots for fp in k.pins),
                                sum(fp not in listing.snapshots for fp in k.pins))
                       for k in kept_locks if k.registered is not None)
    return GcPlan(tuple(draft.actions), tuple(draft.kept), draft.kept_objects,
                  tuple(k.label for k in kept_locks), tuple(draft.warnings), now_ms, grace_ms,
                  leases=live, stale_leases=tuple(x for x in listing.leases if x not in live),
                  wall_ms=wall, lease_timeout_ms=lease_timeout_ms, pinned=registered)


def _hold_everything(draft: _Draft) -> None:
    """Without git history gc cannot tell what earlier locks pinned: keep what it would delete."""
    held = draft.actions
    draft.actions = []
    for a in held:
        draft.kept.append(GcKept(a.kind, a.path, f"{a.reason}, but kept: no git history to tell "
                                 "what earlier locks pinned"))
    draft.kept_objects += sum(1 for a in held if a.kind == "object")
    if held:
        draft.warnings.append(
            "there is no git history to tell what earlier locks pinned, so gc deletes nothing "
            f"({_n(len(held), 'item')}, {_bytes(sum(a.size for a in held))}, would go "
            "otherwise); `qmtl-lock gc --no-git` keeps only what the working-tree lock pins and "
            "deletes the rest")


def _snapshot_verdict(draft: _Draft, fp: str, snap: StoredSnapshot, pinned: Mapping[str, str],
                      history: Mapping[str, Retention]) -> tuple[bool, str]:
    """Whether to keep one snapshot, and why (or why it goes)."""
    if fp in pinned:
        return True, f"pinned by {pinned[fp]}"
    relied = draft.relied_on(snap.file.path)
    if relied:
        return True, relied
    r = history.get(fp)
    if r is not None and r.unreadable_in:
        return True, (f"named by the unreadable seamless.lock at {r.unreadable_in}: its expiry "
                      "is unknown")
    if r is not None and r.expires_at is not None and r.expires_at > draft.now_ms:
        return True, (f"unreferenced, but retained until {iso(r.expires_at)} "
                      f"({r.retention_class})")
    if r is None:
        why = "unreferenced, named by no lock in the git history"
    elif r.expires_at is not None:
        why = f"unreferenced, expired {iso(r.expires_at)} ({r.retention_class})"
    else:
        why = (f"unreferenced, and retention class {r.retention_class} keeps data only while "
               "a kept lock pins it")
    too_young = draft.too_young(snap.file.mtime_ms)
    return (True, f"{why}, but {too_young}") if too_young else (False, why)


def _plan_snapshot(draft: _Draft, fp: str, snap: StoredSnapshot, keep: bool, why: str) -> None:
    path = snap.file.path
    if keep:
        draft.kept.append(GcKept("snapshot", path, why))
        draft.kept_snapshots.append(snap)
    else:
        draft.actions.append(GcAction("snapshot", path, why, snap.file.size, (path,),
                                      (snap.file,), fingerprint=fp))
        draft.dropped_objects.update(snap.objects or ())


def _plan_objects(draft: _Draft, objects: Mapping[str, StoredFile]) -> None:
    """Objects no kept snapshot names go, unless young; none goes if a kept snapshot is
    unreadable, since then nobody can tell which objects it needs."""
    unreadable = [s.file.path for s in draft.kept_snapshots if s.objects is None]
    if unreadable:
        draft.warnings.append(f"kept snapshot {unreadable[0]} cannot be read, so gc cannot tell "
                              "which objects it needs and deletes no object (`qmtl-lock verify` "
                              "names the damage)")
        draft.kept_objects = len(objects)
        return
    needed = {d for s in draft.kept_snapshots for d in (s.objects or ())}
    for digest, f in sorted(objects.items()):
        if digest in needed:
            draft.kept_objects += 1
            continue
        why = ("named only by snapshots this gc removes" if digest in draft.dropped_objects
               else "named by no kept snapshot")
        too_young = draft.relied_on(f.path) or draft.too_young(f.mtime_ms)
        if too_young:
            draft.kept_objects += 1
            draft.kept.append(GcKept("object", f.path, f"{why}, but {too_young}"))
            continue
        draft.actions.append(GcAction("object", f.path, why, f.size, (f.path,), (f,)))


def _plan_job(draft: _Draft, job: StoredJob) -> None:
    if draft.live:
        draft.kept.append(GcKept("job", job.name, f"a resolve holds a lease "
                                 f"({_holder(draft.live[0])}): it may be resuming this job"))
        return
    too_young = draft.too_young(job.mtime_ms)
    if too_young:
        draft.kept.append(GcKept("job", job.name,
                                 f"checkpoint {too_young}: a resolve may be running"))
        return
    last = iso(job.mtime_ms) if job.mtime_ms is not None else "?"
    if job.checkpoint is not None:
        draft.actions.append(GcAction("job", job.checkpoint.path,
                                      f"stale resume checkpoint, last written {last}",
                                      job.checkpoint.size, (job.checkpoint.path,),
                                      (job.checkpoint,)))
    if job.staged:
        draft.actions.append(GcAction("job", job.staged_folder,
                                      f"staged objects of a stale job, last written {last}",
                                      sum(f.size for f in job.staged),
                                      tuple(f.path for f in job.staged), job.staged))
    if job.windows:
        draft.actions.append(GcAction("job", job.windows_folder,
                                      f"checkpoints of a stale job, last written {last}",
                                      sum(f.size for f in job.windows),
                                      tuple(f.path for f in job.windows), job.windows))
