"""``gc``: remove store data that no kept lock pins and retention no longer protects.

What gc keeps; everything else is deleted, or moved with ``--archive``::

    snapshot  pinned by a kept lock: the working-tree seamless.lock, the one committed at HEAD,
              those at each ``--keep-revs REV`` and, with ``--all-refs``, at every branch and
              tag tip;
              or retained: the newest ``expires_at`` any lock in the git history gave it (every
              commit reachable from a ref, and the reflog, which still remembers commits that an
              amend or a rebase dropped) is still ahead;
              or written within the grace period (file time): a resolve may be running.
    object    named by a kept snapshot, or written within the grace period.
    jobs/     checkpoints and staged objects last written within the grace period.

A retention class without ``ttl_days`` (the built-in ``default``) keeps data only while a kept
lock pins it. A snapshot that no lock in the history names (``qmtl-lock materialize``, or a commit
the reflog forgot) is kept for the grace period only.

:func:`plan_gc` decides without any I/O, from a :class:`StoreListing`, the :class:`KeptLock`
pins and the :class:`Retention` per snapshot; :func:`list_store` and :class:`GitLocks` gather
those; :func:`apply_gc` carries a plan out, snapshots first and objects after, so a crash midway
never leaves a kept snapshot pointing at a missing object.
"""

from __future__ import annotations

import logging
import posixpath
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine.errors import InputError, QmtlLockError
from qmtl_engine.ranges import DAY_MS, iso

from qmtl_lock.errors import GitError
from qmtl_lock.lockfile import Lockfile, parse_lock, read_lock

if TYPE_CHECKING:
    from qmtl_engine.store import Store

GcKind = Literal["snapshot", "object", "job", "temporary"]
Log = Callable[[str], None]

_log = logging.getLogger("qmtl_lock.gc")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_FINGERPRINT_IN_TEXT = re.compile(r"dataset_fingerprint:\s*[\"']?(sha256:[0-9a-f]{64})")


# -- what the plan is made from ------------------------------------------------------------------
@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store root, '/'-separated
    size: int
    mtime_ms: int | None  # None: the filesystem does not say


@dataclass(frozen=True)
class StoredSnapshot:
    file: StoredFile
    objects: tuple[str, ...] | None  # the digests it names; None when it cannot be read


@dataclass(frozen=True)
class StoredJob:
    """A resume checkpoint (``jobs/<key>.json``) and its staged objects (``jobs/<key>.staged/``)."""

    key: str
    checkpoint: StoredFile | None
    staged: tuple[StoredFile, ...] = ()

    @property
    def mtime_ms(self) -> int | None:
        """When the job last wrote anything (None if any file time is unknown)."""
        files = ([self.checkpoint] if self.checkpoint else []) + list(self.staged)
        times = [f.mtime_ms for f in files]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)


@dataclass(frozen=True)
class StoreListing:
    snapshots: Mapping[str, StoredSnapshot] = field(default_factory=dict)  # by fingerprint
    objects: Mapping[str, StoredFile] = field(default_factory=dict)  # by digest
    jobs: Sequence[StoredJob] = ()
    temporaries: Sequence[StoredFile] = ()  # .tmp-* files of interrupted writes


@dataclass(frozen=True)
class KeptLock:
    """A lock whose snapshots gc must keep, and what it pins (fingerprint -> dataset/symbol)."""

    label: str
    pins: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_lock(cls, label: str, lock: Lockfile) -> KeptLock:
        pins: dict[str, list[str]] = {}
        for name, ds in sorted(lock.datasets.items()):
            for symbol, entry in sorted(ds.symbols.items()):
                pins.setdefault(entry.dataset_fingerprint, []).append(f"{name}/{symbol}")
        return cls(label, {fp: tuple(who) for fp, who in pins.items()})

    @classmethod
    def from_text(cls, label: str, text: str) -> tuple[KeptLock, str | None]:
        """Parse a lock read from git; one that cannot be parsed (a newer lock_version, a
        committed merge conflict) still keeps every fingerprint its text names. Returns the lock
        and a warning, if any."""
        try:
            return cls.from_lock(label, parse_lock(text, label)), None
        except QmtlLockError:
            found = sorted(set(_FINGERPRINT_IN_TEXT.findall(text)))
            return cls(label, {fp: ("unreadable lock",) for fp in found}), (
                f"the seamless.lock at {label} could not be parsed; keeping the {len(found)} "
                "fingerprint(s) its text names")


@dataclass(frozen=True)
class Retention:
    """How long the locks in the git history said one snapshot is kept."""

    expires_at: int | None  # the newest expires_at any lock gave it; None: no class with a TTL
    retention_class: str | None  # the class behind expires_at
    unreadable_in: str | None = None  # named by a lock at this revision that could not be parsed

    def merge(self, other: Retention) -> Retention:
        newer = other if other.expires_at is not None and (
            self.expires_at is None or other.expires_at > self.expires_at) else self
        return Retention(newer.expires_at, newer.retention_class,
                         self.unreadable_in or other.unreadable_in)


def retention_from_locks(locks: Iterable[tuple[str, str]]) -> dict[str, Retention]:
    """``(revision, lock text)`` pairs -> the :class:`Retention` of every snapshot they name."""
    found: dict[str, Retention] = {}

    def add(fp: str, r: Retention) -> None:
        found[fp] = found[fp].merge(r) if fp in found else r

    for rev, text in locks:
        try:
            lock = parse_lock(text, rev)
        except QmtlLockError:
            for fp in set(_FINGERPRINT_IN_TEXT.findall(text)):
                add(fp, Retention(None, None, unreadable_in=rev))
            continue
        for ds in lock.datasets.values():
            for entry in ds.symbols.values():
                add(entry.dataset_fingerprint, Retention(entry.expires_at, entry.retention_class))
    return found


# -- the plan --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GcAction:
    """One file (or a job's staged folder) to delete or archive, and why."""

    kind: GcKind
    path: str  # relative to the store root
    reason: str
    size: int
    files: tuple[str, ...]  # what to move or delete: ``(path,)``, or a folder's files

    @property
    def is_folder(self) -> bool:
        return self.files != (self.path,)

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
class GcPlan:
    actions: tuple[GcAction, ...]  # in the order they must run: snapshots, objects, jobs, temps
    kept: tuple[GcKept, ...]  # every kept snapshot and job, and unreferenced objects kept young
    kept_objects: int
    kept_locks: tuple[str, ...]
    warnings: tuple[str, ...]
    now_ms: int
    grace_ms: int

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": iso(self.now_ms), "grace_days": round(self.grace_ms / DAY_MS, 6),
            "kept_locks": list(self.kept_locks),
            "delete": [a.to_dict() for a in self.actions],
            "kept": [k.to_dict() for k in self.kept],
            "counts": {"delete": self.counts(), "bytes": self.size,
                       "kept_snapshots": sum(1 for k in self.kept if k.kind == "snapshot"),
                       "kept_objects": self.kept_objects},
            "warnings": list(self.warnings),
        }


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def plan_gc(listing: StoreListing, kept_locks: Sequence[KeptLock],
            history: Mapping[str, Retention], *, now_ms: int, grace_ms: int) -> GcPlan:
    """Decide what to delete; see the module docstring for the rules. Pure: no I/O."""
    grace_days = f"{grace_ms / DAY_MS:g}-day"

    def young(mtime: int | None) -> str | None:
        if mtime is None:
            return "written at a time the filesystem does not report"
        if now_ms - mtime < grace_ms:
            return f"written {iso(mtime)}, within the {grace_days} grace period"
        return None

    pinned: dict[str, str] = {}
    for lock in kept_locks:
        for fp, who in lock.pins.items():
            pinned.setdefault(fp, f"{lock.label} ({', '.join(who)})")

    actions: list[GcAction] = []
    kept: list[GcKept] = []
    warnings: list[str] = []
    kept_snaps: list[StoredSnapshot] = []
    dropped_objects: set[str] = set()
    for fp, snap in sorted(listing.snapshots.items()):
        path = snap.file.path
        if fp in pinned:
            kept.append(GcKept("snapshot", path, f"pinned by {pinned[fp]}"))
            kept_snaps.append(snap)
            continue
        r = history.get(fp)
        if r is not None and r.unreadable_in:
            kept.append(GcKept("snapshot", path, f"named by the unreadable seamless.lock at "
                               f"{r.unreadable_in}: its expiry is unknown"))
            kept_snaps.append(snap)
            continue
        if r is not None and r.expires_at is not None and r.expires_at > now_ms:
            kept.append(GcKept("snapshot", path, f"unreferenced, but retained until "
                               f"{iso(r.expires_at)} ({r.retention_class})"))
            kept_snaps.append(snap)
            continue
        if r is None:
            why = "unreferenced, named by no lock in the git history"
        elif r.expires_at is not None:
            why = f"unreferenced, expired {iso(r.expires_at)} ({r.retention_class})"
        else:
            why = (f"unreferenced, and retention class {r.retention_class} keeps data only while "
                   "a kept lock pins it")
        too_young = young(snap.file.mtime_ms)
        if too_young:
            kept.append(GcKept("snapshot", path, f"{why}, but {too_young}"))
            kept_snaps.append(snap)
            continue
        actions.append(GcAction("snapshot", path, why, snap.file.size, (path,)))
        dropped_objects.update(snap.objects or ())

    missing = sorted(set(pinned) - set(listing.snapshots))
    if missing:
        warnings.append(f"{_n(len(missing), 'snapshot')} pinned by the kept locks "
                        "not in the store (nothing to keep; `qmtl-lock resolve --frozen` "
                        "rebuilds the current lock's)")

    unreadable = [s.file.path for s in kept_snaps if s.objects is None]
    needed = {d for s in kept_snaps for d in (s.objects or ())}
    kept_objects = 0
    if unreadable:
        warnings.append(f"kept snapshot {unreadable[0]} cannot be read, so gc cannot tell which "
                        "objects it needs and deletes no object (`qmtl-lock verify` names the "
                        "damage)")
        kept_objects = len(listing.objects)
    else:
        for digest, f in sorted(listing.objects.items()):
            if digest in needed:
                kept_objects += 1
                continue
            why = ("named only by snapshots this gc removes" if digest in dropped_objects
                   else "named by no kept snapshot")
            too_young = young(f.mtime_ms)
            if too_young:
                kept_objects += 1
                kept.append(GcKept("object", f.path, f"{why}, but {too_young}"))
                continue
            actions.append(GcAction("object", f.path, why, f.size, (f.path,)))

    for job in sorted(listing.jobs, key=lambda j: j.key):
        label = f"jobs/{job.key}"
        too_young = young(job.mtime_ms)
        if too_young:
            kept.append(GcKept("job", label, f"checkpoint {too_young}: a resolve may be running"))
            continue
        last = iso(job.mtime_ms) if job.mtime_ms is not None else "?"
        if job.checkpoint is not None:
            actions.append(GcAction("job", job.checkpoint.path,
                                    f"stale resume checkpoint, last written {last}",
                                    job.checkpoint.size, (job.checkpoint.path,)))
        if job.staged:
            folder = f"jobs/{job.key}.staged"
            actions.append(GcAction("job", folder,
                                    f"staged objects of a stale job, last written {last}",
                                    sum(f.size for f in job.staged),
                                    tuple(f.path for f in job.staged)))
    for f in sorted(listing.temporaries, key=lambda t: t.path):
        if young(f.mtime_ms) is None:
            actions.append(GcAction("temporary", f.path, "leftover of an interrupted write, "
                                    f"written {iso(f.mtime_ms or 0)}", f.size, (f.path,)))

    return GcPlan(tuple(actions), tuple(kept), kept_objects,
                  tuple(k.label for k in kept_locks), tuple(warnings), now_ms, grace_ms)


# -- reading the store -----------------------------------------------------------------------
def _mtime_ms(info: Mapping[str, Any]) -> int | None:
    """A file's modification time from an fsspec ``info`` dict, across backends."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created",
                "timeCreated"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return int(value * 1000)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return int(value.timestamp() * 1000)
    return None


def list_store(store: Store) -> StoreListing:
    """Every snapshot (with the objects it names), object, job and temporary in the store."""
    fs, root = store.fs, store.root
    prefix = root.rstrip("/") + "/"

    def files(folder: str) -> dict[str, StoredFile]:
        base = prefix + folder
        if not fs.exists(base):
            return {}
        out = {}
        for path, info in fs.find(base, detail=True).items():
            if info.get("type", "file") != "file" or not path.startswith(prefix):
                continue
            rel = path[len(prefix):]
            out[rel] = StoredFile(rel, int(info.get("size") or 0), _mtime_ms(info))
        return out

    temporaries: list[StoredFile] = []
    snapshots: dict[str, StoredSnapshot] = {}
    for rel, f in sorted(files("snapshots").items()):
        fp = _content_name(rel, ".json", temporaries, f)
        if fp is None:
            continue
        try:
            snap = store.get_snapshot(fp)
            objects: tuple[str, ...] | None = tuple(p.digest for p in snap.partitions)
        except QmtlLockError:
            objects = None
        snapshots[fp] = StoredSnapshot(f, objects)
    objects_found: dict[str, StoredFile] = {}
    for rel, f in sorted(files("objects").items()):
        digest = _content_name(rel, ".parquet", temporaries, f)
        if digest is not None:
            objects_found[digest] = f
    checkpoints: dict[str, StoredFile] = {}
    staged: dict[str, list[StoredFile]] = {}
    for rel, f in sorted(files("jobs").items()):
        parts = rel.split("/")
        if len(parts) == 2 and parts[1].startswith(".tmp-"):
            temporaries.append(f)
        elif len(parts) == 2 and parts[1].endswith(".json"):
            checkpoints[parts[1][: -len(".json")]] = f
        elif len(parts) >= 3 and parts[1].endswith(".staged"):
            staged.setdefault(parts[1][: -len(".staged")], []).append(f)
    jobs = [StoredJob(key, checkpoints.get(key), tuple(staged.get(key, ())))
            for key in sorted(set(checkpoints) | set(staged))]
    return StoreListing(snapshots, objects_found, jobs, temporaries)


def _content_name(rel: str, suffix: str, temporaries: list[StoredFile],
                  f: StoredFile) -> str | None:
    """``sha256:<hex>`` of ``<folder>/<aa>/<hex><suffix>``; temporaries are set aside, anything
    else (not written by qmtl-lock) is left alone."""
    parts = rel.split("/")
    name = parts[-1]
    if name.startswith(".tmp-"):
        temporaries.append(f)
        return None
    hexd = name[: -len(suffix)] if name.endswith(suffix) else ""
    if len(parts) != 3 or not _HEX.match(hexd) or parts[1] != hexd[:2]:
        return None
    return "sha256:" + hexd


# -- reading git -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GitLocks:
    """The lock file as git knows it: at HEAD, at given revisions, at ref tips, in history."""

    cwd: Path  # the lock's folder
    path: str  # the lock's path from the top of the work tree

    @classmethod
    def find(cls, lock_path: Path) -> GitLocks | None:
        """The repository holding ``lock_path``, or None outside one (or without git)."""
        folder = lock_path.absolute().parent
        try:
            proc = subprocess.run(["git", "rev-parse", "--show-prefix"], cwd=folder,
                                  capture_output=True, check=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if proc.returncode != 0:
            return None
        return cls(folder, proc.stdout.decode().strip() + lock_path.name)

    def _git(self, *args: str, stdin: bytes | None = None) -> bytes:
        proc = subprocess.run(["git", *args], cwd=self.cwd, input=stdin, capture_output=True,
                              check=False)
        if proc.returncode != 0:
            raise GitError(f"`git {' '.join(args)}` failed: "
                           f"{proc.stderr.decode(errors='replace').strip()}",
                           where=str(self.cwd), fix="check the repository with `git status`")
        return proc.stdout

    def commit(self, rev: str) -> str:
        """The commit ``rev`` names; :class:`GitError` (exit 2) if it names none."""
        proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "--end-of-options",
                               f"{rev}^{{commit}}"], cwd=self.cwd, capture_output=True,
                              check=False)
        if proc.returncode != 0 or not rev:
            raise GitError(f"unknown git revision {rev!r}", where=str(self.cwd), revision=rev,
                           fix="pass a branch, tag or commit that `git log --oneline --all` "
                           "shows")
        return proc.stdout.decode().strip()

    def ref_tips(self) -> list[tuple[str, str]]:
        """``(short name, full ref name)`` of every branch, remote branch and tag."""
        out = self._git("for-each-ref", "--format=%(refname:short)%00%(refname)",
                        "refs/heads", "refs/remotes", "refs/tags").decode()
        tips = []
        for line in out.splitlines():
            short, _, full = line.partition("\0")
            if full and not full.endswith("/HEAD"):
                tips.append((short, full))
        return tips

    def history(self) -> list[str]:
        """Every commit reachable from a ref or still in a reflog (amended, rebased away)."""
        return self._git("rev-list", "--all", "--reflog").decode().split()

    def has_head(self) -> bool:
        return subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=self.cwd,
                              capture_output=True, check=False).returncode == 0

    def locks_at(self, revs: Sequence[str]) -> dict[str, str | None]:
        """The lock's text at each revision (None where it has none), in two git calls."""
        if not revs:
            return {}
        specs = [f"{rev}:{self.path}" for rev in revs]
        out = self._git("cat-file", "--batch-check", stdin="".join(
            s + "\n" for s in specs).encode()).decode().splitlines()
        blob_of: dict[str, str | None] = {}
        for rev, line in zip(revs, out, strict=True):
            bits = line.split()
            blob_of[rev] = bits[0] if len(bits) == 3 and bits[1] == "blob" else None
        blobs = sorted({b for b in blob_of.values() if b})
        texts = self._read_blobs(blobs)
        return {rev: (texts[b] if b else None) for rev, b in blob_of.items()}

    def _read_blobs(self, blobs: list[str]) -> dict[str, str]:
        if not blobs:
            return {}
        data = self._git("cat-file", "--batch", stdin="".join(b + "\n" for b in blobs).encode())
        texts: dict[str, str] = {}
        pos = 0
        for blob in blobs:
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            size = int(header[2])
            texts[blob] = data[end + 1:end + 1 + size].decode("utf-8", errors="replace")
            pos = end + 1 + size + 1
        return texts


# -- gathering and applying ------------------------------------------------------------------
@dataclass
class GcRun:
    plan: GcPlan
    store: Store
    archive: str | None


def prepare_gc(manifest_path: str | Path = "seamless.yaml", *, keep_revs: Sequence[str] = (),
               all_refs: bool = False, grace_days: float = 7, archive: str | None = None,
               now_ms: int | None = None) -> GcRun:
    """Read the locks to keep, the git history and the store, and plan. Deletes nothing.

    Raises :class:`GitError` (exit 2) for ``keep_revs``/``all_refs`` outside a git repository
    or an unknown revision, and :class:`InputError` for a missing lock or a bad archive URL.
    """
    from qmtl_engine.store import Store

    from qmtl_lock.manifest import load_manifest
    from qmtl_lock.resolve import clock_from_env

    loaded = load_manifest(manifest_path)
    if not loaded.lock_path.exists():
        raise InputError(f"{loaded.lock_path} does not exist: gc keeps what the lock pins and "
                         "will not run without one", where=str(loaded.lock_path),
                         fix="run `qmtl-lock resolve` first")
    kept = [KeptLock.from_lock(loaded.lock_path.name, read_lock(loaded.lock_path))]
    warnings: list[str] = []
    history: dict[str, Retention] = {}
    git = GitLocks.find(loaded.lock_path)
    if git is None and (keep_revs or all_refs):
        flag = "--keep-revs" if keep_revs else "--all-refs"
        raise GitError(f"{flag} needs a git repository, and {loaded.lock_path} is not in one",
                       where=str(loaded.lock_path),
                       fix=f"run gc inside the repository, or without {flag}")
    if git is not None:
        wanted: list[tuple[str, str, bool]] = []  # (label, revision, asked for by name)
        if git.has_head():
            wanted.append(("HEAD", "HEAD", False))
        wanted += [(rev, git.commit(rev), True) for rev in keep_revs]
        if all_refs:
            wanted += [(short, full, False) for short, full in git.ref_tips()]
        texts = git.locks_at([rev for _, rev, _ in wanted])
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
        commits = git.history()
        history = retention_from_locks(
            (rev[:12], text) for rev, text in git.locks_at(commits).items() if text is not None)
    store = Store(loaded.store_url)
    if archive is not None:
        _check_archive(archive, store)
    now = now_ms if now_ms is not None else clock_from_env().now_ms()
    plan = plan_gc(list_store(store), kept, history, now_ms=now,
                   grace_ms=int(grace_days * DAY_MS))
    return GcRun(replace(plan, warnings=(*warnings, *plan.warnings)), store, archive)


def _check_archive(url: str, store: Store) -> None:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise InputError(f"cannot open archive {_redacted(url)}: {exc}",
                         fix="pass an fsspec URL such as /mnt/archive, s3://bucket/qmtl-archive "
                         "or memory://archive") from None
    inside = root.rstrip("/") + "/"
    store_root = store.root.rstrip("/") + "/"
    if type(fs) is type(store.fs) and (inside.startswith(store_root)
                                       or store_root.startswith(inside)):
        raise InputError(f"archive {_redacted(url)} overlaps the store {_redacted(store.url)}",
                         fix="archive to a location outside the store")


def _redacted(url: str) -> str:
    from qmtl_lock.redact import redact_text

    return redact_text(url)


def describe(action: GcAction, *, archive: str | None, dry_run: bool) -> str:
    """The log line of one action."""
    if archive:
        verb = "would archive" if dry_run else "archived"
        dest = f"{_redacted(archive).rstrip('/')}/{action.path}"
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
    import fsspec

    target = fsspec.core.url_to_fs(archive) if archive else None
    result = GcResult()
    prefix = store.root.rstrip("/") + "/"
    for action in plan.actions:
        try:
            for rel in action.files:
                src = prefix + rel
                if target is not None:
                    _copy(store, src, target[0], target[1].rstrip("/") + "/" + rel)
                store.fs.rm(src)
            if action.is_folder and store.fs.exists(prefix + action.path):
                store.fs.rm(prefix + action.path, recursive=True)
        except FileNotFoundError:
            result.gone.append(action)
            log(f"gone {action.path}: already removed")
            continue
        except OSError as exc:
            raise QmtlLockError(
                f"gc stopped at {action.path}: {exc}", where=_redacted(store.url),
                fix="fix the store's permissions or space and run `qmtl-lock gc` again; "
                "nothing any kept lock pins was touched") from None
        result.done.append(action)
        log(describe(action, archive=archive, dry_run=False))
    return result


def _copy(store: Store, src: str, fs: Any, dest: str) -> None:
    """Copy one file into the archive: to a temporary name, then moved into place."""
    import shutil
    import uuid

    parent = posixpath.dirname(dest)
    fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(dest)}")
    with store.fs.open(src, "rb") as reader, fs.open(tmp, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
    fs.mv(tmp, dest)
    expected = store.fs.size(src)
    if fs.size(dest) != expected:
        raise OSError(f"the archived copy {dest} has {fs.size(dest)} bytes, not {expected}")
