"""``show``: a table of what is locked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.ranges import iso
from qmtl_lock.lockfile import Lockfile, read_lock


def show_rows(lock_path: str | Path, dataset: str | None = None) -> list[dict[str, Any]]:
    lock: Lockfile = read_lock(lock_path)
    if dataset is not None and dataset not in lock.datasets:
        raise InputError(f"dataset {dataset!r} is not in the lock", where=str(lock_path),
                         fix=f"locked datasets: {', '.join(sorted(lock.datasets)) or '(none)'}")
    rows = []
    for name, entry in sorted(lock.datasets.items()):
        if dataset is not None and name != dataset:
            continue
        for symbol, sym in sorted(entry.symbols.items()):
            flags = {k: v for k, v in sym.conformance_flags.items() if v}
            rows.append({
                "dataset": name, "symbol": symbol,
                "start": iso(sym.coverage_bounds[0]), "end": iso(sym.coverage_bounds[1]),
                "rows": sym.rows, "fingerprint": sym.dataset_fingerprint,
                "flags": flags,
                "sla_violation": sym.sla.get("violation"),
                "expires_at": iso(sym.expires_at) if sym.expires_at is not None else None,
            })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "the lock pins no data yet; add datasets to seamless.yaml and run qmtl-lock resolve"
    head = ["DATASET", "SYMBOL", "COVERAGE", "ROWS", "FINGERPRINT", "FLAGS", "EXPIRES"]
    body = []
    for r in rows:
        flags = ", ".join(f"{k}={v}" for k, v in sorted(r["flags"].items())) or "-"
        if r["sla_violation"]:
            flags += " SLA!"
        body.append([r["dataset"], r["symbol"], f"{r['start'][:10]} .. {r['end'][:10]}",
                     str(r["rows"]), r["fingerprint"][:19] + "…", flags,
                     (r["expires_at"] or "never")[:10]])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *body])
