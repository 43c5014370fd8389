"""The partitions of two snapshots, compared window by window, and the snapshots read for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmtl_engine.ranges import DAY_MS, PartitionScheme, TimeRange, window_containing, window_name

from qmtl_lock.diff.result import PartitionChange, PartitionDiff, SymbolDiff, short

if TYPE_CHECKING:
    from qmtl_engine.store import Snapshot, SnapshotPartition, Store

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
            from qmtl_engine.errors import ObjectMissing, QmtlLockError

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
                    snapshots: SnapshotCache, scheme: PartitionScheme | None) -> None:
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
        sym.partitions = partition_diff(pair[0], pair[1], scheme)


def partition_diff(old: Snapshot, new: Snapshot,
                   scheme: PartitionScheme | None = None) -> PartitionDiff:
    """Compare two snapshots window by window (a calendar day, month or year)."""
    scheme = scheme or guess_scheme([*old.partitions, *new.partitions])
    o, n = _by_window(old, scheme), _by_window(new, scheme)

    def name(p: SnapshotPartition) -> str:
        return window_name(TimeRange(p.start, p.end), scheme)

    changes = [(key, PartitionChange(name(p), "added", new_rows=p.rows, new_digest=p.digest))
               for key, p in n.items() if key not in o]
    unchanged: list[tuple[int, str]] = []
    for key, op in o.items():
        np_ = n.get(key)
        if np_ is None:
            changes.append((key, PartitionChange(name(op), "removed", old_rows=op.rows,
                                                 old_digest=op.digest)))
        elif (op.start, op.end, op.digest) == (np_.start, np_.end, np_.digest):
            unchanged.append((key, name(np_)))
        else:
            changes.append((key, PartitionChange(name(np_), "changed", op.rows, np_.rows,
                                                 op.digest, np_.digest)))
    return PartitionDiff([c for _, c in sorted(changes, key=lambda kc: kc[0])],
                         [u for _, u in sorted(unchanged)])


def _by_window(snap: Snapshot, scheme: PartitionScheme) -> dict[int, SnapshotPartition]:
    out = {window_containing(p.start, scheme).start: p for p in snap.partitions}
    if len(out) != len(snap.partitions):  # not on this scheme's windows: key by start
        out = {p.start: p for p in snap.partitions}
    return out


# Snapshot manifests do not say which partition scheme made them, so when the preset's scheme
# is not known the scheme is inferred from the partitions themselves.
def guess_scheme(parts: list[SnapshotPartition]) -> PartitionScheme:
    """The finest calendar scheme whose windows each hold one of the partitions."""
    for scheme in ("day", "month", "year"):
        if all(window_containing(p.start, scheme).end >= p.end for p in parts):
            return scheme
    return "year" if any(p.end - p.start > DAY_MS for p in parts) else "day"
