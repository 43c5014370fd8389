"""``verify``: re-read the store and re-hash it against the lock, naming each bad partition."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qmtl_engine import (
    FingerprintMismatch,
    InputError,
    ObjectCorrupted,
    ObjectMissing,
    QmtlLockError,
)

from qmtl_lock.lockfile import read_lock
from qmtl_lock.manifest import load_manifest


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one locked symbol.

    ``stored`` says which stored file it is about: a partition ``object`` or the ``snapshot``
    manifest (None for a lock entry that contradicts its snapshot). ``digest`` names that file
    (the object's digest, the manifest's fingerprint) when it is there but cannot be trusted, so
    ``qmtl-lock repair`` knows what to move aside; a missing file has none.
    """

    dataset: str
    symbol: str
    kind: str  # fingerprint-mismatch | object-missing | object-corrupted | snapshot-missing |
    #            lock-mismatch
    detail: str
    partition: str | None = None
    stored: Literal["object", "snapshot"] | None = None
    digest: str | None = None

    def line(self) -> str:
        where = f"{self.dataset}/{self.symbol}"
        if self.partition:
            where += f" partition {self.partition}"
        return f"{where}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "symbol": self.symbol, "kind": self.kind,
                "partition": self.partition, "detail": self.detail, "stored": self.stored,
                "digest": self.digest}


@dataclass
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    checked: int = 0
    rows: int = 0
    bytes_hashed: int = 0

    def __bool__(self) -> bool:
        """True when verification failed."""
        return bool(self.problems)


_KIND = {"FingerprintMismatch": "fingerprint-mismatch", "ObjectMissing": "object-missing",
         "ObjectCorrupted": "object-corrupted"}


def verify(manifest_path: str | Path = "seamless.yaml", *,
           datasets: Collection[str] = ()) -> VerifyResult:
    """Re-hash every partition the lock pins. Every entry is checked, problems are collected.

    The checks are the ones :meth:`qmtl_lock.Lock.load` applies (the engine's
    :class:`~qmtl_engine.read.PinnedReader` and :func:`~qmtl_lock.runtime.entry_mismatch`), so
    what verify reports is what a strategy's load raises.
    """
    from qmtl_engine import PinnedReader

    from qmtl_lock.runtime import entry_mismatch

    loaded = load_manifest(manifest_path)
    lock = read_lock(loaded.lock_path)
    unknown = sorted(set(datasets) - set(lock.datasets))
    if unknown:
        raise InputError(f"dataset {unknown[0]!r} is not in the lock", where=str(loaded.lock_path),
                         fix=f"choose from: {', '.join(sorted(lock.datasets))}")
    engine = PinnedReader(loaded.open_store())  # a remote store checks its bucket on a miss
    result = VerifyResult()
    for name, entry in sorted(lock.datasets.items()):
        if datasets and name not in datasets:
            continue
        for symbol, sym in sorted(entry.symbols.items()):
            result.checked += 1
            outcome = engine.verify(sym.dataset_fingerprint, dataset=name, symbol=symbol)
            result.rows += outcome.rows
            result.bytes_hashed += outcome.bytes_hashed
            for exc in outcome.problems:
                result.problems.append(_problem(name, symbol, sym.dataset_fingerprint, exc,
                                                manifest_read=outcome.snapshot is not None))
            snap = outcome.snapshot
            if snap is None or outcome.problems:
                continue
            mismatch = entry_mismatch(snap, entry, symbol)
            if mismatch:
                result.problems.append(Problem(
                    name, symbol, "lock-mismatch",
                    f"the lock's {', '.join(mismatch)} differ from the pinned snapshot "
                    "(was the lock edited by hand?)"))
    return result


def _problem(dataset: str, symbol: str, fingerprint: str, exc: QmtlLockError, *,
             manifest_read: bool) -> Problem:
    """One problem the engine's verify raised, with the stored file it is about."""
    detail = exc.what
    kind = _KIND.get(type(exc).__name__, "integrity")
    stored: Literal["object", "snapshot"] | None = None
    digest = None
    if isinstance(exc, ObjectMissing) and not manifest_read:
        kind, stored = "snapshot-missing", "snapshot"
        detail = (f"no snapshot {fingerprint} in the store: the store was emptied or is "
                  "another one, or the lock was edited by hand")
    elif isinstance(exc, ObjectCorrupted):
        detail += f" ({exc.path})"
        stored = "snapshot" if exc.kind == "snapshot" else "object"
        digest = exc.expected
    elif isinstance(exc, ObjectMissing):
        detail += f" ({exc.path})"
        stored = "object"
    elif isinstance(exc, FingerprintMismatch):
        # The object hashes to its name, but the manifest gives that partition other rows: it is
        # the manifest that cannot be trusted.
        stored, digest = "snapshot", fingerprint
    return Problem(dataset, symbol, kind, detail, getattr(exc, "partition", None), stored,
                   digest)
