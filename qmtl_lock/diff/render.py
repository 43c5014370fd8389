"""The human review form of a :class:`LockDiff`: one block per dataset, ``+`` added,
``-`` removed, ``~`` changed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from qmtl_engine import iso

from qmtl_lock.diff.result import FieldChange, LockDiff, PartitionChange, SymbolDiff, short

if TYPE_CHECKING:
    from qmtl_lock.lockfile import SymbolEntry

_MARK = {"added": "+", "removed": "-", "changed": "~"}


def render_text(result: LockDiff) -> str:
    """The whole diff as text, ending with a summary line and the notes."""
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
        lines += [f"    request {field_text(f)}" for f in ds.request]
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


def field_text(f: FieldChange) -> str:
    if f.change == "added":
        return f"{f.path}: added {_show(f.new)}"
    if f.change == "removed":
        return f"{f.path}: removed (was {_show(f.old)})"
    return f"{f.path}: {_show(f.old)} → {_show(f.new)}"


def partition_text(c: PartitionChange) -> str:
    if c.change == "added":
        return f"+ {c.name} ({c.new_rows} rows)"
    if c.change == "removed":
        return f"- {c.name} ({c.old_rows} rows)"
    rows = (f"{c.old_rows} → {c.new_rows} rows" if c.old_rows != c.new_rows
            else f"{c.new_rows} rows, content changed")
    return f"~ {c.name} ({rows})"


def _symbol_lines(sym: SymbolDiff) -> Iterator[str]:
    o, n = sym.old, sym.new
    if o is None or n is None:  # added or removed: one line for the entry there is
        entry = n if o is None else o
        if entry is not None:
            yield f"{_MARK[sym.change]} {sym.symbol}: {_entry_line(entry)}"
        return
    yield f"~ {sym.symbol}"
    if sym.coverage:
        yield (f"    coverage {sym.coverage}: {_range(o.coverage_bounds)} → "
               f"{_range(n.coverage_bounds)}")
    if sym.fingerprint_changed:
        yield f"    fingerprint: {short(o.dataset_fingerprint)} → {short(n.dataset_fingerprint)}"
    for f in sym.fields:
        yield f"    {field_text(f)}"
    if sym.partitions is not None:
        p = sym.partitions
        if p.changes:
            yield "    partitions:"
            yield from (f"      {partition_text(c)}" for c in p.changes)
        else:
            yield "    partitions: same content, same windows"
        if p.unchanged:
            yield f"      unchanged: {', '.join(p.unchanged)}"
    for note in sym.notes:
        yield f"    note: {note}"


def _entry_line(entry: SymbolEntry) -> str:
    return (f"{_range(entry.coverage_bounds)}, {entry.rows} rows, {entry.partitions} "
            f"partition{'s' if entry.partitions != 1 else ''}, {short(entry.dataset_fingerprint)}")


def _range(bounds: tuple[int, int]) -> str:
    return f"[{iso(bounds[0])}, {iso(bounds[1])})"


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return short(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "null" if value is None else str(value)
