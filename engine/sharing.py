"""Sharing one store between projects and machines (DESIGN §6): the writes and deletes that
must not race, the gc lock's record and the pins projects register. Plain functions on an
fsspec filesystem and value types; :class:`qmtl_engine.store.Store` calls them and owns the
layout::

    <store>/locks/gc.json               the gc lock: who runs gc, since when, last heartbeat
    <store>/leases/<uuid>.json          a running writer (resolve, pins push)
    <store>/pins/<project>/<ref>.json   what one project's lock pins on one branch

The protocol that keeps gc from deleting what a writer is about to name (Dekker's, with files):
a writer creates its lease first and only then looks for a live gc lock; gc creates its lock
first and only then lists the leases, once to plan and once more right before it deletes. Either
the writer sees the gc lock (it steps back, removing its lease, and waits), or gc sees the lease
(it keeps what the lease protects, and stops if the lease is new). Both orders need writes that
are visible to the next read, which local disks and S3 give.

Exclusive creates are ``If-None-Match: *`` on S3 (s3fs ``mode="create"``) and a hard link of a
complete temporary file on a local disk, so a reader never sees half a lock. Deletes and
overwrites of a listed file are conditional: ``If-Match`` with the ETag of the listing on S3,
size and file time checked again right before unlinking on other filesystems. Nothing here
creates a folder on a remote store (``makedirs`` on S3 creates buckets).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GC_LOCK_VERSION = 1
GC_LOCK_HEARTBEAT_S = 20.0  # how often a gc refreshes its lock
PIN_VERSION = 1
GC_WAIT_S = 600.0  # how long a writer waits for a running gc before it gives up
GC_POLL_S = 0.5  # how often a waiting writer looks again

# A project or ref as a store key: one path segment of safe characters, never a hidden name
# (``.tmp-`` files are temporaries).
KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


# -- filesystem primitives ---------------------------------------------------------------------
def is_s3(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"s3", "s3a"} & set(protocol)) and hasattr(fs, "call_s3")


def create_exclusive(fs: Any, path: str, data: bytes) -> str | None:
    """Write ``data`` at ``path`` on a remote store only if nothing is there; FileExistsError
    otherwise. Returns the new file's ETag where the store has them (S3), else None. A local
    disk goes through :meth:`Store.create_exclusive` (a hard link of a temporary file)."""
    if is_s3(fs):
        return _etag(fs.pipe_file(path, data, mode="create"))  # one PUT, If-None-Match: *
    with fs.open(path, "xb") as f:  # other stores: their own exclusive open
        f.write(data)
    return None


def put_if_match(fs: Any, path: str, data: bytes, etag: str) -> str | None:
    """Overwrite ``path`` on S3 only while it still has ``etag``: its new ETag, or None when
    someone else changed (or removed) it."""
    try:
        out = fs.pipe_file(path, data, IfMatch=etag)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if precondition_failed(exc):
            return None
        raise
    return _etag(out) or etag


def delete_if_match(fs: Any, path: str, etag: str) -> bool:
    """Delete ``path`` on S3 only while it still has ``etag``; False when it changed since.
    Raises FileNotFoundError when it is gone."""
    bucket, key, _ = fs.split_path(path)
    fs.invalidate_cache(path)
    try:
        fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
    except OSError as exc:
        if precondition_failed(exc):
            return False
        raise
    return True


def precondition_failed(exc: BaseException) -> bool:
    """Whether an s3fs error is S3's 412 PreconditionFailed (a condition did not hold)."""
    for cause in (exc, exc.__cause__, exc.__context__):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") in ("PreconditionFailed", "412") or status == 412:
                return True
    return "pre-conditions you specified did not hold" in str(exc)


def _etag(out: object) -> str | None:
    etag = out.get("ETag") if isinstance(out, dict) else None
    return etag if isinstance(etag, str) else None


# -- the gc lock ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GcLockRecord:
    """What ``locks/gc.json`` says: who runs gc, and when it last showed it is alive."""

    owner: str | None  # None: the file could not be read (torn, or from a newer qmtl-lock)
    pid: int | None
    host: str | None
    started_ms: int | None  # by the holder's clock; the file time when unreadable
    heartbeat_ms: int | None
    token: str | None = None  # tells this holder's file from a later one

    def to_bytes(self) -> bytes:
        data = {"gc_lock_version": GC_LOCK_VERSION, "owner": self.owner, "pid": self.pid,
                "host": self.host, "started_ms": self.started_ms,
                "heartbeat_ms": self.heartbeat_ms, "token": self.token}
        return json.dumps(data, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes, mtime_ms: int | None) -> GcLockRecord:
        """A lock file's record; one that cannot be read counts from its file time, so it still
        holds the store until it goes stale."""
        try:
            found = json.loads(data)
            if isinstance(found, dict) and found.get("gc_lock_version") == GC_LOCK_VERSION:
                return cls(str(found["owner"]), int(found["pid"]), str(found["host"]),
                           int(found["started_ms"]), int(found["heartbeat_ms"]),
                           str(found["token"]))
        except (KeyError, TypeError, ValueError, UnicodeDecodeError):
            pass
        return cls(None, None, None, mtime_ms, mtime_ms)

    def is_stale(self, now_ms: int, timeout_ms: int) -> bool:
        """Whether its holder has not refreshed it for more than ``timeout_ms`` (it died, or lost
        the store). A lock of unknown age is never stale."""
        return self.heartbeat_ms is not None and now_ms - self.heartbeat_ms > timeout_ms

    def holder(self, now_ms: int) -> str:
        """``gc seamless.yaml (pid 12 on box), since <time>, last heartbeat 5 s ago``."""
        from qmtl_engine.ranges import iso

        if self.owner is None:
            who = "an unreadable gc lock (torn, or written by a newer qmtl-lock)"
        else:
            who = f"{self.owner} (pid {self.pid} on {self.host})"
        since = f", since {iso(self.started_ms)}" if self.started_ms is not None else ""
        beat = (f", last heartbeat {max(now_ms - self.heartbeat_ms, 0) // 1000} s ago"
                if self.heartbeat_ms is not None else "")
        return who + since + beat


# -- pins ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredPin:
    """One registered pin, ``pins/<project>/<ref>.json``: what a project's lock pins on a ref.

    ``problem`` says why the file cannot be read (then nothing else is known, and gc must not
    delete anything: it cannot tell what the pin keeps).
    """

    path: str  # relative to the store root
    project: str
    ref: str
    fingerprints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # -> dataset/symbol
    lock_digest: str | None = None
    pushed_at: str | None = None
    commit: str | None = None
    problem: str | None = None

    @property
    def label(self) -> str:
        """How reports name it: ``project research@main``."""
        return f"project {self.project}@{self.ref}"


def pin_bytes(*, project: str, ref: str, fingerprints: Mapping[str, tuple[str, ...]],
              lock_digest: str, pushed_at: str, commit: str | None) -> bytes:
    """The file ``pins push`` writes (sorted keys: the same pins give the same bytes)."""
    data = {"pin_version": PIN_VERSION, "project": project, "ref": ref,
            "lock_digest": lock_digest, "pushed_at": pushed_at, "commit": commit,
            "fingerprints": {fp: list(who) for fp, who in sorted(fingerprints.items())}}
    return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"


def parse_pin(path: str, data: bytes) -> StoredPin:
    """Read a pin file; one that cannot be read is a :class:`StoredPin` with a ``problem``."""
    parts = path.split("/")
    project, ref = parts[-2], parts[-1].removesuffix(".json")
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return StoredPin(path, project, ref, problem=f"it is not JSON ({exc})")
    if not isinstance(found, dict):
        return StoredPin(path, project, ref, problem="it is not a JSON object")
    version = found.get("pin_version")
    if version != PIN_VERSION:
        return StoredPin(path, project, ref, problem=(
            f"it has pin_version {version!r}; this qmtl-lock reads version {PIN_VERSION}"))
    try:
        fingerprints = {str(fp): tuple(str(w) for w in who)
                        for fp, who in dict(found["fingerprints"]).items()}
        if not all(fp.startswith("sha256:") and len(fp) == 71 for fp in fingerprints):
            raise ValueError("a fingerprint is not sha256:<64 hex>")
        return StoredPin(path, str(found["project"]), str(found["ref"]), fingerprints,
                         _opt(found.get("lock_digest")), _opt(found.get("pushed_at")),
                         _opt(found.get("commit")))
    except (KeyError, TypeError, ValueError) as exc:
        return StoredPin(path, project, ref, problem=f"it is malformed ({exc})")


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def check_key_name(kind: str, name: str) -> str:
    """``name`` if it can be a project or ref in a store key; ValueError otherwise."""
    if not KEY_NAME.fullmatch(name):
        raise ValueError(f"{kind} {name!r} cannot name a pin: use letters, digits, '.', '_' and "
                         "'-' (not first), at most 128 characters")
    return name
