"""Compare two locks entry by entry: :func:`diff` builds a :class:`LockDiff`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qmtl_lock.diff.partitions import SnapshotCache, name_partitions
from qmtl_lock.diff.result import DatasetDiff, FieldChange, LockDiff, SymbolDiff

if TYPE_CHECKING:
    from qmtl_engine import Store

    from qmtl_lock.lockfile import DatasetEntry, Lockfile, SymbolEntry

_ENTRY_KEYS_APART = ("dataset_fingerprint", "coverage_bounds")  # reported on their own


def diff(old: Lockfile, new: Lockfile, *, store: Store | None = None,
         old_label: str = "old", new_label: str = "new") -> LockDiff:
    """Compare two locks. With ``store``, name the changed partitions of each changed snapshot
    (on the partition scheme the snapshot manifests record)."""
    result = LockDiff(old_label=old_label, new_label=new_label)
    if old.lock_version != new.lock_version:
        result.lock_version = (old.lock_version, new.lock_version)
    old_dict, new_dict = old.to_dict()["datasets"], new.to_dict()["datasets"]
    snapshots = SnapshotCache(store)
    for name in sorted(set(old.datasets) | set(new.datasets)):
        if name not in old.datasets:
            n = new.datasets[name]
            result.datasets.append(DatasetDiff(
                name, "added", None, n,
                symbols=[_symbol_diff(s, None, n.symbols[s]) for s in sorted(n.symbols)]))
        elif name not in new.datasets:
            o = old.datasets[name]
            result.datasets.append(DatasetDiff(
                name, "removed", o, None,
                symbols=[_symbol_diff(s, o.symbols[s], None) for s in sorted(o.symbols)]))
        else:
            ds = _dataset_diff(name, old.datasets[name], new.datasets[name], old_dict[name],
                               new_dict[name], snapshots)
            if ds is not None:
                result.datasets.append(ds)
    if store is None and any(s.change == "changed" and s.fingerprint_changed
                             for _, s in result.symbols()):
        result.notes.append("no store given: changed partitions are not named")
    return result


def _dataset_diff(name: str, o: DatasetEntry, n: DatasetEntry, o_dict: dict[str, Any],
                  n_dict: dict[str, Any], snapshots: SnapshotCache) -> DatasetDiff | None:
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
    for symbol in sorted(set(o.symbols) | set(n.symbols)):
        os_, ns = o.symbols.get(symbol), n.symbols.get(symbol)
        if os_ == ns:
            continue
        sym = _symbol_diff(symbol, os_, ns, o_dict["symbols"].get(symbol),
                           n_dict["symbols"].get(symbol))
        if os_ is not None and ns is not None and sym.fingerprint_changed:
            name_partitions(sym, os_, ns, snapshots)
        out.symbols.append(sym)
    if not (out.request or out.preset_digest or out.symbols):
        return None
    return out


def _symbol_diff(symbol: str, o: SymbolEntry | None, n: SymbolEntry | None,
                 o_dict: dict[str, Any] | None = None, n_dict: dict[str, Any] | None = None,
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
