"""``show``: a table of what is locked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmtl_engine import InputError, iso

from qmtl_lock.lockfile import Lockfile, read_lock
from qmtl_lock.symbols import symbol_settings


def show_rows(lock_path: str | Path, dataset: str | None = None) -> list[dict[str, Any]]:
    lock: Lockfile = read_lock(lock_path)
    if dataset is not None and dataset not in lock.datasets:
        raise InputError(f"dataset {dataset!r} is not in the lock", where=str(lock_path),
                         fix=f"locked datasets: {', '.join(sorted(lock.datasets)) or '(none)'}")
    rows = []
    for name, entry in sorted(lock.datasets.items()):
        if dataset is not None and name != dataset:
            continue
        own = symbol_settings(entry.request)
        for symbol, sym in sorted(entry.symbols.items()):
            flags = {k: v for k, v in sym.conformance_flags.items() if v}
            row: dict[str, Any] = {
                "dataset": name, "symbol": symbol,
                "start": iso(sym.coverage_bounds[0]), "end": iso(sym.coverage_bounds[1]),
                "rows": sym.rows, "fingerprint": sym.dataset_fingerprint,
                "adjustment": entry.request.get("adjustment", "raw"),
                "flags": flags,
                "sla_violation": sym.sla.get("violation"),
                "expires_at": iso(sym.expires_at) if sym.expires_at is not None else None,
            }
            if "source_symbol" in own.get(symbol, {}):  # the name the source knows it by
                row["source_symbol"] = own[symbol]["source_symbol"]
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "the lock pins no data yet; add datasets to seamless.yaml and run qmtl-lock resolve"
    # The adjustment column shows once any entry pins adjusted prices, and the source's names
    # only where some symbol has one: a lock of raw bars under our own names reads as before.
    adjusted = any(r["adjustment"] != "raw" for r in rows)
    renamed = any("source_symbol" in r for r in rows)
    head = ["DATASET", "SYMBOL", *(["SOURCE_SYMBOL"] if renamed else []), "COVERAGE", "ROWS",
            "FINGERPRINT", *(["ADJUSTMENT"] * adjusted), "FLAGS", "EXPIRES"]
    short = short_fingerprints([r["fingerprint"] for r in rows])
    body = []
    for r in rows:
        flags = ", ".join(f"{k}={v}" for k, v in sorted(r["flags"].items())) or "-"
        if r["sla_violation"]:
            flags += " SLA!"
        source = [r.get("source_symbol", "-")] if renamed else []
        body.append([r["dataset"], r["symbol"], *source,
                     f"{r['start'][:10]} .. {r['end'][:10]}",
                     str(r["rows"]), short[r["fingerprint"]], *([r["adjustment"]] * adjusted),
                     flags, (r["expires_at"] or "never")[:10]])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *body])


MIN_HEX = 12


def short_fingerprints(fingerprints: list[str]) -> dict[str, str]:
    """Each fingerprint cut to the shortest prefix, at least MIN_HEX hex digits long, that
    tells the distinct fingerprints among ``fingerprints`` apart (``sha256:0a1b…``)."""
    distinct = sorted(set(fingerprints))
    for digits in range(MIN_HEX, 65):
        cut = {fp: fp[:fp.index(":") + 1 + digits] for fp in distinct}
        if len(set(cut.values())) == len(distinct):
            return {fp: short if short == fp else short + "…" for fp, short in cut.items()}
    return {fp: fp for fp in distinct}  # fingerprints that differ only beyond their digits


def gap_ranges(manifest_path: str | Path, dataset: str) -> list[dict[str, Any]]:
    """The missing bars of each locked symbol of ``dataset``, as ranges, from verified data.

    A range covers consecutive bars the calendar expected; ``accepted`` says whether the
    dataset declares it under ``accepted_gaps``.
    """
    import numpy as np
    from qmtl_engine import TimeRange, get_calendar, numpy_values, partition_windows

    from qmtl_lock.manifest import load_manifest
    from qmtl_lock.runtime import Lock

    loaded = load_manifest(manifest_path)
    lock = Lock.open(loaded.lock_path, store=loaded.store_setting)
    if dataset not in loaded.datasets:
        raise InputError(f"dataset {dataset!r} is not in {loaded.path}",
                         fix=f"datasets: {', '.join(sorted(loaded.datasets))}")
    ds = loaded.datasets[dataset]
    preset, interval = ds.preset, ds.preset.interval_ms
    calendar = get_calendar(preset.data.calendar)
    accepted = ds.accepted_ranges()
    out: list[dict[str, Any]] = []
    for symbol in lock.symbols(dataset):
        entry = lock.entry(dataset, symbol)
        present = numpy_values(lock.load(dataset, symbol)["ts"])  # int64 epoch ms
        coverage = TimeRange(*entry.coverage_bounds)
        runs: list[list[int]] = []  # [first missing bar, end, bars], in time order
        open_run = False  # the last run reached the end of its window's expected bars
        for window in partition_windows(coverage, preset.partition):
            expected = calendar.expected(window, interval)
            if expected.size == 0:
                continue  # a window the calendar keeps closed neither ends nor extends a run
            missing_idx = np.flatnonzero(~np.isin(expected, present))
            for a, b in _consecutive(missing_idx):
                lo = int(expected[missing_idx[a]])
                hi = int(expected[missing_idx[b]]) + interval
                if open_run and missing_idx[a] == 0:
                    # the gap runs on across the partition boundary: one range, not two
                    runs[-1][1:] = [hi, runs[-1][2] + b - a + 1]
                else:
                    runs.append([lo, hi, b - a + 1])
            open_run = bool(missing_idx.size) and int(missing_idx[-1]) == expected.size - 1
        out.extend({"symbol": symbol, "start": iso(lo), "end": iso(hi), "bars": bars,
                    "accepted": any(g.start <= lo and hi <= g.end for g in accepted)}
                   for lo, hi, bars in runs)
    return out


def _consecutive(idx: Any) -> list[tuple[int, int]]:
    """Runs of consecutive values in the sorted index array ``idx``, as (first, last)
    positions in ``idx``."""
    import numpy as np

    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [idx.size - 1]))
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def format_gaps(dataset: str, gaps: list[dict[str, Any]]) -> str:
    if not gaps:
        return f"{dataset}: no gaps"
    lines = []
    for g in gaps:
        note = " (accepted)" if g["accepted"] else ""
        lines.append(f"{dataset}/{g['symbol']}  [{g['start']}, {g['end']})  "
                     f"{g['bars']} bar{'s' if g['bars'] != 1 else ''}{note}")
    return "\n".join(lines)
