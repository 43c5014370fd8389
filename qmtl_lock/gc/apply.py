"""Carry a gc plan out: delete each file, or move it to an archive store under the same relative
path, in the plan's order (snapshots before the objects they name), logging one line each."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qmtl_engine import QmtlLockError

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

    @property
    def size(self) -> int:
        return sum(a.size for a in self.done)


def apply_gc(plan: GcPlan, store: Store, archive: str | None = None,
             log: Log = _log.info) -> GcResult:
    """Delete (or move to ``archive``, an fsspec URL, under the same relative paths) every file
    of ``plan`` in order, logging one line per action. Stops at the first failure."""
    from qmtl_engine import Store

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
    return result


def _apply(action: GcAction, store: Store, archive: Store | None) -> None:
    for path in action.files:
        if archive is not None:
            store.copy_to(path, archive)
        store.remove(path)
    if action.is_folder:
        store.remove_folder(action.path)
