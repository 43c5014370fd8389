"""``diff``: what changed between two locks, down to the partitions of each changed snapshot.

:func:`diff` compares two :class:`~qmtl_lock.lockfile.Lockfile` values entry by entry: datasets
and symbols added or removed, request and preset changes, coverage extended or shrunk, fingerprint
changed, and every other changed field (rows, flags, SLA, ``as_of`` …). When a store is given, the
snapshot manifests of both fingerprints are compared to name the partitions (months, days, years,
named like :func:`qmtl_engine.ranges.window_name`) that were added, removed or changed. A snapshot
that is not in the store is reported as a note; the entry-level changes are still reported.

The result is true when the locks differ. :func:`render_text` gives the human review form,
:meth:`LockDiff.to_dict` the ``--json`` form. Heavy modules (deepdiff, and pyarrow/fsspec through
the store) are imported only when used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine.ranges import (
    DAY_MS,
    PartitionScheme,
    TimeRange,
    iso,
    window_containing,
    window_name,
)

from qmtl_lock.lockfile import DatasetEntry, Lockfile, SymbolEntry

if TYPE_CHECKING:
    from qmtl_engine.store import Snapshot, SnapshotPartition, Store

Status = Literal["added", "removed", "changed"]
_MARK = {"added": "+", "removed": "-", "changed": "~"}
_ENTRY_KEYS_APART = ("dataset_fingerprint", "coverage_bounds")  # reported on their own


# -- result ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldChange:
    """One changed value at ``path`` (``end``, ``conformance_flags.gap_bars``, ``live.url`` …)."""

    path: str
    change: Status
    old: Any = None
    new: Any = None

    def text(self) -> str:
        if self.change == "added":
            return f"{self.path}: added {_show(self.new)}"
        if self.change == "removed":
            return f"{self.path}: removed (was {_show(self.old)})"
        return f"{self.path}: {_show(self.old)} → {_show(self.new)}"

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

    def text(self) -> str:
        if self.change == "added":
            return f"+ {self.name} ({self.new_rows} rows)"
        if self.change == "removed":
            return f"- {self.name} ({self.old_rows} rows)"
        rows = (f"{self.old_rows} → {self.new_rows} rows" if self.old_rows != self.new_rows
                else f"{self.new_rows} rows, content changed")
        return f"~ {self.name} ({rows})"

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


# -- comparing -------------------------------------------------------------------------------
def diff(old: Lockfile, new: Lockfile, *, store: Store | None = None,
         schemes: Mapping[str, PartitionScheme] | None = None,
         old_label: str = "old", new_label: str = "new") -> LockDiff:
    """Compare two locks. With ``store``, name the changed partitions of each changed snapshot.

    ``schemes`` maps preset ids to their partition scheme (day, month or year) for naming
    partitions; without it (or for an unknown preset) the scheme is inferred from the windows.
    """
    result = LockDiff(old_label=old_label, new_label=new_label)
    if old.lock_version != new.lock_version:
        result.lock_version = (old.lock_version, new.lock_version)
    old_dict, new_dict = old.to_dict()["datasets"], new.to_dict()["datasets"]
    snapshots = _Snapshots(store)
    for name in sorted(set(old.datasets) | set(new.datasets)):
        o, n = old.datasets.get(name), new.datasets.get(name)
        if o is None and n is not None:
            result.datasets.append(DatasetDiff(
                name, "added", None, n,
                symbols=[_symbol_diff(s, None, n.symbols[s], None) for s in sorted(n.symbols)]))
            continue
        if n is None and o is not None:
            result.datasets.append(DatasetDiff(
                name, "removed", o, None,
                symbols=[_symbol_diff(s, o.symbols[s], None, None) for s in sorted(o.symbols)]))
            continue
        assert o is not None and n is not None
        ds = _dataset_diff(name, o, n, old_dict[name], new_dict[name], snapshots, schemes or {})
        if ds is not None:
            result.datasets.append(ds)
    if store is None and any(s.change == "changed" and s.fingerprint_changed
                             for _, s in result.symbols()):
        result.notes.append("no store given: changed partitions are not named")
    return result


def _dataset_diff(name: str, o: DatasetEntry, n: DatasetEntry, o_dict: dict[str, Any],
                  n_dict: dict[str, Any], snapshots: _Snapshots,
                  schemes: Mapping[str, PartitionScheme]) -> DatasetDiff | None:
    out = DatasetDiff(name, "changed", o, n)
    o_req = {k: v for k, v in o_dict["request"].items() if k != "symbols"}
    n_req = {k: v for k, v in n_dict["request"].items() if k != "symbols"}
    out.request = field_changes(o_req, n_req)
    # the request's symbol list names the entries; report it only if it says something else
    listed = set(o.request.get("symbols", [])) ^ set(n.request.get("symbols", []))
    if listed != set(o.symbols) ^ set(n.symbols):
        out.request.append(FieldChange("symbols", "changed", o_dict["request"].get("symbols"),
                                       n_dict["request"].get("symbols")))
    if o.preset_digest != n.preset_digest:
        out.preset_digest = (o.preset_digest, n.preset_digest)
    preset = str(n.request.get("preset", ""))
    for symbol in sorted(set(o.symbols) | set(n.symbols)):
        os_, ns = o.symbols.get(symbol), n.symbols.get(symbol)
        if os_ == ns:
            continue
        sym = _symbol_diff(symbol, os_, ns, o_dict["symbols"].get(symbol),
                           n_dict["symbols"].get(symbol))
        if sym.change == "changed" and sym.fingerprint_changed:
            _partitions(sym, snapshots, schemes.get(preset))
        out.symbols.append(sym)
    if not (out.request or out.preset_digest or out.symbols):
        return None
    return out


def _symbol_diff(symbol: str, o: SymbolEntry | None, n: SymbolEntry | None,
                 o_dict: dict[str, Any] | None, n_dict: dict[str, Any] | None = None,
                 ) -> SymbolDiff:
    if o is None:
        return SymbolDiff(symbol, "added", None, n, coverage="added")
    if n is None:
        return SymbolDiff(symbol, "removed", o, None, coverage="removed")
    out = SymbolDiff(symbol, "changed", o, n, coverage=coverage_change(o.coverage_bounds,
                                                                       n.coverage_bounds))
    o_rest = {k: v for k, v in (o_dict or o.to_dict()).items() if k not in _ENTRY_KEYS_APART}
    n_rest = {k: v for k, v in (n_dict or n.to_dict()).items() if k not in _ENTRY_KEYS_APART}
    out.fields = field_changes(o_rest, n_rest)
    return out


def coverage_change(old: tuple[int, int], new: tuple[int, int]) -> str | None:
    """``extended``, ``shrunk`` or ``moved`` (neither contains the other); None when equal."""
    if old == new:
        return None
    (a, b), (c, d) = old, new
    if c <= a and d >= b:
        return "extended"
    if c >= a and d <= b:
        return "shrunk"
    return "moved"


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """Changed values between two nested mappings, by dotted path (deepdiff does the walk).

    A list is one value: a change inside it reports the whole list, old and new.
    """
    if old == new:
        return []
    from deepdiff import DeepDiff
    from deepdiff.helper import NotPresent

    found: dict[str, FieldChange] = {}
    for levels in DeepDiff(dict(old), dict(new), view="tree").values():
        for level in levels:
            path: list[Any] = list(level.path(output_format="list"))
            cut = next((i for i, p in enumerate(path) if isinstance(p, int)), None)
            if cut is not None:  # collapse to the list itself
                path = path[:cut]
                o_val, n_val = _get(old, path), _get(new, path)
            else:
                o_val, n_val = level.t1, level.t2
            text = ".".join(str(p) for p in path)
            if isinstance(o_val, NotPresent) or o_val is _ABSENT:
                found[text] = FieldChange(text, "added", None, n_val)
            elif isinstance(n_val, NotPresent) or n_val is _ABSENT:
                found[text] = FieldChange(text, "removed", o_val, None)
            else:
                found[text] = FieldChange(text, "changed", o_val, n_val)
    return [found[k] for k in sorted(found)]


_ABSENT = object()


def _get(data: Any, path: list[Any]) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return _ABSENT
        data = data[key]
    return data


# -- partitions ------------------------------------------------------------------------------
class _Snapshots:
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


def _partitions(sym: SymbolDiff, snapshots: _Snapshots,
                scheme: PartitionScheme | None) -> None:
    assert sym.old is not None and sym.new is not None
    if snapshots.store is None:
        return
    pair: list[Snapshot] = []
    for side, entry in (("old", sym.old), ("new", sym.new)):
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
    parts = [*old.partitions, *new.partitions]
    scheme = scheme or guess_scheme(parts)

    def keyed(snap: Snapshot) -> dict[int, SnapshotPartition]:
        out = {window_containing(p.start, scheme).start: p for p in snap.partitions}
        if len(out) != len(snap.partitions):  # not on this scheme's windows: key by start
            out = {p.start: p for p in snap.partitions}
        return out

    o, n = keyed(old), keyed(new)
    result = PartitionDiff()
    for key in sorted(set(o) | set(n)):
        op, np_ = o.get(key), n.get(key)
        shown = np_ or op
        assert shown is not None
        name = window_name(TimeRange(shown.start, shown.end), scheme)
        if op is None:
            result.changes.append(PartitionChange(name, "added", new_rows=shown.rows,
                                                  new_digest=shown.digest))
        elif np_ is None:
            result.changes.append(PartitionChange(name, "removed", old_rows=op.rows,
                                                  old_digest=op.digest))
        elif (op.start, op.end, op.digest) == (np_.start, np_.end, np_.digest):
            result.unchanged.append(name)
        else:
            result.changes.append(PartitionChange(name, "changed", op.rows, np_.rows,
                                                  op.digest, np_.digest))
    return result


def guess_scheme(parts: list[SnapshotPartition]) -> PartitionScheme:
    """The finest calendar scheme whose windows each hold one of the partitions."""
    for scheme in ("day", "month", "year"):
        if all(window_containing(p.start, scheme).end >= p.end for p in parts):
            return scheme
    return "year" if any(p.end - p.start > DAY_MS for p in parts) else "day"


# -- rendering -------------------------------------------------------------------------------
def short(fingerprint: str | None) -> str:
    """``sha256:`` and the first 12 hex digits, like a short git hash."""
    if not fingerprint:
        return "-"
    algo, _, hexd = fingerprint.partition(":")
    return f"{algo}:{hexd[:12]}" if hexd else fingerprint[:19]


def _bounds(bounds: tuple[int, int]) -> list[str]:
    return [iso(bounds[0]), iso(bounds[1])]


def _range(bounds: tuple[int, int]) -> str:
    return f"[{iso(bounds[0])}, {iso(bounds[1])})"


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return short(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "null" if value is None else str(value)


def _entry_line(entry: SymbolEntry) -> str:
    return (f"{_range(entry.coverage_bounds)}, {entry.rows} rows, {entry.partitions} "
            f"partition{'s' if entry.partitions != 1 else ''}, {short(entry.dataset_fingerprint)}")


def _symbol_lines(sym: SymbolDiff) -> Iterator[str]:
    if sym.change == "added":
        assert sym.new is not None
        yield f"+ {sym.symbol}: {_entry_line(sym.new)}"
        return
    if sym.change == "removed":
        assert sym.old is not None
        yield f"- {sym.symbol}: {_entry_line(sym.old)}"
        return
    o, n = sym.old, sym.new
    assert o is not None and n is not None
    yield f"~ {sym.symbol}"
    if sym.coverage:
        yield (f"    coverage {sym.coverage}: {_range(o.coverage_bounds)} → "
               f"{_range(n.coverage_bounds)}")
    if sym.fingerprint_changed:
        yield f"    fingerprint: {short(o.dataset_fingerprint)} → {short(n.dataset_fingerprint)}"
    for f in sym.fields:
        yield f"    {f.text()}"
    if sym.partitions is not None:
        p = sym.partitions
        if p.changes:
            yield "    partitions:"
            yield from (f"      {c.text()}" for c in p.changes)
        else:
            yield "    partitions: same content, same windows"
        if p.unchanged:
            yield f"      unchanged: {', '.join(p.unchanged)}"
    for note in sym.notes:
        yield f"    note: {note}"


def render_text(result: LockDiff) -> str:
    """The human review form: one block per dataset, ``+`` added, ``-`` removed, ``~`` changed."""
    if not result:
        lines = [f"no differences between {result.old_label} and {result.new_label}"]
        return "\n".join(lines + [f"note: {n}" for n in result.notes]) + "\n"
    lines = [f"diff {result.old_label} → {result.new_label}"]
    if result.lock_version is not None:
        lines.append(f"lock_version: {result.lock_version[0]} → {result.lock_version[1]}")
    for ds in result.datasets:
        preset = ds.preset
        if ds.change in ("added", "removed"):
            n = len(ds.symbols)
            lines.append(f"{_MARK[ds.change]} dataset {ds.dataset} ({ds.change}: {preset}, "
                         f"{n} symbol{'s' if n != 1 else ''})")
        else:
            lines.append(f"~ dataset {ds.dataset}")
        lines += [f"    request {f.text()}" for f in ds.request]
        if ds.preset_digest:
            lines.append(f"    preset definition of {preset} changed: "
                         f"{short(ds.preset_digest[0])} → {short(ds.preset_digest[1])}")
        for sym in ds.symbols:
            lines += [f"    {line}" for line in _symbol_lines(sym)]
    s = result.summary()
    lines.append(
        f"{s['datasets_added']} dataset(s) added, {s['datasets_removed']} removed, "
        f"{s['datasets_changed']} changed; {s['symbols_added']} symbol(s) added, "
        f"{s['symbols_removed']} removed, {s['symbols_changed']} changed")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def render_json(result: LockDiff) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n"
