"""Gather what gc plans from, and plan: the locks to keep (the working tree's, from git, and the
pins every project registered in the store), the retention the git history gives each snapshot,
and the store's listing with its leases, listed under the store's gc lock. Deletes nothing.

A git that fails inside a work tree stops gc here (:class:`GitError`, exit 2): a history it could
not read is not an empty one. Outside a work tree there is no history, and the plan deletes
nothing unless ``no_git`` says to keep only what the working-tree lock pins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from qmtl_engine import DAY_MS, LEASE_TIMEOUT_MS, InputError, SystemClock

from qmtl_lock.errors import GitError
from qmtl_lock.gc.keep import KeptLock, Retention, retention_from_locks
from qmtl_lock.gc.listing import list_store, read_pins
from qmtl_lock.gc.plan import GcPlan, plan_gc
from qmtl_lock.git import GitFile
from qmtl_lock.redact import redact_text

if TYPE_CHECKING:
    from qmtl_engine import GcLock, Store


@dataclass
class GcRun:
    plan: GcPlan
    store: Store
    archive: str | None
    lock: GcLock | None = None  # the store's gc lock, held from before the listing

    def release(self) -> None:
        """Give the gc lock back without applying the plan (:func:`apply_gc` does it too)."""
        if self.lock is not None:
            self.lock.release()


_NO_GIT = "pass --no-git to keep only what the working-tree lock pins"


def prepare_gc(manifest_path: str | Path = "seamless.yaml", *, keep_revs: Sequence[str] = (),
               all_refs: bool = False, no_git: bool = False, grace_days: float = 7,
               archive: str | None = None, now_ms: int | None = None,
               lease_timeout_ms: int = LEASE_TIMEOUT_MS, exclusive: bool = True) -> GcRun:
    """Read the locks to keep, the git history and the store, and plan. Deletes nothing.

    ``exclusive`` takes the store's gc lock before the store is listed and keeps it in the
    returned run, for :func:`~qmtl_lock.gc.apply.apply_gc` (which releases it; so does
    :meth:`GcRun.release`); writers that start meanwhile wait for it. A dry run passes False.
    Every project's registered pins (``pins/*/*.json``) are kept like the working-tree lock.
    ``no_git`` reads no git history: only the working-tree lock is kept. Raises
    :class:`GitError` (exit 2) when git fails inside a work tree (it refuses the repository,
    the repository is damaged, git is missing), for ``keep_revs``/``all_refs`` outside a git
    repository and for an unknown revision; :class:`InputError` for a missing lock, a bad
    archive URL, ``no_git`` with ``keep_revs``/``all_refs``, or registered pins that cannot be
    read; :class:`StoreBusy` when another gc holds the store.
    """
    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.manifest import load_manifest
    from qmtl_lock.resolve import clock_from_env

    loaded = load_manifest(manifest_path)
    if not loaded.lock_path.exists():
        raise InputError(f"{loaded.lock_path} does not exist: gc keeps what the lock pins and "
                         "will not run without one", where=str(loaded.lock_path),
                         fix="run `qmtl-lock resolve` first")
    kept = [KeptLock.from_lock(loaded.lock_path.name, read_lock(loaded.lock_path))]
    flag = "--keep-revs" if keep_revs else "--all-refs" if all_refs else None
    if no_git and flag:
        raise InputError(f"--no-git reads no git history, and {flag} asks for it",
                         where=str(loaded.lock_path), fix=f"drop --no-git or {flag}")
    git = None if no_git else GitFile.find(loaded.lock_path, otherwise=_NO_GIT)
    if git is None and flag and not no_git:
        raise GitError(f"{flag} needs a git repository, and {loaded.lock_path} is not in one",
                       where=str(loaded.lock_path),
                       fix=f"run gc inside the repository, or without {flag}")
    from_git: list[KeptLock] = []
    history: dict[str, Retention] | None = None if not no_git else {}
    warnings = [] if no_git or git else [
        f"{loaded.lock_path} is not in a git repository (or git is not installed)"]
    if git is not None:
        from_git, history, warnings = _from_git(git, keep_revs, all_refs)
    store = loaded.open_store()
    store.check_reachable()
    if archive is not None:
        _check_archive(archive, store)
    now = now_ms if now_ms is not None else clock_from_env().now_ms()
    lock = (store.gc_lock(f"gc {loaded.path}", timeout_ms=lease_timeout_ms).acquire()
            if exclusive else None)
    try:
        warnings += _lock_warnings(store, lock, lease_timeout_ms)
        wall = SystemClock().now_ms()  # before the listing: lease ages err on the young side
        registered = [KeptLock.from_pin(pin) for pin in read_pins(store)]
        plan = plan_gc(list_store(store), kept + from_git + registered, history, now_ms=now,
                       grace_ms=int(grace_days * DAY_MS), wall_ms=wall,
                       lease_timeout_ms=lease_timeout_ms)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return GcRun(replace(plan, warnings=(*warnings, *plan.warnings)), store, archive, lock)


def _lock_warnings(store: Store, lock: GcLock | None, timeout_ms: int) -> list[str]:
    """What to say about the gc lock: a stale one taken over, or (dry run) a gc running."""
    if lock is not None:
        if lock.took_over is None:
            return []
        return [f"took over the stale gc lock of {lock.took_over.holder(SystemClock().now_ms())}"
                " (its holder stopped refreshing it)"]
    found = store.gc_lock_holder()
    wall = SystemClock().now_ms()
    if found is None or found[0].is_stale(wall, timeout_ms):
        return []
    return [f"a gc is running on this store ({found[0].holder(wall)}): this plan may be out of "
            "date when it finishes"]


def _from_git(git: GitFile, keep_revs: Sequence[str], all_refs: bool,
              ) -> tuple[list[KeptLock], dict[str, Retention], list[str]]:
    """The locks kept at HEAD, at ``keep_revs`` and (``all_refs``) at every ref tip; the
    retention the whole history gives each snapshot; and warnings."""
    wanted: list[tuple[str, str, bool]] = []  # (label, revision, asked for by name)
    if git.has_head():
        wanted.append(("HEAD", "HEAD", False))
    wanted += [(rev, git.commit(rev), True) for rev in keep_revs]
    if all_refs:
        wanted += [(short, full, False) for short, full in git.ref_tips()]
    texts = git.texts_at([rev for _, rev, _ in wanted])
    kept: list[KeptLock] = []
    warnings: list[str] = []
    for label, rev, named in wanted:
        text = texts[rev]
        if text is None:
            if named:
                warnings.append(f"{label} has no {git.path}: it keeps nothing")
            continue
        lock, warning = KeptLock.from_text(label, text)
        kept.append(lock)
        if warning:
            warnings.append(warning)
    history = retention_from_locks(
        (rev[:12], text) for rev, text in git.texts_at(git.history()).items() if text is not None)
    return kept, history, warnings


def _check_archive(url: str, store: Store) -> None:
    """Refuse an archive that cannot be opened, that shares files with the store, or whose
    bucket does not exist."""
    from qmtl_engine import Store

    try:
        archive = Store(url)
    except (ValueError, ImportError) as exc:
        raise InputError(f"cannot open archive {redact_text(url)}: {exc}",
                         fix="pass an fsspec URL such as /mnt/archive, s3://bucket/qmtl-archive "
                         "or memory://archive") from None
    if store.overlaps(archive):
        raise InputError(f"archive {redact_text(url)} overlaps the store "
                         f"{redact_text(store.url)}", fix="archive to a location outside the store")
    archive.check_reachable()  # a typo in its bucket must not make a new bucket
