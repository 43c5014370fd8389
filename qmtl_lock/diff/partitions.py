"""The partitions of two snapshots, compared window by window, and the snapshots read for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmtl_engine import PartitionScheme, TimeRange, window_containing

from qmtl_lock.diff.result import PartitionChange, PartitionDiff, SymbolDiff, short

if TYPE_CHECKING:
    from qmtl_engine import Snapshot, SnapshotPartition, Store

    from qmtl_lock.lockfile import SymbolEntry


class SnapshotCache:
    """Snapshot manifests read from the store once each; a missing one becomes a note."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._cache: dict[str, Snapshot | str] = {}

    def get(self, fingerprint: str) -> Snapshot | str:
        """The snapshot, or a sentence saying why it cannot be read."""
        if self.store is None:
            return "no store"
        if fingerprint not in self._cache:
            from qmtl_engine import ObjectMissing, QmtlLockError

            try:
                self._cache[fingerprint] = self.store.get_snapshot(fingerprint)
            except ObjectMissing as exc:
                self._cache[fingerprint] = f"is not in the store ({exc.path})"
            except QmtlLockError as exc:
                self._cache[fingerprint] = f"cannot be read from the store: {exc.what}"
            except (OSError, ValueError) as exc:
                self._cache[fingerprint] = f"cannot be read from the store: {exc}"
        return self._cache[fingerprint]


def name_partitions(sym: SymbolDiff, old: SymbolEntry, new: SymbolEntry,
                    snapshots: SnapshotCache) -> None:
    """Set ``sym.partitions`` from the two snapshots, or note why they cannot be compared."""
    if snapshots.store is None:
        return
    pair: list[Snapshot] = []
    for side, entry in (("old", old), ("new", new)):
        snap = snapshots.get(entry.dataset_fingerprint)
        if isinstance(snap, str):
            sym.notes.append(f"{side} snapshot {short(entry.dataset_fingerprint)} {snap}: "
                             "its partitions cannot be compared")
        else:
            pair.append(snap)
    if len(pair) == 2:
        sym.partitions = partition_diff(pair[0], pair[1])


def partition_diff(old: Snapshot, new: Snapshot) -> PartitionDiff:
    """Compare two snapshots window by window (a calendar day, month or year).

    Windows and names follow the partition scheme each snapshot records (the newer one's when
    both do); snapshots written without one are compared by partition start and named by their
    exact window.
    """
    scheme = new.partition or old.partition
    o, n = _by_window(old, scheme), _by_window(new, scheme)

    def name(snap: Snapshot, p: SnapshotPartition) -> str:
        return snap.partition_name(p) if snap.partition else TimeRange(p.start, p.end).label()

    changes = [(key, PartitionChange(name(new, p), "added", new_rows=p.rows,
                                     new_digest=p.digest))
               for key, p in n.items() if key not in o]
    unchanged: list[tuple[int, str]] = []
    for key, op in o.items():
        np_ = n.get(key)
        if np_ is None:
            changes.append((key, PartitionChange(name(old, op), "removed", old_rows=op.rows,
                                                 old_digest=op.digest)))
        elif (op.start, op.end, op.digest) == (np_.start, np_.end, np_.digest):
            unchanged.append((key, name(new, np_)))
        else:
            changes.append((key, PartitionChange(name(new, np_), "changed", op.rows, np_.rows,
                                                 op.digest, np_.digest)))
    return PartitionDiff([c for _, c in sorted(changes, key=lambda kc: kc[0])],
                         [u for _, u in sorted(unchanged)])


def _by_window(snap: Snapshot, scheme: PartitionScheme | None) -> dict[int, SnapshotPartition]:
    if scheme is None:
        return {p.start: p for p in snap.partitions}
    out = {window_containing(p.start, scheme).start: p for p in snap.partitions}
    if len(out) != len(snap.partitions):  # not on this scheme's windows: key by start
        out = {p.start: p for p in snap.partitions}
    return out
