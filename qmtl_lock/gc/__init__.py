"""``gc``: remove store data that no kept lock pins and retention no longer protects.

What gc keeps; everything else is deleted, or moved with ``--archive``::

    snapshot  pinned by a kept lock: the working-tree seamless.lock, the one committed at HEAD,
              those at each ``--keep-revs REV`` and, with ``--all-refs``, at every branch and
              tag tip;
              or retained: the newest ``expires_at`` any lock in the git history gave it (every
              commit reachable from a ref, and the reflog, which still remembers commits that an
              amend or a rebase dropped) is still ahead;
              or registered in the store by any project (``pins/*/*.json``, written by
              ``qmtl-lock pins push``): a store shared by several projects keeps what each of
              their protected branches pins;
              or written within the grace period (file time): a resolve may be running.
    object    named by a kept snapshot, or written within the grace period.
    jobs/     checkpoints and staged objects last written within the grace period.

A retention class without ``ttl_days`` (the built-in ``default``) keeps data only while a kept
lock pins it. A snapshot that no lock in the history names (``qmtl-lock materialize``, or a commit
the reflog forgot) is kept for the grace period only.

gc never mistakes a git it could not read for an empty history: when git fails inside a work tree
(a repository owned by another user, a damaged one, git missing) gc stops with a
:class:`~qmtl_lock.errors.GitError` and deletes nothing. Outside a work tree there is no history
to read, and gc deletes nothing unless ``no_git`` (``--no-git``) says to keep only what the
working-tree lock pins.

A running resolve holds a lease on the store (:meth:`qmtl_engine.store.Store.lease`). gc lists the
leases first; while one is live it keeps every job (checkpoint and staged objects) and everything
written since the oldest live lease began, and names each lease it respected. A lease whose holder
stopped refreshing it is stale: gc names it and removes it. A lease taken while gc was planning
stops gc before it deletes anything.

gc holds the store's exclusive gc lock (``locks/gc.json``) from before it lists the store until
its last delete; a writer takes its lease first and then waits while a gc lock is live, so a
resolve that starts during a gc names nothing gc deletes (:mod:`qmtl_engine.sharing`). A second
gc refuses to start; a gc lock whose holder stopped refreshing it is taken over. Right before
deleting, gc lists the leases and the pins again; a pin that cannot be read, then or while
planning, stops gc with nothing deleted. Each delete is conditional on the file being the one
listed (S3 ``If-Match``; size and file time elsewhere); a changed file is kept and reported.

One module per step: :mod:`~qmtl_lock.gc.keep` reads what the locks pin and retain,
:mod:`~qmtl_lock.gc.listing` what the store holds (through
:meth:`qmtl_engine.store.Store.inventory`), :mod:`~qmtl_lock.gc.plan` decides without any I/O,
:mod:`~qmtl_lock.gc.prepare` gathers all of it from git and the store and plans, and
:mod:`~qmtl_lock.gc.apply` carries a plan out, snapshots first and objects after, so a crash
midway never leaves a kept snapshot pointing at a missing object.
"""

from __future__ import annotations

from qmtl_lock.gc.apply import GcResult, apply_gc, describe
from qmtl_lock.gc.keep import KeptLock, Retention, retention_from_locks
from qmtl_lock.gc.listing import StoredSnapshot, StoreListing, list_store
from qmtl_lock.gc.plan import GcAction, GcKept, GcKind, GcPinned, GcPlan, plan_gc
from qmtl_lock.gc.prepare import GcRun, prepare_gc

__all__ = [
    "GcAction",
    "GcKept",
    "GcKind",
    "GcPinned",
    "GcPlan",
    "GcResult",
    "GcRun",
    "KeptLock",
    "Retention",
    "StoreListing",
    "StoredSnapshot",
    "apply_gc",
    "describe",
    "list_store",
    "plan_gc",
    "prepare_gc",
    "retention_from_locks",
]
