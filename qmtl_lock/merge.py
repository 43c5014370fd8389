"""Three-way merge of seamless.lock, per dataset and per symbol (the git merge driver's logic).

Each unit is merged on its own with the usual three-way rule: taken from ours if only ours changed
it, from theirs if only theirs changed it, kept if both made the same change, and a conflict if
both changed it differently. The units are:

* a whole dataset entry (fast path: one side left it alone, or both agree);
* otherwise, inside a dataset changed on both sides: each request key (``preset``, ``start``,
  ``end``, ``contract_version``, …), the ``preset_digest``, and each symbol entry. The request's
  ``symbols`` list is rebuilt from the merged entries, so two branches adding different symbols
  to one dataset merge cleanly. Two entries that pin the same data (fingerprint, coverage, rows,
  flags) but were observed apart (``as_of``, ``expires_at``, SLA timing) are the same change:
  ours is kept, as ``resolve`` would keep it.

A symbol entry was resolved under its branch's request. If the merged request asks for other
data than that request did (another preset, range, contract, preset definition, accepted gaps,
live block or retention class), the entry is stale and reported as a conflict: only ``qmtl-lock
resolve`` can produce it. Conflicting datasets keep our version in :attr:`MergeResult.lock`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from qmtl_engine import iso

from qmtl_lock.lockfile import DatasetEntry, Lockfile, SymbolEntry
from qmtl_lock.manifest import DATA_KEYS
from qmtl_lock.symbols import symbol_settings

_SETTINGS = "symbol_settings"  # merged per symbol, as the symbols are

_MISSING: Any = object()


@dataclass(frozen=True)
class Conflict:
    """Both branches changed one dataset (``symbol`` None) or one symbol entry differently."""

    dataset: str
    symbol: str | None
    what: str

    @property
    def who(self) -> str:
        return self.dataset + (f"/{self.symbol}" if self.symbol else "")

    def line(self) -> str:
        return f"{self.who}: {self.what}"

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "symbol": self.symbol, "what": self.what}


@dataclass
class MergeResult:
    lock: Lockfile
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.conflicts


def merge(base: Lockfile, ours: Lockfile, theirs: Lockfile) -> MergeResult:
    """Merge ``theirs`` into ``ours`` given their common ancestor ``base``."""
    datasets: dict[str, DatasetEntry] = {}
    conflicts: list[Conflict] = []
    for name in sorted(set(base.datasets) | set(ours.datasets) | set(theirs.datasets)):
        b, o, t = (x.datasets.get(name) for x in (base, ours, theirs))
        merged, found = _merge_dataset(name, b, o, t)
        conflicts += found
        if found:
            merged = o
        if merged is not None:
            datasets[name] = merged
    version = max(base.lock_version, ours.lock_version, theirs.lock_version)
    return MergeResult(Lockfile(datasets=datasets, lock_version=version), conflicts)


def _three_way(b: Any, o: Any, t: Any) -> tuple[Any, str] | None:
    """(value, side it came from: ours | theirs | both), or None when both changed it apart."""
    if o == t:
        return o, "both"
    if o == b:
        return t, "theirs"
    if t == b:
        return o, "ours"
    return None


def _merge_dataset(name: str, b: DatasetEntry | None, o: DatasetEntry | None,
                   t: DatasetEntry | None) -> tuple[DatasetEntry | None, list[Conflict]]:
    quick = _three_way(b, o, t)
    if quick is not None:
        return quick[0], []
    if o is None or t is None:
        gone, kept = ("our", "their") if o is None else ("their", "our")
        return None, [Conflict(name, None, f"the dataset was removed on {gone} branch but "
                               f"changed on {kept} branch")]
    base = b or DatasetEntry(request={}, preset_digest="", symbols={})
    keys = _ordered_keys(o.request, t.request, base.request)  # the rendered order is ours
    picked_request, conflicts = _merge_request(name, keys, base, o, t)
    digest = _three_way(base.preset_digest, o.preset_digest, t.preset_digest)
    if digest is None:
        conflicts.append(Conflict(name, None, (
            f"both branches changed the definition of preset {o.request.get('preset')} "
            "(preset_digest)")))
        digest = (o.preset_digest, "ours")
    symbols, sources, symbol_conflicts = _merge_symbols(name, base, o, t)
    conflicts += symbol_conflicts
    if conflicts:
        return o, conflicts

    request = {k: sorted(symbols) if k == "symbols" else picked_request[k]
               for k in keys if k == "symbols" or k in picked_request}
    own = [{"symbol": symbol, **settings}  # only the settings of symbols the merge keeps
           for symbol, settings in sorted(picked_request.get(_SETTINGS, {}).items())
           if symbol in symbols]
    if own:
        request[_SETTINGS] = own
    else:
        request.pop(_SETTINGS, None)
    merged = DatasetEntry(request=request, preset_digest=digest[0], symbols=symbols)
    conflicts = _stale_entries(name, merged, sources, o, t)
    if conflicts:
        return o, conflicts
    return _with_merged_retention(merged), []


def _merge_request(name: str, keys: list[str], base: DatasetEntry, o: DatasetEntry,
                   t: DatasetEntry) -> tuple[dict[str, Any], list[Conflict]]:
    """Three-way merge of each request key but the symbols (merged from the entries)."""
    picked_request: dict[str, Any] = {}
    conflicts: list[Conflict] = []
    for key in keys:
        if key == "symbols":
            continue
        if key == _SETTINGS:
            settings, found = _merge_settings(name, base, o, t)
            picked_request[key] = settings
            conflicts += found
            continue
        picked = _three_way(base.request.get(key, _MISSING), o.request.get(key, _MISSING),
                            t.request.get(key, _MISSING))
        if picked is None:
            conflicts.append(Conflict(name, None, (
                f"both branches changed the request's {key}: ours {_val(o.request, key)}, "
                f"theirs {_val(t.request, key)}")))
        elif picked[0] is not _MISSING:
            picked_request[key] = picked[0]
    return picked_request, conflicts


def _merge_symbols(name: str, base: DatasetEntry, o: DatasetEntry, t: DatasetEntry,
                   ) -> tuple[dict[str, SymbolEntry], dict[str, str], list[Conflict]]:
    """Three-way merge of the entries; also says which side each kept entry came from."""
    symbols: dict[str, SymbolEntry] = {}
    sources: dict[str, str] = {}
    conflicts: list[Conflict] = []
    for symbol in sorted(set(base.symbols) | set(o.symbols) | set(t.symbols)):
        bs, os_, ts = (d.symbols.get(symbol) for d in (base, o, t))
        picked = _three_way(bs, os_, ts)
        if picked is None and os_ is not None and ts is not None and _same_data(os_, ts):
            picked = (os_, "both")  # resolved apart to the same data: keep ours, as resolve would
        if picked is None:
            conflicts.append(Conflict(name, symbol, _entry_conflict(os_, ts)))
        elif picked[0] is not None:
            symbols[symbol] = picked[0]
            sources[symbol] = picked[1]
    return symbols, sources, conflicts


def _merge_settings(name: str, base: DatasetEntry, o: DatasetEntry, t: DatasetEntry,
                    ) -> tuple[dict[str, dict[str, str]], list[Conflict]]:
    """Three-way merge of each symbol's own settings (``symbol_settings``), so that two
    branches that set up different symbols merge cleanly."""
    b_own, o_own, t_own = (symbol_settings(x.request) for x in (base, o, t))
    merged: dict[str, dict[str, str]] = {}
    conflicts = []
    for symbol in sorted(set(b_own) | set(o_own) | set(t_own)):
        picked = _three_way(b_own.get(symbol), o_own.get(symbol), t_own.get(symbol))
        if picked is None:
            conflicts.append(Conflict(name, symbol, (
                f"both branches changed the settings of {symbol}: ours {o_own.get(symbol)}, "
                f"theirs {t_own.get(symbol)}")))
        elif picked[0] is not None:
            merged[symbol] = picked[0]
    return merged, conflicts


def _stale_entries(name: str, merged: DatasetEntry, sources: dict[str, str], o: DatasetEntry,
                   t: DatasetEntry) -> list[Conflict]:
    """Entries resolved for a request that decides other data than the merged one."""
    conflicts: list[Conflict] = []
    for symbol, side in sources.items():
        want = _data_request(merged, symbol)
        made_under = [s for s, entry in (("ours", o), ("theirs", t))
                      if side in (s, "both") and _data_request(entry, symbol) == want]
        if not made_under:
            origin = o if side in ("ours", "both") else t
            other = t if origin is o else o
            changed = _changed_keys(_data_request(origin, symbol), want)
            conflicts.append(Conflict(name, symbol, (
                f"the entry from {'our' if origin is o else 'their'} branch was resolved for "
                f"another request than the merged one: {'our' if other is o else 'their'} "
                f"branch changed {', '.join(changed)}")))
    return conflicts


def _with_merged_retention(ds: DatasetEntry) -> DatasetEntry:
    """Entries kept from the side that did not change the retention class get the merged one.

    Retention does not decide the data, so ``resolve`` would keep such an entry and only move its
    expiry (``as_of`` + the class's TTL). The TTL is read off an entry already resolved under the
    merged class; without one, the entry stays as it is and ``check`` reports the stale expiry.
    """
    wanted = ds.request.get("retention_class")
    ttls = {e.expires_at - e.as_of if e.expires_at is not None else None
            for e in ds.symbols.values() if e.retention_class == wanted}
    if wanted is None or len(ttls) != 1:
        return ds
    ttl = ttls.pop()
    symbols = {
        symbol: entry if entry.retention_class == wanted else replace(
            entry, retention_class=wanted,
            expires_at=None if ttl is None else entry.as_of + ttl)
        for symbol, entry in ds.symbols.items()}
    return replace(ds, symbols=symbols)


def _same_data(a: SymbolEntry, b: SymbolEntry) -> bool:
    """The same data, observed apart: only ``as_of``, ``expires_at`` and the SLA timing differ."""
    return (a.dataset_fingerprint, a.coverage_bounds, a.rows, a.partitions,
            dict(a.conformance_flags), a.retention_class) == (
            b.dataset_fingerprint, b.coverage_bounds, b.rows, b.partitions,
            dict(b.conformance_flags), b.retention_class)


def _ordered_keys(*maps: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    for m in maps:
        keys += [k for k in m if k not in keys]
    return keys


def _data_request(ds: DatasetEntry, symbol: str) -> dict[str, Any]:
    """What decides the data of the entry of ``symbol``: the request keys that resolve
    compares, the preset definition, and the symbol's own settings (source symbol, range)."""
    out = {k: ds.request[k] for k in DATA_KEYS if k in ds.request}
    out["preset_digest"] = ds.preset_digest
    own = symbol_settings(ds.request).get(symbol)
    if own:
        out[f"settings of {symbol}"] = own
    return out


def _changed_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))


def _val(request: Mapping[str, Any], key: str) -> str:
    return "(none)" if key not in request else repr(request[key])


def _entry_conflict(o: SymbolEntry | None, t: SymbolEntry | None) -> str:
    if o is None:
        return "removed on our branch but changed on their branch"
    if t is None:
        return "removed on their branch but changed on our branch"
    parts = []
    if o.coverage_bounds != t.coverage_bounds:
        parts.append(f"coverage ours [{iso(o.coverage_bounds[0])}, {iso(o.coverage_bounds[1])})"
                     f", theirs [{iso(t.coverage_bounds[0])}, {iso(t.coverage_bounds[1])})")
    if o.dataset_fingerprint != t.dataset_fingerprint:
        parts.append(f"fingerprint ours {o.dataset_fingerprint[:19]}…, theirs "
                     f"{t.dataset_fingerprint[:19]}…")
    other = sorted(k for k, v in o.to_dict().items()
                   if k not in ("coverage_bounds", "dataset_fingerprint")
                   and t.to_dict().get(k) != v)
    if other:
        parts.append(f"{', '.join(other)} differ")
    return "both branches changed the entry differently: " + "; ".join(parts)
