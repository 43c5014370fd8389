"""What :func:`qmtl_lock.diff.diff` finds: values only, each with its ``--json`` form."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine import iso

if TYPE_CHECKING:
    from qmtl_lock.lockfile import DatasetEntry, SymbolEntry

Status = Literal["added", "removed", "changed"]


def short(fingerprint: str | None) -> str:
    """``sha256:`` and the first 12 hex digits, like a short git hash."""
    if not fingerprint:
        return "-"
    algo, _, hexd = fingerprint.partition(":")
    return f"{algo}:{hexd[:12]}" if hexd else fingerprint[:19]


@dataclass(frozen=True)
class FieldChange:
    """One changed value at ``path`` (``end``, ``conformance_flags.gap_bars``, ``live.url`` …)."""

    path: str
    change: Status
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": self.change}
        if self.change != "added":
            out["old"] = self.old
        if self.change != "removed":
            out["new"] = self.new
        return out


@dataclass(frozen=True)
class PartitionChange:
    """A partition window added, removed or changed between the two snapshots."""

    name: str
    change: Status
    old_rows: int | None = None
    new_rows: int | None = None
    old_digest: str | None = None
    new_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "change": self.change, "old_rows": self.old_rows,
                "new_rows": self.new_rows, "old_digest": self.old_digest,
                "new_digest": self.new_digest}


@dataclass
class PartitionDiff:
    """Partition windows of two snapshots, compared window by window."""

    changes: list[PartitionChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "unchanged": self.unchanged}


@dataclass
class SymbolDiff:
    symbol: str
    change: Status
    old: SymbolEntry | None
    new: SymbolEntry | None
    coverage: str | None = None  # added | removed | extended | shrunk | moved
    fields: list[FieldChange] = field(default_factory=list)
    partitions: PartitionDiff | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fingerprint_changed(self) -> bool:
        return (self.old is None or self.new is None
                or self.old.dataset_fingerprint != self.new.dataset_fingerprint)

    def to_dict(self) -> dict[str, Any]:
        old, new = self.old, self.new
        return {
            "symbol": self.symbol,
            "change": self.change,
            "fingerprint": None if not self.fingerprint_changed else {
                "old": old.dataset_fingerprint if old else None,
                "new": new.dataset_fingerprint if new else None},
            "coverage": None if self.coverage is None else {
                "change": self.coverage,
                "old": _bounds(old.coverage_bounds) if old else None,
                "new": _bounds(new.coverage_bounds) if new else None},
            "rows": {"old": old.rows if old else None, "new": new.rows if new else None},
            "fields": [f.to_dict() for f in self.fields],
            "partitions": self.partitions.to_dict() if self.partitions else None,
            "notes": list(self.notes),
        }


def _bounds(bounds: tuple[int, int]) -> list[str]:
    return [iso(bounds[0]), iso(bounds[1])]


@dataclass
class DatasetDiff:
    dataset: str
    change: Status
    old: DatasetEntry | None
    new: DatasetEntry | None
    request: list[FieldChange] = field(default_factory=list)
    preset_digest: tuple[str, str] | None = None
    symbols: list[SymbolDiff] = field(default_factory=list)

    @property
    def preset(self) -> str | None:
        entry = self.new or self.old
        return None if entry is None else entry.request.get("preset")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "change": self.change,
            "preset": self.preset,
            "request": [f.to_dict() for f in self.request],
            "preset_digest": None if self.preset_digest is None else {
                "old": self.preset_digest[0], "new": self.preset_digest[1]},
            "symbols": [s.to_dict() for s in self.symbols],
        }


@dataclass
class LockDiff:
    """Everything that differs between two locks; true when anything does."""

    datasets: list[DatasetDiff] = field(default_factory=list)
    lock_version: tuple[int, int] | None = None
    old_label: str = "old"
    new_label: str = "new"
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.datasets) or self.lock_version is not None

    def symbols(self) -> Iterator[tuple[str, SymbolDiff]]:
        for ds in self.datasets:
            for sym in ds.symbols:
                yield ds.dataset, sym

    def summary(self) -> dict[str, int]:
        out = {f"{what}_{change}": 0 for what in ("datasets", "symbols")
               for change in ("added", "removed", "changed")}
        for ds in self.datasets:
            out[f"datasets_{ds.change}"] += 1
            for sym in ds.symbols:
                out[f"symbols_{sym.change}"] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self,
            "differ": bool(self),
            "old": self.old_label,
            "new": self.new_label,
            "lock_version": None if self.lock_version is None else {
                "old": self.lock_version[0], "new": self.lock_version[1]},
            "summary": self.summary(),
            "datasets": [d.to_dict() for d in self.datasets],
            "notes": list(self.notes),
        }
