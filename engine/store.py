"""The content-addressed store on any fsspec URL (DESIGN §6).

::

    <store>/objects/<aa>/<partition digest hex>.parquet   partition data, immutable
    <store>/snapshots/<aa>/<fingerprint hex>.json         snapshot manifests, immutable
    <store>/jobs/<job key>/<start>-<end>.json             one resume checkpoint per finished window
    <store>/refs/<job key>.json                           a request's finished snapshot
    <store>/leases/<uuid>.json                            running resolves (gc keeps their work)
    <store>/quarantine/<UTC time>/<path above>            corrupted files set aside by repair
    <store>/leases/<uuid>.json                            a running writer (resolve, pins push)
    <store>/locks/gc.json                                 the gc lock: one gc at a time
    <store>/pins/<project>/<ref>.json                     what a project's lock pins on a ref

Immutable things are written with an exclusive create: a hard link of a complete temporary file
on a local disk, ``If-None-Match: *`` on object storage (s3fs ``mode="create"``). "Already
exists" means another writer stored the same content under the same name: success. So a reader
never sees half a file, writers of one request cooperate without staging or moving files, and
one fetched partition costs one write of its object and one of its checkpoint. Mutable things
are small, one per unit, and replaced whole (a rename on a local disk, one PUT elsewhere).
An object's name is the digest of its canonical content, and :meth:`Store.check_object` re-hashes
an object against its name.

Checkpoints of version 1 (``jobs/<key>.json`` and ``jobs/<key>.staged/``, before objects were
written in place) are no longer read; :meth:`Store.inventory` still lists them so gc removes them.

How several projects and machines share one store, without gc deleting what a writer is about
to name, is in :mod:`qmtl_engine.sharing` (leases, the gc lock, pins, conditional deletes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import fsspec

if TYPE_CHECKING:  # pyarrow loads when data is read or written, not to look for a snapshot
    import pyarrow as pa

from qmtl_engine.errors import (
    InputError,
    ObjectCorrupted,
    ObjectMissing,
    QmtlLockError,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    without_credentials,
)
from qmtl_engine.fingerprint import (
    FINGERPRINT_ALGORITHM,
    Fingerprint,
    PartitionRef,
    SnapshotHeader,
    dataset_fingerprint,
    partition_digest,
)
from qmtl_engine.layout import object_key, snapshot_key
from qmtl_engine.ranges import PartitionScheme, TimeRange, partition_windows, window_name
from qmtl_engine.sharing import (
    GC_LOCK_HEARTBEAT_S,
    GC_POLL_S,
    GC_WAIT_S,
    GcLockRecord,
    StoredPin,
    check_key_name,
    create_exclusive,
    delete_if_match,
    is_s3,
    parse_pin,
    put_if_match,
)
from qmtl_engine.store_access import S3_PROTOCOLS

# Version 2 records the partition scheme (``partition``); version 1 manifests, written before it
# was, are still read: their data and fingerprints are the same, only the scheme is unknown.
SNAPSHOT_VERSION = 2
READABLE_SNAPSHOT_VERSIONS = (1, 2)
SCHEMES: tuple[PartitionScheme, ...] = ("day", "month", "year")
JOB_VERSION = 2  # one object per finished window (version 1: one file per job)
REF_VERSION = 1


@dataclass
class SnapshotPartition:
    start: int
    end: int
    rows: int
    digest: str
    flags: dict[str, int] = field(default_factory=dict)

    def ref(self) -> PartitionRef:
        return PartitionRef(self.start, self.end, self.rows, Fingerprint(self.digest))


@dataclass
class Snapshot:
    """A snapshot manifest: the header, the ordered partitions and its fingerprint.

    ``partition`` is the scheme (day, month or year) the partition windows were cut on, recorded
    by the engine that cut them. It names partitions and is not part of the fingerprint: the
    windows themselves are. It is None only for a manifest from before it was recorded (version
    1); such partitions are named by their exact windows, never by a guess.
    """

    fingerprint: str
    header: SnapshotHeader
    partitions: list[SnapshotPartition]
    partition: PartitionScheme | None = field(kw_only=True)

    def partition_name(self, part: SnapshotPartition) -> str:
        """How messages name ``part``: ``2024-03``, or ``2024 [<exact window>)`` when the
        window is clipped to the coverage; the exact window when the scheme is not recorded."""
        window = TimeRange(part.start, part.end)
        return window_name(window, self.partition) if self.partition else window.label()

    def follows_scheme(self) -> bool:
        """Whether the partitions are exactly the recorded scheme's windows over the coverage."""
        if self.partition is None:
            return True
        lo, hi = self.header.coverage_start, self.header.coverage_end
        if hi < lo:
            return False
        windows = partition_windows(TimeRange(lo, hi), self.partition)
        return [(p.start, p.end) for p in self.partitions] == [(w.start, w.end) for w in windows]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "snapshot_version": SNAPSHOT_VERSION,
            "fingerprint": self.fingerprint,
            "header": self.header.canonical(),
            "partition": self.partition,
            "partitions": [
                {"start": p.start, "end": p.end, "rows": p.rows, "digest": p.digest,
                 "flags": dict(sorted(p.flags.items()))}
                for p in self.partitions
            ],
        }
        if self.partition is None:  # what a version 1 manifest said, in its own layout
            del data["partition"]
            data["snapshot_version"] = 1
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str) -> Snapshot:
        version = data.get("snapshot_version")
        if isinstance(version, bool) or version not in READABLE_SNAPSHOT_VERSIONS:
            raise InputError(
                f"snapshot manifest has snapshot_version {version!r}; this qmtl-lock reads "
                f"version {' or '.join(str(v) for v in READABLE_SNAPSHOT_VERSIONS)}",
                where=path, fix="upgrade qmtl-lock (pip install -U qmtl-lock)",
            )
        h = data["header"]
        header = SnapshotHeader(
            contract=h["contract"], preset=h["preset"], symbol=h["symbol"],
            interval_ms=h["interval_ms"], coverage_start=h["coverage"][0],
            coverage_end=h["coverage"][1], adjustment=h.get("adjustment", "raw"),
        )
        parts = [SnapshotPartition(p["start"], p["end"], p["rows"], p["digest"],
                                   dict(p.get("flags", {}))) for p in data["partitions"]]
        scheme = None
        if version >= 2:
            scheme = data["partition"]
            if scheme not in SCHEMES:
                raise ValueError(f"partition scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
        return cls(data["fingerprint"], header, parts, partition=scheme)


class Store:
    """One store root on an fsspec filesystem.

    ``storage_options`` are fsspec's options for the URL's file system; keys ending in ``_env``
    name the environment variable that holds the value (see :mod:`qmtl_engine.store_access`),
    resolved here and kept only by the file system: pickling a store carries its URL and the
    options as given, so a Dask worker rebuilds it with its own environment and no secret
    travels. A remote store reads through the local cache ``cache`` (a folder; None: the default
    one; False: none; see :mod:`qmtl_engine.cache`). Raises :class:`InputError` for a URL with a
    password, an unknown protocol or an option whose variable is not set, :class:`StoreError`
    when the protocol's package is not installed. Opening never contacts the store.
    """

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None,
                 cache: str | os.PathLike[str] | bool | None = None) -> None:
        from qmtl_engine.cache import open_cache
        from qmtl_engine.store_access import (
            LOCAL_PROTOCOLS,
            Failures,
            endpoint_of,
            guarded,
            protocol_of,
            refuse_credentials,
            resolve_options,
            with_defaults,
        )

        self.url = url
        self.storage_options: dict[str, Any] = dict(storage_options or {})  # as given: unresolved
        self._cache_setting = cache
        protocol = protocol_of(url)
        try:
            fsspec.get_filesystem_class(protocol)  # an unknown protocol says so before the URL
            refuse_credentials(url)  # before fsspec makes a folder, or a client, of a secret
            options = with_defaults(protocol, resolve_options(self.storage_options))
            fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as exc:  # fsspec knows the protocol; its package is not installed
            raise StoreError(f"cannot open the store: {exc}", url=url,
                             fix=_install_hint(url)) from None
        except InputError:
            raise
        except ValueError as exc:  # fsspec says "Protocol not known: ..."
            raise InputError(f"cannot open the store: {exc}",
                             where=f"store {without_credentials(url)}",
                             fix="write the store as a path or an fsspec URL such as "
                             "file://..., s3://bucket/prefix or gcs://bucket/prefix") from None
        self.protocol = protocol
        self.remote = protocol not in LOCAL_PROTOCOLS
        self.endpoint = endpoint_of(protocol, options)
        self.fs = guarded(fs, Failures(url, self.endpoint)) if self.remote else fs
        self.root = root.rstrip("/") or "/"
        self.cache = open_cache(cache) if self.remote else None
        self._bucket_seen = False  # check_reachable passed once: no need to ask again
        self._present: set[str] = set()  # objects known to be stored (see note_present)
        self._folders: set[str] = set()  # local folders made (or found) by this Store
        self.active_lease: Lease | None = None  # the lease a writer holds on this store now

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the URL and the options as given (``*_env`` keys unresolved): a pickled
        # store never holds a resolved secret, and the receiver reads its own environment.
        return (_reopen, (self.url, self.storage_options, self._cache_setting))

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- layout ---------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def object_path(self, digest: str) -> str:
        return self._path(object_key(digest))

    def snapshot_path(self, fingerprint: str) -> str:
        return self._path(snapshot_key(fingerprint))

    def display(self, path: str) -> str:
        """A path as the user would write it (with the protocol for non-local stores)."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return path if protocol in ("file", "local") else f"{protocol}://{path.lstrip('/')}"

    # -- writing -------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """Whether the store is a folder on a local disk (hard links, renames and folders)."""
        return self.protocol in ("file", "local")

    def _temporary(self, path: str, data: bytes) -> str:
        """``data`` in a complete temporary file beside ``path`` (local only: an object store
        has no folders). A folder another writer removed meanwhile (gc of a finished job's
        checkpoints) is made again."""
        parent = posixpath.dirname(path)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
        for attempt in (1, 2):
            if parent not in self._folders or attempt == 2:
                os.makedirs(parent, exist_ok=True)
                self._folders.add(parent)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                return tmp
            except FileNotFoundError:
                self._folders.discard(parent)
                if attempt == 2:
                    raise
        return tmp  # not reached: the second attempt returns or raises

    def create_exclusive(self, path: str, data: bytes) -> str | None:
        """Write ``path`` only if nothing is there; FileExistsError otherwise. The one exclusive
        create of the store: objects, manifests, leases, the gc lock and doctor's probe.

        On a local disk a complete temporary file is hard-linked into place (``link`` refuses a
        name that exists, and a reader sees the whole file or none); elsewhere
        :func:`qmtl_engine.sharing.create_exclusive` (one PUT with ``If-None-Match: *`` on S3;
        never a folder, a bucket or a move). Returns the new file's ETag where the store has
        them (S3), else None.
        """
        if not self.is_local:
            return create_exclusive(self.fs, path, data)
        tmp = self._temporary(path, data)
        try:
            os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return None

    def _create(self, path: str, data: bytes) -> bool:
        """:meth:`create_exclusive` of an immutable file; False when the name is taken (another
        writer stored the same content)."""
        try:
            self.create_exclusive(path, data)
        except FileExistsError:
            return False
        return True

    def _publish(self, path: str, data: bytes) -> None:
        """Replace a small mutable file whole: a rename on a local disk, one PUT elsewhere, so
        a reader sees the old bytes or the new, never half of them."""
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        tmp = self._temporary(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _get(self, path: str) -> bytes:
        """A file's bytes: one GET on object storage (s3fs's ``cat_file`` would ask for the
        size first, and a missing name would be looked for as a folder too)."""
        if self.protocol in S3_PROTOCOLS:
            return bytes(self.fs.cat_file(path, max_concurrency=1))
        return bytes(self.fs.cat_file(path))

    def _list_prefix(self, folder: str) -> list[str]:
        """Every file under ``folder`` on object storage, with one listing (an empty one is
        no failure, and is not looked for again as a file)."""
        parent, name = posixpath.split(folder.rstrip("/"))
        try:
            return list(self.fs.find(parent, prefix=f"{name}/"))
        except FileNotFoundError:
            return []

    # -- objects -------------------------------------------------------------------------------
    def has_object(self, digest: str) -> bool:
        if digest in self._present:
            return True
        found = bool(self.fs.exists(self.object_path(digest)))
        if found:
            self._present.add(digest)
        return found

    def note_present(self, digest: str) -> None:
        """Record that object ``digest`` is known to be in the store (a task of this run wrote
        it), so publishing a snapshot that names it asks the store nothing."""
        self._present.add(digest)

    @staticmethod
    def _parquet_bytes(table: pa.Table) -> bytes:
        # Dictionary encoding makes OHLCV files ~1.85x larger and ~2.5x slower to write (§6).
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, use_dictionary=False, compression="snappy",
                       write_statistics=True)
        return bytes(sink.getvalue().to_pybytes())

    def put_object(self, table: pa.Table, digest: Fingerprint | None = None) -> Fingerprint:
        """Store a canonical partition table under its digest; see :meth:`store_object`."""
        return self.store_object(table, digest)[0]

    def store_object(self, table: pa.Table, digest: Fingerprint | None = None,
                     ) -> tuple[Fingerprint, int]:
        """Store a canonical partition table under its digest, with one exclusive create (no
        look first: on object storage that would be a second request). Returns the digest and
        the bytes written (0 when another writer had stored it)."""
        digest = digest or partition_digest(table)
        data = self._parquet_bytes(table)
        path = self.object_path(digest.value)
        written = len(data) if self._create(path, data) else self._settle(path, digest, data)
        if written:  # ours: known to be there. Another writer's may yet be removed by it (a
            self._present.add(digest.value)  # refused request takes back what it wrote)
        return digest, written

    def remove_created(self, digests: Collection[str]) -> None:
        """Take back objects a refused request wrote (they are named by nothing). An object
        another request needs is written again by that request, or its snapshot is refused
        for the missing object, never published without it."""
        for digest in digests:
            self._present.discard(digest)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.object_path(digest))

    def _settle(self, path: str, digest: Fingerprint, data: bytes) -> int:
        """The name was taken: prove the stored object is that content (a file damaged or
        planted under the name must not be pinned), and put the right bytes in its place when it
        is not. Returns the bytes written."""
        try:
            self._check_file(path, digest.value, partition=None)
            return 0
        except ObjectMissing:  # removed since (gc of an earlier copy): create it again
            return len(data) if self._create(path, data) else 0
        except ObjectCorrupted as exc:
            try:  # set aside, never deleted (as repair does): someone may want to look at it
                moved = self.quarantine(digest.value, kind="object", at_ms=_wall_ms())
            except ObjectMissing:
                moved = "(gone meanwhile)"
            _log.warning("store object %s was corrupted (%s): moved to %s, and the fetched "
                         "content written in its place", self.display(path), exc.actual, moved)
            return len(data) if self._create(path, data) else self._settle(path, digest, data)

    def read_object(self, digest: str, *, partition: str | None = None) -> pa.Table:
        return self._read_file(self.object_path(digest), digest, partition=partition)

    def _read_file(self, path: str, digest: str, *, partition: str | None) -> pa.Table:
        try:
            with self.fs.open(path, "rb") as f:
                return _parquet_table(f, shown=self.display(path), digest=digest,
                                      partition=partition)
        except FileNotFoundError:
            self._on_missing()
            raise ObjectMissing(f"store object {digest} is missing", path=self.display(path),
                                partition=partition) from None

    def check_object(self, digest: str, *, partition: str | None = None) -> pa.Table:
        """Read an object, canonicalize and re-hash it, and return it if it matches its name.

        The one object check: ``verify`` and every strategy read go through it (a remote store
        through its cache, see :meth:`_cached_object`). Raises :class:`ObjectMissing`, or
        :class:`ObjectCorrupted` for unreadable Parquet, data with no canonical form and content
        that hashes to another digest.
        """
        if self.cache is not None:
            return self._cached_object(digest, partition=partition)[0]
        return self._check_file(self.object_path(digest), digest, partition=partition)

    def _check_file(self, path: str, digest: str, *, partition: str | None) -> pa.Table:
        """Read the partition file at ``path``, re-hash it and compare with ``digest``."""
        table = self._read_file(path, digest, partition=partition)
        return _checked(table, shown=self.display(path), digest=digest, partition=partition)

    def _iter_names(self, folder: str, suffix: str) -> Iterator[str]:
        """``sha256:<hex>`` of every published file under ``folder`` (temporaries skipped)."""
        base = self._path(folder)
        if not self.fs.exists(base):
            return
        for path in sorted(self.fs.find(base)):
            name = posixpath.basename(path)
            if name.endswith(suffix) and not name.startswith(".tmp-"):
                yield "sha256:" + name[: -len(suffix)]

    def iter_objects(self) -> Iterator[str]:
        """Digests of every object in the store."""
        return self._iter_names("objects", ".parquet")

    # -- snapshots -----------------------------------------------------------------------------
    def has_snapshot(self, fingerprint: str) -> bool:
        return bool(self.fs.exists(self.snapshot_path(fingerprint)))

    def protect_objects(self, digests: Collection[str]) -> None:
        """Name objects in the writer's lease before relying on them (see
        :meth:`Lease.protect`); the caller then checks they are there. No lease: nothing."""
        lease = self.active_lease
        if lease is None or not digests:
            return
        root = self._path("")
        found = []
        for digest in digests:
            try:
                found.append(self.object_path(digest)[len(root):])
            except ValueError:
                continue  # not a digest (a malformed checkpoint entry): nothing to keep
        lease.protect(found)

    def rely_on(self, snapshot: Snapshot, *, objects: Collection[str]) -> None:
        """Make sure a snapshot about to be named, and objects of it this writer did not write,
        stay in the store: protect them under the writer's lease (see :meth:`Lease.protect`),
        then check that they are still there, publishing the manifest again if a gc removed
        it. Raises :class:`ObjectMissing` for an object a gc removed before it was protected
        (the rerun fetches it again). Without a lease there is nothing to protect against."""
        lease = self.active_lease
        if lease is None:
            return
        root = self._path("")
        paths = [self.snapshot_path(snapshot.fingerprint)] + [self.object_path(d)
                                                               for d in objects]
        lease.protect([p[len(root):] for p in paths])
        for digest in objects:
            self._present.discard(digest)
        self.put_snapshot(snapshot)  # asks again for each object; the manifest comes back

    def put_snapshot(self, snapshot: Snapshot) -> bool:
        """Publish a snapshot manifest with an exclusive create (one there already is the same
        manifest: a fingerprint names its content); True when this call wrote it. Every object
        it names must exist; objects this Store wrote are not asked for again."""
        missing = [p.digest for p in snapshot.partitions if not self.has_object(p.digest)]
        if missing:
            raise ObjectMissing(
                f"refusing to publish snapshot {snapshot.fingerprint}: "
                f"{len(missing)} of its objects are missing",
                path=self.display(self.object_path(missing[0])),
            )
        data = json.dumps(snapshot.to_dict(), indent=1, sort_keys=True).encode() + b"\n"
        return self._create(self.snapshot_path(snapshot.fingerprint), data)

    def get_snapshot(self, fingerprint: str) -> Snapshot:
        """The snapshot manifest of ``fingerprint``, checked against its name (a remote store
        reads it through its cache). Raises :class:`ObjectMissing` or :class:`ObjectCorrupted`,
        :class:`InputError` for a manifest of a newer snapshot_version."""
        if self.cache is not None:
            return self._cached_snapshot(fingerprint)[0]
        path = self.snapshot_path(fingerprint)
        return _parsed_snapshot(self._snapshot_bytes(path, fingerprint), fingerprint,
                                shown=self.display(path))

    def _snapshot_bytes(self, path: str, fingerprint: str) -> bytes:
        try:
            return self._get(path)
        except FileNotFoundError:
            self._on_missing()
            raise ObjectMissing(f"snapshot {fingerprint} is not in the store",
                                path=self.display(path)) from None

    def iter_snapshots(self) -> Iterator[str]:
        """Fingerprints of every snapshot manifest in the store."""
        return self._iter_names("snapshots", ".json")

    # -- access: reachability and probes (remote stores; qmtl-lock doctor) ------------------------
    #   <store>/doctor/<uuid>   probe files qmtl-lock doctor writes and removes at once
    def check_reachable(self) -> None:
        """Raise unless the store answers and its bucket exists: one request on object storage,
        nothing on a local disk or in memory (a store there is a folder made on first write).

        Raises :class:`StoreError` for a bucket that does not exist (qmtl-lock never creates
        one), :class:`StoreUnavailable` when the service cannot be reached or refuses access,
        :class:`InputError` when the file system refuses its options.
        """
        from qmtl_engine.store_access import BUCKET_PROTOCOLS, S3_PROTOCOLS

        if not self.remote:
            return
        bucket, _, prefix = self.root.strip("/").partition("/")
        try:
            if self.protocol in S3_PROTOCOLS:
                # a listing of the store's own prefix, not HeadBucket: a policy that grants
                # ListBucket only under a prefix refuses HeadBucket, and a missing bucket is
                # NoSuchBucket either way
                self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/".lstrip("/"),
                                MaxKeys=1)
            elif self.protocol in BUCKET_PROTOCOLS:
                self.fs.info(bucket)
            else:
                self.fs.exists(self.root)
        except FileNotFoundError:
            raise StoreError(f"bucket {bucket} does not exist at {self.endpoint}", url=self.url,
                             fix="qmtl-lock never creates buckets: create it (for S3: "
                             f"`aws s3 mb s3://{bucket}`) or fix `store:` in seamless.yaml"
                             ) from None
        except TypeError as exc:  # the backend's client refused an option given to it
            raise InputError(f"the {self.protocol}:// file system refuses the store options: "
                             f"{without_credentials(str(exc))}",
                             where="seamless.yaml, `store: options:`",
                             fix="fix or remove the option; the options are fsspec's for this "
                             "protocol (s3fs.S3FileSystem's for s3://)") from None
        self._bucket_seen = True

    def _on_missing(self) -> None:
        """A file the store should hold is not there. On object storage, say so instead when it
        is the whole bucket that is missing (asked once per store)."""
        if self.remote and not self._bucket_seen:
            self.check_reachable()

    def _probe_path(self) -> str:
        return self._path("doctor", uuid.uuid4().hex)

    def probe_write(self) -> None:
        """Write a small file under ``doctor/`` and remove it. Raises OSError (or
        :class:`StoreUnavailable`) when the store cannot be written."""
        path = self._probe_path()
        if not self.remote:  # a local store may not exist yet: its folders are made on write
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.pipe_file(path, b"qmtl-lock doctor: write probe\n")
        self.fs.rm(path)
        self._tidy_probes()

    def probe_exclusive_create(self) -> bool | None:
        """Create one file under ``doctor/`` exclusively, twice: True when the second create is
        refused (conditional writes are honoured), False when it succeeded (the server ignores
        ``If-None-Match``), None when the store refused even the first (no conditional writes
        at all). The file is removed either way."""
        path = self._probe_path()
        try:
            try:
                self.create_exclusive(path, b"first\n")  # what every immutable write uses
            except StoreUnavailable as exc:
                if exc.kind != "failed":
                    raise  # unreachable, denied: nothing learnt about conditions
                return None  # the server refused the condition itself (501 Not Implemented)
            try:
                self.create_exclusive(path, b"second\n")
            except FileExistsError:
                return True
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path)
            self._tidy_probes()

    def _tidy_probes(self) -> None:
        """Remove the empty ``doctor/`` folder a probe left on a local disk (object storage has
        no folders; another probe still running keeps it)."""
        if not self.remote:
            with contextlib.suppress(OSError):
                self.fs.rmdir(self._path("doctor"))

    # -- read-through cache (remote stores): immutable files, verified on every read --------------
    def _cached_object(self, digest: str, *, partition: str | None) -> tuple[pa.Table, int]:
        """Object ``digest``, verified, from the cache or else from the store (then cached), and
        the bytes fetched from the store (0: the cache had it). A cached copy that does not
        verify is dropped and fetched again; the store's copy is verified like any read."""
        if self.cache is None:
            return self._check_file(self.object_path(digest), digest, partition=partition), 0
        local = self.cache.object_file(digest)
        data = self.cache.read(local)
        if data is not None:
            try:
                table = _parquet_table(_buffer(data), shown=str(local), digest=digest,
                                       partition=partition)
                return _checked(table, shown=str(local), digest=digest, partition=partition), 0
            except ObjectCorrupted:
                self.cache.drop(local)
        path = self.object_path(digest)
        try:
            data = self._get(path)
        except FileNotFoundError:
            self._on_missing()
            raise ObjectMissing(f"store object {digest} is missing", path=self.display(path),
                                partition=partition) from None
        shown = self.display(path)
        table = _parquet_table(_buffer(data), shown=shown, digest=digest, partition=partition)
        table = _checked(table, shown=shown, digest=digest, partition=partition)
        self.cache.write(local, data)
        return table, len(data)

    def _cached_snapshot(self, fingerprint: str) -> tuple[Snapshot, int]:
        """:meth:`_cached_object` for the snapshot manifest of ``fingerprint``."""
        path = self.snapshot_path(fingerprint)
        if self.cache is None:
            raw = self._snapshot_bytes(path, fingerprint)
            return _parsed_snapshot(raw, fingerprint, shown=self.display(path)), 0
        local = self.cache.snapshot_file(fingerprint)
        cached = self.cache.read(local)
        if cached is not None:
            try:
                return _parsed_snapshot(cached, fingerprint, shown=str(local)), 0
            except QmtlLockError:  # corrupted, or unreadable here: the store's copy decides
                self.cache.drop(local)
        data = self._snapshot_bytes(path, fingerprint)
        snap = _parsed_snapshot(data, fingerprint, shown=self.display(path))
        self.cache.write(local, data)
        return snap, len(data)

    def pull_snapshot(self, fingerprint: str) -> tuple[Snapshot, int]:
        """Bring the snapshot manifest of ``fingerprint`` into the cache, verified; return it
        and the bytes fetched (0 when the cache had it, or there is no cache)."""
        return self._cached_snapshot(fingerprint)

    def pull_object(self, digest: str, *, partition: str | None = None) -> int:
        """Bring object ``digest`` into the cache, verified; return the bytes fetched (0 when
        the cache had it, or there is no cache: then it is only verified)."""
        return self._cached_object(digest, partition=partition)[1]

    # -- job checkpoints: one small object per finished window ----------------------------------
    #   <store>/jobs/<job key>/<start>-<end>.json
    def job_folder(self, key: str) -> str:
        return self._path("jobs", key)

    def checkpoint_path(self, key: str, start: int, end: int) -> str:
        return self._path("jobs", key, f"{start}-{end}.json")

    def write_checkpoint(self, key: str, start: int, end: int, entry: dict[str, Any]) -> None:
        """Record one finished window of job ``key``: its own small object, so writers of
        other windows (threads, workers, machines) never rewrite each other's."""
        payload = {"job_version": JOB_VERSION, "start": start, "end": end, **entry}
        self._publish(self.checkpoint_path(key, start, end),
                      json.dumps(payload, sort_keys=True).encode())

    def read_checkpoints(self, key: str) -> dict[str, dict[str, Any]]:
        """Every finished window of job ``key`` by ``"<start>-<end>"``. A window whose file is
        torn, of another version or not named for its own window is left out: a checkpoint is
        only an optimisation (and what it names is proven before it is reused)."""
        folder = self.job_folder(key)
        if self.is_local:
            if not os.path.isdir(folder):
                return {}
            paths = [posixpath.join(folder, n) for n in os.listdir(folder)]
        else:
            self.fs.invalidate_cache(folder)  # another writer may have added windows
            paths = self._list_prefix(folder)
        found: dict[str, dict[str, Any]] = {}
        for path in sorted(paths):
            name = posixpath.basename(path)
            if name.startswith(".tmp-") or not name.endswith(".json"):
                continue
            try:
                with self.fs.open(path, "rb") as f:
                    data = json.loads(f.read())
            except (FileNotFoundError, ValueError, UnicodeDecodeError):
                continue
            if not isinstance(data, dict) or data.get("job_version") != JOB_VERSION:
                continue
            span = name.removesuffix(".json")
            if span != f"{data.get('start')}-{data.get('end')}":
                continue
            found[span] = data
        return found

    def discard_job(self, key: str, windows: Collection[tuple[int, int]] | None = None) -> None:
        """Forget job ``key``'s checkpoints once its snapshot is published: those of
        ``windows`` when given (one request on object storage, no listing), else every one
        found. A cooperating writer of the same request that removed them first is no
        failure."""
        folder = self.job_folder(key)
        if self.is_local:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            self._folders.clear()
            return
        self.fs.invalidate_cache(folder)
        if windows is not None:
            paths = [self.checkpoint_path(key, start, end) for start, end in windows]
        else:
            paths = self._list_prefix(folder)
        if paths:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(paths)

    # -- references: a request's finished snapshot, until a lock pins it -------------------------
    #   <store>/refs/<job key>.json   {"ref_version": 1, "fingerprint": ..., "request": ...}
    def ref_path(self, key: str) -> str:
        return self._path("refs", f"{key}.json")

    def write_ref(self, key: str, fingerprint: str, *, request: str) -> None:
        """Name the finished snapshot of job ``key``, so that a run that dies before its lock is
        written (a crash, a failed lock write, another symbol's failure) loses no finished work:
        the next plan of the same request reuses every partition of it."""
        payload = {"ref_version": REF_VERSION, "fingerprint": fingerprint, "request": request}
        self._publish(self.ref_path(key), json.dumps(payload, sort_keys=True).encode())

    def read_ref(self, key: str) -> str | None:
        """The fingerprint job ``key`` finished with, or None (no reference, or an unreadable
        one: a reference is only an optimisation, and what it names is checked on use)."""
        try:
            data = json.loads(self._get(self.ref_path(key)))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or data.get("ref_version") != REF_VERSION:
            return None
        fingerprint = data.get("fingerprint")
        return fingerprint if isinstance(fingerprint, str) else None

    def delete_ref(self, key: str) -> None:
        """Drop the reference of job ``key`` once a lock pins its snapshot."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.ref_path(key))

    def delete(self, path: str) -> None:
        self._present.clear()  # what was known to be stored may be what goes
        self._folders.clear()
        self.fs.rm(path)

    # -- listing, removing and copying what is stored (gc) ---------------------------------------
    def inventory(self) -> StoreInventory:
        """Every file this store wrote, by what it is, with paths relative to the root.

        Snapshot manifests by fingerprint, objects by digest, jobs (checkpoint and staged objects)
        by key, and the temporaries of interrupted writes. A file qmtl-lock did not write is left
        out, so nothing built on the inventory ever removes it.
        """
        temporaries: list[StoredFile] = []
        snapshots = self._content_files("snapshots", ".json", temporaries)
        objects = self._content_files("objects", ".parquet", temporaries)
        jobs = self._jobs(temporaries)
        return StoreInventory(snapshots, objects, jobs, tuple(temporaries))

    def _listed(self, folder: str) -> dict[str, StoredFile]:
        """Every file under ``folder``, by path relative to the root, in path order."""
        prefix = self.root.rstrip("/") + "/"
        base = self._path(folder)
        if not self.fs.exists(base):
            return {}
        found = {}
        for path, info in self.fs.find(base, detail=True).items():
            if info.get("type", "file") != "file" or not path.startswith(prefix):
                continue
            rel = path[len(prefix):]
            found[rel] = StoredFile(rel, int(info.get("size") or 0), _mtime_ms(info),
                                    _etag(info))
        return dict(sorted(found.items()))

    def _content_files(self, folder: str, suffix: str,
                       temporaries: list[StoredFile]) -> dict[str, StoredFile]:
        """``<folder>/<aa>/<hex><suffix>`` files by ``sha256:<hex>``; temporaries set aside."""
        found: dict[str, StoredFile] = {}
        for rel, f in self._listed(folder).items():
            parts = rel.split("/")
            if parts[-1].startswith(".tmp-"):
                temporaries.append(f)
                continue
            hexd = parts[-1].removesuffix(suffix)
            if (len(parts) == 3 and parts[-1].endswith(suffix) and parts[1] == hexd[:2]
                    and len(hexd) == 64 and set(hexd) <= set("0123456789abcdef")):
                found["sha256:" + hexd] = f
        return found

    def _jobs(self, temporaries: list[StoredFile]) -> tuple[StoredJob, ...]:
        """Jobs by key: window checkpoints ``jobs/<key>/…``, and the checkpoint
        ``jobs/<key>.json`` and staged objects ``jobs/<key>.staged/…`` of version 1."""
        checkpoints: dict[str, StoredFile] = {}
        staged: dict[str, list[StoredFile]] = {}
        windows: dict[str, list[StoredFile]] = {}
        for rel, f in self._listed("jobs").items():
            parts = rel.split("/")
            if parts[-1].startswith(".tmp-"):
                temporaries.append(f)
            elif len(parts) == 2 and parts[1].endswith(".json"):
                checkpoints[parts[1].removesuffix(".json")] = f
            elif len(parts) >= 3 and parts[1].endswith(".staged"):
                staged.setdefault(parts[1].removesuffix(".staged"), []).append(f)
            elif len(parts) == 3:
                windows.setdefault(parts[1], []).append(f)
        return tuple(StoredJob(key, checkpoints.get(key), tuple(staged.get(key, ())),
                               tuple(windows.get(key, ())))
                     for key in sorted(set(checkpoints) | set(staged) | set(windows)))

    def _within(self, path: str) -> str:
        """A path relative to the root, as :meth:`inventory` lists it, on the filesystem."""
        parts = path.split("/")
        if not path or path.startswith("/") or ".." in parts:
            raise ValueError(f"not a path inside the store: {path!r}")
        return self._path(path)

    def remove(self, path: str, *, unless_changed_from: StoredFile | None = None) -> bool:
        """Remove one listed file. Raises FileNotFoundError when it is already gone.

        With ``unless_changed_from`` (the file as a listing saw it) the delete is conditional:
        on S3 it carries ``If-Match`` with the listed ETag; elsewhere size and file time are
        read again right before the unlink. A file that changed since is kept: returns False.
        """
        self._present.clear()  # what was known to be stored may be what goes
        self._folders.clear()
        full = self._within(path)
        listed = unless_changed_from
        if listed is not None and listed.etag is not None and is_s3(self.fs):
            return delete_if_match(self.fs, full, listed.etag)
        if listed is not None:
            now = self._stat(path)
            if (now.size, now.mtime_ms, now.etag) != (listed.size, listed.mtime_ms,
                                                       listed.etag or now.etag):
                return False
        self.fs.rm(full)
        return True

    def remove_folder(self, path: str, *, only_if_empty: bool = False) -> None:
        """Remove a listed folder (a job's staged objects) and all it holds, if it is there;
        with ``only_if_empty``, only when no file is left in it (one written after gc listed
        the folder stays, and so does the folder)."""
        full = self._within(path)
        self._folders.clear()
        if not self.fs.exists(full):
            return
        if only_if_empty and self.fs.find(full):
            return
        self.fs.rm(full, recursive=True)

    def copy_to(self, path: str, other: Store) -> None:
        """Copy one listed file to the same relative path in ``other``: to a temporary name
        there, then moved into place, so ``other`` never shows half a file. Raises OSError when
        the copy does not have the original's size."""
        import shutil

        src, dest = self._within(path), other._within(path)
        if other.remote:  # one PUT is whole or absent: no temporary, no folder (no bucket made)
            with self.fs.open(src, "rb") as reader:
                other.fs.pipe_file(dest, reader.read())
        else:
            parent = posixpath.dirname(dest)
            other.fs.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(dest)}")
            with self.fs.open(src, "rb") as reader, other.fs.open(tmp, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
            other.fs.mv(tmp, dest)
        expected, copied = self.fs.size(src), other.fs.size(dest)
        if copied != expected:
            raise OSError(f"the copy {other.display(dest)} has {copied} bytes, not {expected}")

    def overlaps(self, other: Store) -> bool:
        """Whether one store's root lies inside the other's, on the same kind of filesystem."""
        mine, theirs = self.root.rstrip("/") + "/", other.root.rstrip("/") + "/"
        return type(self.fs) is type(other.fs) and (
            mine.startswith(theirs) or theirs.startswith(mine))

    # -- quarantine (qmtl-lock repair): corrupted files set aside, never deleted -------------------
    def quarantine(self, name: str, *, kind: Literal["object", "snapshot"], at_ms: int) -> str:
        """Move a corrupted object (``name`` is its digest) or snapshot manifest (``kind=
        "snapshot"``, ``name`` is its fingerprint) to ``quarantine/<UTC time>/<its path>``.

        Nothing reads from ``quarantine/`` and :meth:`inventory` does not list it, so the file is
        out of every read and out of gc's reach, kept for whoever wants to look at it. ``at_ms``
        names the folder (one per repair run); a path already taken there gets a ``-2``, ``-3``
        … folder. Returns where the file went, as :meth:`display` writes it. Raises
        :class:`ObjectMissing` when there is no such file.
        """
        src = self.object_path(name) if kind == "object" else self.snapshot_path(name)
        self._present.discard(name)
        if not self.fs.exists(src):
            raise ObjectMissing(f"no {kind} {name} in the store to move aside",
                                path=self.display(src))
        rel = src[len(self._path("")):]
        stamp = datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        dest, n = self._path("quarantine", stamp, rel), 1
        while self.fs.exists(dest):
            n += 1
            dest = self._path("quarantine", f"{stamp}-{n}", rel)
        if not self.remote:  # object storage has no folders, and makedirs would make a bucket
            self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
        self.fs.mv(src, dest)
        self._folders.clear()
        return self.display(dest)

    # -- sharing one store: the gc lock, pins, fresh listings (see qmtl_engine.sharing) ------------
    #   <store>/locks/gc.json               GcLockRecord of the one gc that may delete
    #   <store>/pins/<project>/<ref>.json   the fingerprints a project's lock pins on a ref
    def forget_listings(self) -> None:
        """Drop the filesystem's cached listings (s3fs keeps them), so the next one is fresh."""
        self.fs.invalidate_cache()

    def _stat(self, path: str) -> StoredFile:
        """One listed path as the filesystem reports it now; FileNotFoundError when gone."""
        full = self._within(path)
        self.fs.invalidate_cache(full)
        info = self.fs.info(full)
        return StoredFile(path, int(info.get("size") or 0), _mtime_ms(info), _etag(info))

    def gc_lock(self, owner: str, *, heartbeat_s: float | None = None,
                timeout_ms: int | None = None) -> GcLock:
        """The store's exclusive gc lock, ``locks/gc.json``, for a ``with`` block (or
        :meth:`GcLock.acquire` and :meth:`GcLock.release`).

        Acquiring creates the file exclusively; when another gc holds it, raises
        :class:`StoreBusy` naming the holder, unless that holder stopped refreshing it for
        ``timeout_ms`` (:data:`LEASE_TIMEOUT_MS`): such a stale lock is removed (only if it is
        still the file that was judged stale) and taken over. A heartbeat thread refreshes it
        every ``heartbeat_s`` seconds (:data:`GC_LOCK_HEARTBEAT_S`, and at least four times per
        timeout); :meth:`GcLock.ensure_held` says whether it is still this holder's before
        each delete.
        """
        timeout = LEASE_TIMEOUT_MS if timeout_ms is None else timeout_ms
        beat = min(GC_LOCK_HEARTBEAT_S, timeout / 4000) if heartbeat_s is None else heartbeat_s
        return GcLock(self, owner, heartbeat_s=beat, timeout_ms=timeout)

    held_gc_lock: GcLock | None = None  # the gc lock this Store object holds, if any

    def gc_lock_holder(self) -> tuple[GcLockRecord, StoredFile] | None:
        """Who holds the gc lock (and its file as now listed), or None when nobody does."""
        full = self._path(GC_LOCK_PATH)
        self.fs.invalidate_cache(full)
        try:  # one GET when there is none (the usual answer, asked by every writer)
            data = self._get(full)
            f = self._stat(GC_LOCK_PATH)
        except FileNotFoundError:
            return None
        return GcLockRecord.parse(data, f.mtime_ms), f

    def pin_path(self, project: str, ref: str) -> str:
        """``<store>/pins/<project>/<ref>.json``; ValueError for a name that cannot be a key."""
        return self._path("pins", check_key_name("project", project),
                          f"{check_key_name('ref', ref)}.json")

    def put_pin(self, project: str, ref: str, data: bytes) -> None:
        """Register (or replace) the pins of ``project`` on ``ref``: one small mutable file."""
        self._publish(self.pin_path(project, ref), data)

    def pins(self) -> tuple[StoredPin, ...]:
        """Every registered pin, in path order, listed afresh. One that cannot be read is
        listed with its ``problem``: gc must then delete nothing."""
        self.forget_listings()
        found = []
        for rel in self._listed("pins"):
            parts = rel.split("/")
            if len(parts) != 3 or not parts[2].endswith(".json") or parts[2].startswith("."):
                continue  # temporaries of a push, files qmtl-lock did not write
            try:
                data = self._get(self._within(rel))
            except FileNotFoundError:
                continue  # removed since the listing (`pins remove`)
            found.append(parse_pin(rel, data))
        return tuple(found)

    def remove_pin(self, project: str, ref: str) -> bool:
        """Unregister the pins of ``project`` on ``ref``; False when there were none."""
        full = self.pin_path(project, ref)
        self.fs.invalidate_cache(full)
        if not self.fs.exists(full):  # S3 deletes a missing key without a word
            return False
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(full)
        return True

    # -- leases: a running resolve, made visible to gc (gcsafe) ----------------------------------
    #   <store>/leases/<uuid>.json   owner, pid, host, start and last heartbeat of one holder
    def lease(self, owner: str, *, heartbeat_s: float | None = None, wait_s: float = GC_WAIT_S,
              on_wait: Callable[[str], None] | None = None) -> Lease:
        """A lease on this store for the length of a ``with`` block::

            with store.lease(owner="resolve seamless.yaml"):
                ...  # gc keeps every job and everything written from now on

        Entering writes ``leases/<uuid>.json`` with an exclusive create, then looks for a live
        gc lock (:meth:`gc_lock`): while a gc runs, it removes its lease again, tells
        ``on_wait`` (once) and waits up to ``wait_s`` seconds for the gc to finish, so that gc
        never deletes what this writer is about to name (:mod:`qmtl_engine.sharing`). Then it
        starts a daemon thread that refreshes the heartbeat every ``heartbeat_s`` seconds
        (:data:`LEASE_HEARTBEAT_S`); leaving stops it and removes the file. A holder that dies
        leaves the file behind, and it goes stale :data:`LEASE_TIMEOUT_MS` after its last
        heartbeat. Entering raises OSError when the store cannot be written and
        :class:`StoreBusy` when the gc is still running after ``wait_s``.
        """
        return Lease(self, owner, LEASE_HEARTBEAT_S if heartbeat_s is None else heartbeat_s,
                     wait_s=wait_s, on_wait=on_wait)

    def leases(self) -> tuple[StoredLease, ...]:
        """Every lease in the store, live or left by a holder that died, in path order (listed
        afresh: never from a cached listing).

        A lease file that cannot be read (torn mid-write, or from a newer qmtl-lock) is listed
        with only its file time as start and heartbeat, so it still protects until it goes stale.
        """
        self.forget_listings()
        found = []
        for rel, f in self._listed("leases").items():
            parts = rel.split("/")
            if len(parts) == 2 and parts[1].endswith(".json") and not parts[1].startswith("."):
                lease = self._read_lease(f)
                if lease is not None:
                    found.append(lease)
        return tuple(found)

    def _read_lease(self, f: StoredFile) -> StoredLease | None:
        """One lease file; None when it is gone (its holder just left)."""
        try:
            with self.fs.open(self._within(f.path), "rb") as reader:
                data = json.loads(reader.read())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            data = None
        try:
            if isinstance(data, dict) and data.get("lease_version") == LEASE_VERSION:
                return StoredLease(f.path, str(data["owner"]), int(data["pid"]),
                                   str(data["host"]), int(data["started_ms"]),
                                   int(data["heartbeat_ms"]),
                                   tuple(str(p) for p in data.get("protects", ())))
        except (KeyError, TypeError, ValueError):
            pass
        return StoredLease(f.path, None, None, None, f.mtime_ms, f.mtime_ms)

    def remove_lease(self, lease: StoredLease) -> bool:
        """Remove a lease found stale, and the temporaries its heartbeats left, unless its
        heartbeat moved since it was listed (its holder woke up). Returns whether it was removed
        (False also when it is already gone)."""
        current = next((found for found in self.leases() if found.path == lease.path), None)
        if current is None or current.heartbeat_ms != lease.heartbeat_ms:
            return False
        name = posixpath.basename(lease.path)
        for rel in self._listed("leases"):
            if rel.startswith("leases/.tmp-") and rel.endswith(f"-{name}"):
                self.remove(rel)
        try:
            self.remove(lease.path)
        except FileNotFoundError:
            return False
        return True


@dataclass(frozen=True)
class StoredFile:
    """One file as :meth:`Store.inventory` lists it."""

    path: str  # relative to the store root, '/'-separated
    size: int
    mtime_ms: int | None  # None: the filesystem does not say
    etag: str | None = None  # the store's version tag (S3), for deletes conditional on it


@dataclass(frozen=True)
class StoredJob:
    """A job's resume checkpoints: one file per finished window (``jobs/<key>/``), or, from
    version 1, one checkpoint (``jobs/<key>.json``) and staged objects (``jobs/<key>.staged/``)."""

    key: str
    checkpoint: StoredFile | None
    staged: tuple[StoredFile, ...] = ()
    windows: tuple[StoredFile, ...] = ()

    @property
    def name(self) -> str:
        """The job as listings name it: ``jobs/<key>``."""
        return posixpath.join("jobs", self.key)

    @property
    def staged_folder(self) -> str:
        """The folder of its staged objects (version 1), relative to the store root."""
        return posixpath.join("jobs", f"{self.key}.staged")

    @property
    def windows_folder(self) -> str:
        """The folder of its window checkpoints, relative to the store root."""
        return posixpath.join("jobs", self.key)

    @property
    def mtime_ms(self) -> int | None:
        """When the job last wrote anything (None if any file time is unknown)."""
        files = ([self.checkpoint] if self.checkpoint else []) + list(self.staged) + list(
            self.windows)
        times = [f.mtime_ms for f in files]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)


@dataclass(frozen=True)
class StoreInventory:
    """What :meth:`Store.inventory` found."""

    snapshots: dict[str, StoredFile]  # by fingerprint
    objects: dict[str, StoredFile]  # by digest
    jobs: tuple[StoredJob, ...]
    temporaries: tuple[StoredFile, ...]  # .tmp-* files of interrupted writes


def _install_hint(url: str) -> str:
    """How to install the fsspec backend of ``url``'s protocol: our extra where there is one."""
    from fsspec.registry import known_implementations  # `fsspec.registry` is another object

    protocol = fsspec.core.split_protocol(url)[0] or "file"
    known = known_implementations.get(protocol, {})
    package = str(known.get("class", "")).split(".")[0]
    if package == "s3fs":
        return "pip install 'qmtl-lock[s3]'"
    return f"pip install {package}" if package else f"install the fsspec backend for {protocol}://"


def _reopen(url: str, storage_options: dict[str, Any],
            cache: str | os.PathLike[str] | bool | None) -> Store:
    """A store rebuilt from what :meth:`Store.__reduce__` kept (unpickling)."""
    return Store(url, storage_options=storage_options, cache=cache)


def _buffer(data: bytes) -> Any:
    import pyarrow as pa

    return pa.BufferReader(data)


def _parquet_table(source: Any, *, shown: str, digest: str, partition: str | None) -> pa.Table:
    """The table in the Parquet file ``source`` (a file object or buffer), or
    :class:`ObjectCorrupted` naming ``shown`` when it is not readable Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # ParquetFile, not read_table: the latter imports pyarrow.dataset and pandas
        return pq.ParquetFile(source).read()
    except StoreUnavailable:
        raise  # the store failed mid-read: nothing says the file is bad
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ObjectCorrupted(path=shown, expected=digest, actual=f"<unreadable Parquet: {exc}>",
                              partition=partition) from None


def _checked(table: pa.Table, *, shown: str, digest: str, partition: str | None) -> pa.Table:
    """``table`` if its canonical content hashes to ``digest``; :class:`ObjectCorrupted`
    naming ``shown`` otherwise."""
    import pyarrow as pa

    try:
        actual = partition_digest(table)
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise ObjectCorrupted(path=shown, expected=digest, actual=f"<not canonical data: {exc}>",
                              partition=partition) from None
    if actual.value != digest:
        raise ObjectCorrupted(path=shown, expected=digest, actual=actual.value,
                              partition=partition)
    return table


def _parsed_snapshot(raw: bytes, fingerprint: str, *, shown: str) -> Snapshot:
    """The snapshot manifest in ``raw`` if it describes ``fingerprint``; else
    :class:`ObjectCorrupted` naming ``shown`` (:class:`InputError` for a newer version)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ObjectCorrupted(path=shown, expected=fingerprint,
                              actual=f"<unreadable JSON: {exc}>", kind="snapshot") from None
    if not isinstance(data, dict):
        raise ObjectCorrupted(path=shown, expected=fingerprint,
                              actual=f"<malformed: a JSON {type(data).__name__}, not an "
                              "object>", kind="snapshot")
    try:
        snap = Snapshot.from_dict(data, path=shown)
        recomputed = dataset_fingerprint(snap.header, [p.ref() for p in snap.partitions])
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ObjectCorrupted(path=shown, expected=fingerprint,
                              actual=f"<malformed: {exc}>", kind="snapshot") from None
    algorithm = data.get("header", {}).get("algorithm")
    if algorithm != FINGERPRINT_ALGORITHM:
        raise ObjectCorrupted(path=shown, expected=fingerprint,
                              actual=f"<unknown algorithm {algorithm}>", kind="snapshot")
    if recomputed.value != fingerprint:
        raise ObjectCorrupted(path=shown, expected=fingerprint,
                              actual=recomputed.value, kind="snapshot")
    if snap.fingerprint != fingerprint:  # content fine, the fingerprint field was edited
        raise ObjectCorrupted(path=shown, expected=fingerprint,
                              actual=str(snap.fingerprint), kind="snapshot")
    try:  # the scheme is not hashed: check it against the windows, which are
        on_scheme = snap.follows_scheme()
    except (TypeError, ValueError, OverflowError):  # windows that are not even numbers
        on_scheme = False
    if not on_scheme:
        raise ObjectCorrupted(path=shown, expected=fingerprint,
                              actual=f"<malformed: its partitions are not the "
                              f"{snap.partition} windows of its coverage>", kind="snapshot")
    return snap


def _etag(info: dict[str, Any]) -> str | None:
    etag = info.get("ETag") or info.get("etag")
    return etag if isinstance(etag, str) else None


def _mtime_ms(info: dict[str, Any]) -> int | None:
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


# -- leases (gcsafe): what a running resolve holds, and how gc reads it --------------------------
LEASE_VERSION = 1
LEASE_HEARTBEAT_S = 60.0  # how often a holder refreshes its lease
LEASE_TIMEOUT_MS = 10 * 60_000  # a lease not refreshed for this long has lost its holder

_lease_log = _log = logging.getLogger("qmtl_lock.store")


def _wall_ms() -> int:
    # Leases age in real elapsed time, never by a pinned ``now`` (QMTL_LOCK_NOW): liveness is
    # about processes that run now.
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class StoredLease:
    """One lease as :meth:`Store.leases` lists it (times in epoch ms, by the holder's clock)."""

    path: str  # relative to the store root: leases/<uuid>.json
    owner: str | None  # None: the file could not be read (torn, or from a newer qmtl-lock)
    pid: int | None
    host: str | None
    started_ms: int | None  # the file time when unreadable; None when that is unknown too
    heartbeat_ms: int | None
    # store paths its holder relies on though it did not write them (content it found already
    # stored and names in its result): gc keeps them while the lease is live
    protects: tuple[str, ...] = ()

    def is_stale(self, now_ms: int, timeout_ms: int = LEASE_TIMEOUT_MS) -> bool:
        """Whether its holder has not refreshed it for more than ``timeout_ms`` (it died, or
        lost the store). A lease of unknown age is never stale."""
        return self.heartbeat_ms is not None and now_ms - self.heartbeat_ms > timeout_ms


class Lease:
    """A held lease: a context manager (see :meth:`Store.lease`)."""

    def __init__(self, store: Store, owner: str, heartbeat_s: float, *,
                 wait_s: float = GC_WAIT_S, on_wait: Callable[[str], None] | None = None,
                 gc_timeout_ms: int = LEASE_TIMEOUT_MS) -> None:
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.wait_s = wait_s
        self.on_wait = on_wait
        self.gc_timeout_ms = gc_timeout_ms
        self.path = posixpath.join("leases", f"{uuid.uuid4().hex}.json")
        now = _wall_ms()
        self._record: dict[str, Any] = {
            "lease_version": LEASE_VERSION, "owner": owner, "pid": os.getpid(),
            "host": socket.gethostname(), "started_ms": now, "heartbeat_ms": now}
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._refresh, daemon=True,
                                      name=f"qmtl-lock lease {self.path}")
        self._writing = threading.Lock()  # protect() and the heartbeat write one record

    def _bytes(self) -> bytes:
        return json.dumps(self._record, sort_keys=True).encode() + b"\n"

    def protect(self, paths: Collection[str]) -> None:
        """Name in the lease store files this holder relies on without having written them
        (content it found already stored), so gc keeps them while the lease lives; then, if a
        gc is running, wait for it to finish. The caller must check afterwards that the files
        are still there (a gc that ran before this call may have removed them).

        The order closes the race with gc: gc takes its lock before it lists leases, and a
        holder writes its protections before it looks for that lock. So a gc either sees them,
        or holds its lock already when the holder looks, and the holder waits it out.
        """
        with self._writing:
            known = set(self._record.get("protects", ()))
            if set(paths) <= known:
                return
            self._record["protects"] = sorted(known | set(paths))
            self._record["heartbeat_ms"] = _wall_ms()
            self.store._publish(self.store._within(self.path), self._bytes())
        if self._running_gc() is not None:
            self._wait_for_gc(time.monotonic() + self.wait_s)

    def __enter__(self) -> Lease:
        """Write the lease, then make sure no gc runs (see :meth:`Store.lease`)."""
        full = self.store._within(self.path)
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            self._record["started_ms"] = self._record["heartbeat_ms"] = _wall_ms()
            self.store.create_exclusive(full, self._bytes())  # a uuid: "exists" is a bug
            try:
                gc = self._running_gc()
            except BaseException:
                self._step_back(full)
                raise
            if gc is None:
                break
            # A gc holds the store: step back, so that it neither stops for this lease nor
            # deletes what this writer names once it goes on, and wait for it to finish.
            self._step_back(full)
            if not told:
                told = True
                text = (f"waiting for gc to finish on the store "
                        f"{without_credentials(self.store.url)} ({gc.holder(_wall_ms())})…")
                _lease_log.warning("%s", text)
                if self.on_wait is not None:
                    self.on_wait(text)
            self._wait_for_gc(deadline)
        self._beat.start()
        self.store.active_lease = self
        return self

    def _running_gc(self) -> GcLockRecord | None:
        """The record of a gc that holds the store now, or None (no gc, or a stale lock)."""
        found = self.store.gc_lock_holder()
        if found is None or found[0].is_stale(_wall_ms(), self.gc_timeout_ms):
            return None
        return found[0]

    def _step_back(self, full: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.store.fs.rm(full)

    def _wait_for_gc(self, deadline: float) -> None:
        """Return once no gc holds the store; :class:`StoreBusy` at ``deadline``."""
        while True:
            gc = self._running_gc()
            if gc is None:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreBusy(
                    f"a gc has held the store for longer than {self.wait_s:g} s "
                    f"({gc.holder(_wall_ms())}); {self._record['owner']} gave up waiting and "
                    "wrote nothing", url=self.store.url,
                    path=self.store.display(self.store._path(GC_LOCK_PATH)),
                    holder=gc.holder(_wall_ms()),
                    fix="run it again once that gc has finished; a gc lock whose holder died "
                    f"is ignored {_minutes(self.gc_timeout_ms)} after its last heartbeat")
            time.sleep(min(GC_POLL_S, left))

    def _refresh(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                # One small mutable file (Store._publish): gc never reads half a lease; a lease
                # gc removed while its holder was paused comes back.
                with self._writing:
                    self._record["heartbeat_ms"] = _wall_ms()
                    self.store._publish(self.store._within(self.path), self._bytes())
            except OSError as exc:  # the store is unreachable for now: try again next beat
                _lease_log.warning("could not refresh lease %s: %s", self.path, exc)

    def __exit__(self, *exc: object) -> None:
        if self.store.active_lease is self:
            self.store.active_lease = None
        self._stop.set()
        self._beat.join()
        try:
            self.store.remove(self.path)
        except FileNotFoundError:
            pass  # gc removed it as stale while this holder was paused
        except OSError as exc:  # never hide the block's own outcome; the lease goes stale
            _lease_log.warning("could not remove lease %s: %s", self.path, exc)


# -- the gc lock (gcshare): one gc at a time, and the writers' signal to wait ---------------------
GC_LOCK_PATH = "locks/gc.json"


def _minutes(ms: int) -> str:
    return f"{ms / 60_000:g} min" if ms >= 60_000 else f"{ms / 1000:g} s"


class GcLock:
    """The store's gc lock while one gc holds it (see :meth:`Store.gc_lock`).

    Writers wait while it is live (:class:`Lease`), and a second gc refuses to start. The holder
    refreshes it every ``heartbeat_s`` seconds: on S3 with ``If-Match`` on its own last ETag,
    elsewhere after reading that the file still carries its token, so a holder that was paused
    past the timeout and replaced never writes over its successor. :meth:`ensure_held` is what
    gc asks before each delete.
    """

    def __init__(self, store: Store, owner: str, *, heartbeat_s: float,
                 timeout_ms: int) -> None:
        self.store = store
        self.owner = owner
        self.heartbeat_s = heartbeat_s
        self.timeout_ms = timeout_ms
        self.token = uuid.uuid4().hex
        self.took_over: GcLockRecord | None = None  # the stale holder this lock replaced
        self._full = store._path(GC_LOCK_PATH)
        self._started_ms = 0
        self._beat_ms = 0  # the heartbeat time of the last record this holder wrote
        self._etag: str | None = None
        self._lost: str | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GcLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _bytes(self, now_ms: int) -> bytes:
        return GcLockRecord(self.owner, os.getpid(), socket.gethostname(), self._started_ms,
                            now_ms, self.token).to_bytes()

    def acquire(self) -> GcLock:
        """Take the lock, or a stale one over; :class:`StoreBusy` when a live gc holds it."""
        for _ in range(3):  # a stale lock removed, then taken by a third gc first: look again
            self._started_ms = now = _wall_ms()
            try:
                self._etag = self.store.create_exclusive(self._full, self._bytes(now))
            except FileExistsError:
                self._take_over_stale()
                continue
            self._beat_ms = now
            self._thread = threading.Thread(target=self._refresh, daemon=True,
                                            name=f"qmtl-lock gc lock {self.token}")
            self._thread.start()
            self.store.held_gc_lock = self
            return self
        raise self._busy("other gc runs took the lock each time it was free")

    def _take_over_stale(self) -> None:
        """Remove the gc lock found in place if it is stale; :class:`StoreBusy` if it is live."""
        found = self.store.gc_lock_holder()
        if found is None:
            return  # released meanwhile
        record, listed = found
        if not record.is_stale(_wall_ms(), self.timeout_ms):
            raise self._busy(f"another gc is running on this store: {record.holder(_wall_ms())}",
                             holder=record)
        try:
            removed = self.store.remove(GC_LOCK_PATH, unless_changed_from=listed)
        except FileNotFoundError:
            return
        if removed:
            self.took_over = record
            _lease_log.warning("took over the stale gc lock of %s (stale after %s)",
                               record.holder(_wall_ms()), _minutes(self.timeout_ms))

    def _busy(self, what: str, holder: GcLockRecord | None = None) -> StoreBusy:
        who = holder.holder(_wall_ms()) if holder is not None else "several gc runs"
        return StoreBusy(
            what, url=self.store.url, path=self.store.display(self._full), holder=who,
            fix="let it finish, then run `qmtl-lock gc` again; a gc lock whose holder stopped "
            f"refreshing it for {_minutes(self.timeout_ms)} is stale and the next gc takes it "
            f"over (remove {GC_LOCK_PATH} by hand only if you know no gc is running)")

    def _refresh(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except OSError as exc:  # the store is unreachable for now: try again next beat
                _lease_log.warning("could not refresh the gc lock: %s", exc)
            if self._lost is not None:
                return

    def beat(self) -> None:
        """Refresh the heartbeat, unless the file is no longer this holder's (then it is lost)."""
        with self._guard:
            if self._lost is not None:
                return
            now = _wall_ms()
            data = self._bytes(now)
            if self._etag is not None and is_s3(self.store.fs):
                etag = put_if_match(self.store.fs, self._full, data, self._etag)
                if etag is None:
                    self._lost = f"{GC_LOCK_PATH} was removed or replaced by another process"
                    return
                self._etag = etag
            else:
                found = self.store.gc_lock_holder()
                if found is None or found[0].token != self.token:
                    self._lost = (f"{GC_LOCK_PATH} was removed or replaced by another process "
                                  f"(now held by {found[0].holder(now) if found else 'nobody'})")
                    return
                self.store._publish(self._full, data)
            self._beat_ms = now

    def ensure_held(self) -> None:
        """Raise :class:`StoreBusy` unless this holder still holds the lock and no writer can
        have judged it stale (its last heartbeat is younger than the timeout)."""
        late = _wall_ms() - self._beat_ms
        if self._lost is None and late > self.timeout_ms // 2:
            if late >= self.timeout_ms:  # paused: writers may have gone on, taking it as dead
                with self._guard:
                    self._lost = (f"its last heartbeat is {late / 1000:.1f} s old, past the "
                                  f"{_minutes(self.timeout_ms)} after which writers ignore it")
            else:
                self.beat()
        if self._lost is not None:
            raise StoreBusy(f"gc lost the store's gc lock ({self._lost}), so it stopped "
                            "deleting", url=self.store.url, path=self.store.display(self._full),
                            holder=self.owner,
                            fix="run `qmtl-lock gc` again: it lists the store afresh")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this holder's."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.store.held_gc_lock is self:
            self.store.held_gc_lock = None
        if self._lost is not None or self._thread is None:
            return
        self._thread = None
        try:
            if self._etag is not None and is_s3(self.store.fs):
                delete_if_match(self.store.fs, self._full, self._etag)
                return
            found = self.store.gc_lock_holder()
            if found is not None and found[0].token == self.token:
                self.store.remove(GC_LOCK_PATH, unless_changed_from=found[1])
        except FileNotFoundError:
            pass
        except OSError as exc:  # the lock goes stale; never hide the run's own outcome
            _lease_log.warning("could not remove the gc lock: %s", exc)
