"""``pull``: bring what the lock pins from a remote store into the local cache, verified.

After a pull, :meth:`qmtl_lock.Lock.load` and ``qmtl-lock verify`` read only the cache: they work
with the store out of reach (a laptop on a train, a CI runner without store credentials). Each
snapshot manifest and object is verified as it is fetched, and one already cached is verified
again (a corrupted cached copy is fetched anew), so what pull leaves in the cache is what the
lock pins. A local store has no cache: there is nothing to pull.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmtl_engine import InputError, IntegrityError

from qmtl_lock.errors import PullFailed
from qmtl_lock.lockfile import read_lock
from qmtl_lock.manifest import load_manifest

if TYPE_CHECKING:
    from qmtl_engine import Store


@dataclass
class Tally:
    """Files of one kind a pull fetched, and those the cache already had (verified again)."""

    fetched: int = 0
    cached: int = 0

    def add(self, fetched_bytes: int) -> int:
        """Count one file (``fetched_bytes`` 0: it was cached); return the bytes."""
        if fetched_bytes:
            self.fetched += 1
        else:
            self.cached += 1
        return fetched_bytes


@dataclass
class PullResult:
    """What :func:`pull` did. ``cache`` is None for a store without one (a local store, or
    ``cache: false``): then nothing was read."""

    cache: str | None
    store: str
    snapshots: Tally = field(default_factory=Tally)
    objects: Tally = field(default_factory=Tally)
    bytes_fetched: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "cache": self.cache, "store": self.store,
                "snapshots": vars(self.snapshots), "objects": vars(self.objects),
                "bytes_fetched": self.bytes_fetched}


def pull(manifest_path: str | Path = "seamless.yaml", *,
         datasets: Collection[str] = ()) -> PullResult:
    """Bring every snapshot and object the lock pins (of ``datasets`` only, when named) into
    the cache, verifying each. Raises :class:`InputError` for an unknown dataset or a missing
    lock, :class:`PullFailed` when pinned files are missing or corrupted in the store, and the
    store's :class:`~qmtl_engine.StoreError` when it cannot be reached."""
    from qmtl_lock.redact import redact_text

    loaded = load_manifest(manifest_path)
    if not loaded.lock_path.exists():
        raise InputError(f"{loaded.lock_path} does not exist: pull brings what it pins",
                         where=str(loaded.lock_path), fix="run `qmtl-lock resolve` first")
    lock = read_lock(loaded.lock_path)
    unknown = sorted(set(datasets) - set(lock.datasets))
    if unknown:
        raise InputError(f"dataset {unknown[0]!r} is not in the lock", where=str(loaded.lock_path),
                         fix=f"choose from: {', '.join(sorted(lock.datasets))}")
    store = loaded.open_store()
    result = PullResult(str(store.cache.root) if store.cache else None, redact_text(store.url))
    if store.cache is None:
        return result
    seen: set[str] = set()
    problems: list[str] = []
    for name, entry in sorted(lock.datasets.items()):
        if datasets and name not in datasets:
            continue
        for symbol, sym in sorted(entry.symbols.items()):
            try:
                _pull_one(store, sym.dataset_fingerprint, seen, result)
            except IntegrityError as exc:
                problems.append(f"{name}/{symbol}: {exc.what} ({exc.where})")
    if problems:
        raise PullFailed(problems)
    return result


def _pull_one(store: Store, fingerprint: str, seen: set[str], result: PullResult) -> None:
    """One snapshot and its objects (each only once per run: snapshots share objects)."""
    if fingerprint in seen:
        return
    seen.add(fingerprint)
    snap, fetched = store.pull_snapshot(fingerprint)
    result.bytes_fetched += result.snapshots.add(fetched)
    for part in snap.partitions:
        if part.digest not in seen:
            seen.add(part.digest)
            fetched = store.pull_object(part.digest, partition=snap.partition_name(part))
            result.bytes_fetched += result.objects.add(fetched)
