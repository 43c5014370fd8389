"""Carry a gc plan out: delete each file, or move it to an archive store under the same relative
path, in the plan's order (snapshots before the objects they name), logging one line each; then
remove the stale leases. A lease taken while gc was planning stops it before it deletes anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qmtl_engine import QmtlLockError, SystemClock

from qmtl_lock.redact import redact_text

if TYPE_CHECKING:
    from qmtl_engine import Store

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
    leases_removed: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(a.size for a in self.done)


def apply_gc(plan: GcPlan, store: Store, archive: str | None = None,
             log: Log = _log.info) -> GcResult:
    """Delete (or move to ``archive``, an fsspec URL, under the same relative paths) every file
    of ``plan`` in order, logging one line per action, then remove its stale leases. Stops at
    the first failure, and before deleting anything when a live lease the plan did not respect
    is found (a resolve started while gc was planning)."""
    from qmtl_engine import Store

    if plan.actions:
        _refuse_new_leases(plan, store)
    target = Store(archive) if archive else None
    result = GcResult()
    for action in plan.actions:
        try:
            _apply(action, store, target)
        except FileNotFoundError:
            result.gone.append(action)
            log(f"gone {action.path}: already removed")
            continue
        except OSError as exc:
            raise QmtlLockError(
                f"gc stopped at {action.path}: {exc}", where=redact_text(store.url),
                fix="fix the store's permissions or space and run `qmtl-lock gc` again; "
                "nothing any kept lock pins was touched") from None
        result.done.append(action)
        log(describe(action, archive=archive, dry_run=False))
    for lease in plan.stale_leases:
        if store.remove_lease(lease):
            result.leases_removed.append(lease.path)
    return result


def _refuse_new_leases(plan: GcPlan, store: Store) -> None:
    respected = {lease.path for lease in plan.leases}
    wall = SystemClock().now_ms()
    new = [lease for lease in store.leases() if lease.path not in respected
           and not lease.is_stale(wall, plan.lease_timeout_ms)]
    if new:
        who = new[0].owner or "an unreadable lease"
        raise QmtlLockError(
            f"a resolve took a lease on the store while gc was planning ({who}, "
            f"{new[0].path}); gc deleted nothing", where=redact_text(store.url),
            fix="run `qmtl-lock gc` again: it keeps what a running resolve may need")


def _apply(action: GcAction, store: Store, archive: Store | None) -> None:
    for path in action.files:
        if archive is not None:
            store.copy_to(path, archive)
        store.remove(path)
    if action.is_folder:
        store.remove_folder(action.path)
