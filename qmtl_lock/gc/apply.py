"""Carry a gc plan out under the store's gc lock: look at the leases and the registered pins once
more, then delete each file (or move it to an archive store under the same relative path) in the
plan's order, snapshots before the objects they name, each only if it is still the file the
listing saw, logging one line each; then remove the stale leases and give the gc lock back.

A lease taken while gc was planning, or pins registered meanwhile that name a snapshot the plan
deletes, stop it before it deletes anything. A file that changed since the listing is kept and
reported; when that file is a snapshot, no object goes either (which ones the changed snapshot
names is no longer known).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qmtl_engine import QmtlLockError, SystemClock

from qmtl_lock.gc.listing import unreadable_pin
from qmtl_lock.redact import redact_text

if TYPE_CHECKING:
    from qmtl_engine import GcLock, Store

    from qmtl_lock.gc.plan import GcAction, GcPlan

Log = Callable[[str], None]

_log = logging.getLogger("qmtl_lock.gc")


def describe(action: GcAction, *, archive: str | None, dry_run: bool) -> str:
    """The log line of one action."""
    if archive:
        verb = "would archive" if dry_run else "archived"
        dest = f"{redact_text(archive).rstrip('/')}/{action.path}"
        return f"{verb} {action.path} -> {dest}: {action.reason}"
    return f"{'would delete' if dry_run else 'deleted'} {action.path}: {action.reason}"


@dataclass
class GcResult:
    done: list[GcAction] = field(default_factory=list)
    gone: list[GcAction] = field(default_factory=list)  # already removed by someone else
    changed: list[str] = field(default_factory=list)  # kept: changed since the listing
    leases_removed: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(a.size for a in self.done)


def apply_gc(plan: GcPlan, store: Store, archive: str | None = None,
             log: Log = _log.info) -> GcResult:
    """Delete (or move to ``archive``, an fsspec URL, under the same relative paths) every file
    of ``plan`` in order, logging one line per action, then remove its stale leases; the gc
    lock is released at the end, whatever happens.

    Runs under the gc lock that :func:`~qmtl_lock.gc.prepare.prepare_gc` took on ``store``
    before listing it (one is taken now when none is held). Stops at the first failure, when
    the lock is lost, and before deleting anything when a live lease the plan did not respect
    is found (a resolve started while gc was planning) or when pins registered meanwhile name a
    snapshot the plan deletes.
    """
    lock = store.held_gc_lock or store.gc_lock("gc", timeout_ms=plan.lease_timeout_ms).acquire()
    try:
        return _apply_all(plan, store, archive, log, lock)
    finally:
        lock.release()


def _apply_all(plan: GcPlan, store: Store, archive: str | None, log: Log,
               lock: GcLock) -> GcResult:
    from qmtl_engine import Store

    if plan.actions:
        lock.ensure_held()
        _refuse_new_leases(plan, store)
        _refuse_new_pins(plan, store)
    target = Store(archive) if archive else None
    result = GcResult()
    snapshot_changed = False
    for action in plan.actions:
        if action.kind == "object" and snapshot_changed:
            result.changed.append(action.path)
            log(f"kept {action.path}: a snapshot gc was deleting changed since it was listed, "
                "so gc cannot tell which objects it names")
            continue
        lock.ensure_held()
        try:
            changed = _apply(action, store, target)
        except FileNotFoundError:
            result.gone.append(action)
            log(f"gone {action.path}: already removed")
            continue
        except OSError as exc:
            raise QmtlLockError(
                f"gc stopped at {action.path}: {exc}", where=redact_text(store.url),
                fix="fix the store's permissions or space and run `qmtl-lock gc` again; "
                "nothing any kept lock pins was touched") from None
        if changed:
            result.changed += changed
            snapshot_changed = snapshot_changed or action.kind == "snapshot"
            log(f"kept {', '.join(changed)}: changed since gc listed it (another writer)")
            continue
        result.done.append(action)
        log(describe(action, archive=archive, dry_run=False))
    for lease in plan.stale_leases:
        if store.remove_lease(lease):
            result.leases_removed.append(lease.path)
    return result


def _refuse_new_leases(plan: GcPlan, store: Store) -> None:
    respected = {lease.path for lease in plan.leases}
    wall = SystemClock().now_ms()
    live = [lease for lease in store.leases() if not lease.is_stale(wall, plan.lease_timeout_ms)]
    doomed = {path for action in plan.actions for path in action.files}
    for lease in live:  # a resolve that ran before gc began came to rely on what gc deletes
        relied = sorted(doomed & set(lease.protects))
        if relied:
            raise QmtlLockError(
                f"a running resolve came to rely on {relied[0]} while gc was planning "
                f"({lease.owner or 'an unreadable lease'}, {lease.path}); gc deleted nothing",
                where=redact_text(store.url),
                fix="run `qmtl-lock gc` again: it keeps what a running resolve relies on")
    new = [lease for lease in live if lease.path not in respected]
    if new:
        who = new[0].owner or "an unreadable lease"
        raise QmtlLockError(
            f"a resolve took a lease on the store while gc was planning ({who}, "
            f"{new[0].path}); gc deleted nothing", where=redact_text(store.url),
            fix="run `qmtl-lock gc` again: it keeps what a running resolve may need")


def _refuse_new_pins(plan: GcPlan, store: Store) -> None:
    """Pins read again right before deleting: none may name a snapshot the plan deletes."""
    deleting = {a.fingerprint for a in plan.actions if a.fingerprint is not None}
    for pin in store.pins():
        if pin.problem is not None:
            raise unreadable_pin(store, pin)
        named = sorted(deleting & set(pin.fingerprints))
        if named:
            raise QmtlLockError(
                f"{pin.label} registered pins while gc was planning ({pin.path} names "
                f"{len(named)} snapshot(s) gc was about to delete, first {named[0]}); gc "
                "deleted nothing", where=redact_text(store.url),
                fix="run `qmtl-lock gc` again: it keeps every registered pin")


def _apply(action: GcAction, store: Store, archive: Store | None) -> list[str]:
    """Carry one action out; the paths kept because they changed since the listing."""
    changed = []
    for path in action.files:
        if archive is not None:
            store.copy_to(path, archive)
        if not store.remove(path, unless_changed_from=action.as_listed(path)):
            changed.append(path)
    if action.is_folder:
        store.remove_folder(action.path, only_if_empty=True)
    return changed
