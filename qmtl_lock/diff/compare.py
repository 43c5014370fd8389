"""Compare two locks entry by entry: :func:`diff` builds a :class:`LockDiff`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qmtl_lock.diff.partitions import SnapshotCache, name_partitions
from qmtl_lock.diff.result import DatasetDiff, FieldChange, LockDiff, SymbolDiff
from qmtl_lock.symbols import symbol_settings

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
    o_req, n_req = (_by_symbol({k: v for k, v in d["request"].items() if k != "symbols"})
                    for d in (o_dict, n_dict))
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


def _by_symbol(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with its ``symbol_settings`` keyed by symbol, so that a change is reported
    at the symbol and setting it is in (``symbol_settings.BTCUSD.source_symbol``)."""
    if "symbol_settings" in request:
        request["symbol_settings"] = symbol_settings(request)
    return request


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
    """Changed values between two nested mappings, by dotted path, sorted by path.

    Mappings are walked key by key; anything else is one value, compared with its type once
    something differs (``1`` and ``1.0`` render differently in a lock). A list is one value
    too: a change inside it reports the whole list, old and new.
    """
    if old == new:  # as the entries compare: a change of type alone is no change
        return []
    found: list[FieldChange] = []
    _walk(old, new, (), found)
    return sorted(found, key=lambda f: f.path)


def _walk(old: Mapping[str, Any], new: Mapping[str, Any], at: tuple[str, ...],
          found: list[FieldChange]) -> None:
    for key in sorted(set(old) | set(new), key=str):
        path = ".".join((*at, str(key)))
        if key not in old:
            found.append(FieldChange(path, "added", None, new[key]))
        elif key not in new:
            found.append(FieldChange(path, "removed", old[key], None))
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            _walk(old[key], new[key], (*at, str(key)), found)
        elif not _same(old[key], new[key]):
            found.append(FieldChange(path, "changed", old[key], new[key]))


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (``==`` alone takes 1 for 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
