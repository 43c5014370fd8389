"""``diff``: what changed between two locks, down to the partitions of each changed snapshot.

:func:`diff` compares two :class:`~qmtl_lock.lockfile.Lockfile` values entry by entry: datasets
and symbols added or removed, request and preset changes, coverage extended or shrunk, fingerprint
changed, and every other changed field (rows, flags, SLA, ``as_of`` …). When a store is given, the
snapshot manifests of both fingerprints are compared to name the partitions (months, days, years,
named like :func:`qmtl_engine.ranges.window_name`) that were added, removed or changed. A snapshot
that is not in the store is reported as a note; the entry-level changes are still reported.

The result is true when the locks differ. One module per step: :mod:`~qmtl_lock.diff.load`
reads the two sides (a file, or the lock at a git revision) and the store;
:mod:`~qmtl_lock.diff.compare` and :mod:`~qmtl_lock.diff.partitions` compute a
:class:`~qmtl_lock.diff.result.LockDiff`; :mod:`~qmtl_lock.diff.render` gives the human review
form (:meth:`LockDiff.to_dict` is the ``--json`` form). Heavy modules (pyarrow and fsspec,
through the store) are imported only when used.
"""

from __future__ import annotations

from qmtl_lock.diff.compare import coverage_change, diff, field_changes
from qmtl_lock.diff.partitions import partition_diff
from qmtl_lock.diff.render import render_text
from qmtl_lock.diff.result import (
    DatasetDiff,
    FieldChange,
    LockDiff,
    PartitionChange,
    PartitionDiff,
    SymbolDiff,
    short,
)

__all__ = [
    "DatasetDiff",
    "FieldChange",
    "LockDiff",
    "PartitionChange",
    "PartitionDiff",
    "SymbolDiff",
    "coverage_change",
    "diff",
    "field_changes",
    "partition_diff",
    "render_text",
    "short",
]
