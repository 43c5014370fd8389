"""Resolve time of a temporary project, against writing the same rows to Parquet directly.

1. First resolve (empty store) of one symbol of ``ohlcv.synthetic.crypto.1m`` over ``--years``
   years, in-process, in seconds and rows/s: as resolve runs by default (one partition per
   core), and with ``--jobs 1``, whose breakdown of where the time went (source, conformance,
   hashing, store writes) is taken from wrappers around the engine's functions.
2. References measured in the same run on the same rows: generating them with the synthetic
   source alone, conforming them alone, hashing them alone, and writing them with
   ``pyarrow.parquet.write_table`` into one file per month, with the store's writer options and
   with pyarrow's defaults. Their sum over the cores is what bounds a first resolve.
3. A second, no-op resolve: in-process against the first resolve (and counted data reads, which
   must be zero), and as a real ``qmtl-lock resolve`` subprocess against ``python -c pass``.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import (
    DATASET,
    PYTHON,
    SYMBOL,
    Report,
    cli_exe,
    expected_rows,
    mb,
    median_cmds,
    median_time,
    parser,
    ratio,
    run_cmd,
    secs,
    step,
    temp_project,
    timed,
)

PANDAS_PROBE = (
    "import sys, time, numpy as np, pyarrow as pa\n"
    "t = time.perf_counter(); pa.array(np.zeros(4)); t = time.perf_counter() - t\n"
    "print(t, 'pandas' in sys.modules)"
)


class Probe:
    """Wraps engine functions to count calls and accumulate their wall time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self.calls[label] += 1

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, original))

    @classmethod
    def of_engine(cls, *extra: tuple[Any, str, str]) -> Probe:
        """A probe on the source's fetch, conformance and the store's writes, and on each
        ``(owner, attribute, label)`` of ``extra``."""
        import qmtl_engine.materialize
        from qmtl_engine.sources.synthetic import SyntheticSource
        from qmtl_engine.store import Store

        probe = cls()
        probe.wrap(SyntheticSource, "fetch", "source fetch")
        probe.wrap(qmtl_engine.materialize, "conform", "conformance")
        for owner, attr, label in extra:
            probe.wrap(owner, attr, label)
        for writer in ("store_object", "write_checkpoint", "put_snapshot"):
            if hasattr(Store, writer):
                probe.wrap(Store, writer, "store writes")
        return probe

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rep = Report(f"resolve: {args.years} year(s) of 1-minute bars, one symbol")

    # Imports that resolve does lazily are done up front: they are a per-process cost, not a
    # per-row one (the CLI no-op figure below shows them).
    import pyarrow.parquet as pq
    import qmtl_engine.materialize
    import qmtl_engine.store
    from qmtl_engine.fingerprint import partition_digest
    from qmtl_engine.ranges import TimeRange, partition_windows
    from qmtl_engine.sources import make_source
    from qmtl_engine.store import Store

    from qmtl_lock.manifest import load_manifest
    from qmtl_lock.resolve import resolve

    # pyarrow imports pandas (when installed) on the first pa.array() of a numpy array; the
    # engine builds its arrays from buffers instead (engine/arrow_np.py), so resolve never pays
    # for it. What it would cost is measured on its own below; pandas is not imported here.
    step("what the pandas import that pa.array() triggers would cost (subprocess)")
    probe_pandas = run_cmd([PYTHON, "-c", PANDAS_PROBE]).stdout.split()
    t_pandas, pandas_triggered = float(probe_pandas[0]), probe_pandas[1] == "True"

    from qmtl_engine import default_jobs, get_calendar
    from qmtl_engine.conformance import RawBatch, conform
    from qmtl_engine.contracts import get_contract

    cores = default_jobs()
    with temp_project(args.years, prefix="qmtl-bench-jobs1-") as one_core:
        step(f"first resolve of {args.years} year(s) into an empty store, --jobs 1")
        probe = Probe.of_engine((qmtl_engine.store, "partition_digest",
                                 "hash (partition digest)"))
        t_one, _ = timed(lambda: resolve(one_core / "seamless.yaml", jobs=1))
        phases = dict(probe.seconds)
        probe.restore()

    with temp_project(args.years) as project:
        manifest = project / "seamless.yaml"
        step(f"first resolve of {args.years} year(s) into an empty store, {cores} at once "
             "(the default)")
        t_first, result = timed(lambda: resolve(manifest))
        entry = result.lock.datasets[DATASET].symbols[SYMBOL]
        rows, parts = entry.rows, entry.partitions
        assert rows == expected_rows(args.years), (rows, expected_rows(args.years))

        step("no-op resolves (in-process)")
        probe = Probe.of_engine((Store, "read_object", "store read_object"),
                                (pq, "read_table", "pq.read_table"))
        lock_bytes = (project / "seamless.lock").read_bytes()
        t_noop = median_time(lambda: resolve(manifest), runs=5)
        data_calls = {k: v for k, v in probe.calls.items()}
        assert (project / "seamless.lock").read_bytes() == lock_bytes
        probe.restore()

        step("no-op `qmtl-lock resolve` and `python -c pass` subprocesses (median of 5)")
        out = run_cmd([cli_exe(), "resolve"], cwd=project).stdout
        assert "up to date" in out, out
        subs = median_cmds({"resolve": [cli_exe(), "resolve"], "pass": [PYTHON, "-c", "pass"],
                            "check": [cli_exe(), "check"]}, runs=5, cwd=project)
        t_cli_noop, t_pass, t_check = subs["resolve"], subs["pass"], subs["check"]

        step("reference: generate the same rows with the synthetic source alone")
        loaded = load_manifest(manifest)
        preset = loaded.datasets[DATASET].preset
        source = make_source(preset.data.source.name, preset.data.source.options,
                             base_dir=preset.base_dir)
        coverage = TimeRange(*entry.coverage_bounds)
        windows = list(partition_windows(coverage, preset.partition))
        t_gen, tables = timed(lambda: [source.fetch(SYMBOL, w, preset.interval_ms).table
                                       for w in windows])
        step("reference: conform the same rows alone")
        contract = get_contract(preset.data.contract.name, loaded.datasets[DATASET].spec
                                .contract_version)
        calendar = get_calendar(preset.data.calendar)
        t_conform, conformed = timed(lambda: [conform(
            RawBatch(t), window=w, interval_ms=preset.interval_ms, contract=contract,
            calendar=calendar)[0] for t, w in zip(tables, windows, strict=True)])
        snap = Store(loaded.store_url).get_snapshot(entry.dataset_fingerprint)
        t_hash, digests = timed(lambda: [partition_digest(t).value for t in conformed])
        same = digests == [p.digest for p in snap.partitions]
        assert same, "the reference rows differ from the resolved partitions"
        store_bytes = sum(Path(p).stat().st_size for p in
                          (Store(loaded.store_url).object_path(d) for d in digests))

    with tempfile.TemporaryDirectory(prefix="qmtl-bench-ref-") as tmp:
        def write_all(**opts: Any) -> int:
            total = 0
            for i, t in enumerate(tables):
                path = f"{tmp}/{i:04d}.parquet"
                pq.write_table(t, path, **opts)
                total += Path(path).stat().st_size
            return total

        step("reference: pyarrow.parquet.write_table, one file per month, store options")
        t_write, size_plain = timed(lambda: write_all(use_dictionary=False,
                                                      compression="snappy"))
        step("reference: pyarrow.parquet.write_table, pyarrow defaults")
        t_write_default, size_default = timed(lambda: write_all())

    # -- report ---------------------------------------------------------------------------------
    rep.row("rows / partitions", f"{rows:,} / {parts}")
    rep.goal("first resolve", t_first, "plain write", t_write, 2.0)  # issue 11: cold resolve
    rep.row("first resolve rows/s", f"{rows / t_first / 1e6:.2f} M/s",
            f"plain write {rows / t_write / 1e6:.2f} M/s", ratio(t_write, t_first))
    work = t_gen + t_conform + t_hash + t_write
    rep.row(f"  bound: that work on {cores} core(s)", secs(work / cores), "plain write",
            ratio(work / cores, t_write))
    rep.row("    generate rows (source alone)", secs(t_gen), "plain write", ratio(t_gen, t_write))
    rep.row("    conform them (alone)", secs(t_conform), "plain write",
            ratio(t_conform, t_write))
    rep.row("    canonical hash of all rows", secs(t_hash), "plain write", ratio(t_hash, t_write))
    rep.row("  write, pyarrow defaults", secs(t_write_default), "plain write",
            ratio(t_write_default, t_write))
    rep.row("first resolve, --jobs 1", secs(t_one), f"default ({cores} at once) {secs(t_first)}",
            ratio(t_one, t_first))
    accounted = 0.0
    for label in ("source fetch", "conformance", "hash (partition digest)", "store writes"):
        s = phases.get(label, 0.0)
        if label == "store writes":  # the store hashes inside its write methods
            s -= phases.get("hash (partition digest)", 0.0)
            label = "store writes (Parquet, publish)"
        accounted += s
        rep.row(f"  in --jobs 1: {label}", secs(s), "--jobs 1", f"{s / t_one:.0%}")
    rest = t_one - accounted
    rep.row("  in --jobs 1: everything else", secs(rest), "--jobs 1", f"{rest / t_one:.0%}")
    rep.row("no-op resolve (in-process)", secs(t_noop), f"first resolve {secs(t_first)}",
            ratio(t_noop, t_first))
    io_calls = {k: v for k, v in data_calls.items()
                if k in ("source fetch", "store read_object", "pq.read_table", "conformance",
                         "store writes")}
    rep.row("  data reads/writes in no-op resolve", str(sum(io_calls.values())), "must be 0",
            "ok" if not any(io_calls.values()) else "FAIL: " + ", ".join(
                f"{k} x{v}" for k, v in io_calls.items() if v))
    rep.row("no-op `qmtl-lock resolve` (CLI)", secs(t_cli_noop), f"python -c pass {secs(t_pass)}",
            ratio(t_cli_noop, t_pass))
    rep.row("  same, vs `qmtl-lock check`", secs(t_cli_noop), f"check {secs(t_check)}",
            ratio(t_cli_noop, t_check))
    rep.row("store objects on disk", mb(store_bytes), f"plain write {mb(size_plain)}",
            ratio(store_bytes, size_plain))
    rep.row("  pyarrow-default files", mb(size_default), f"plain write {mb(size_plain)}",
            ratio(size_default, size_plain))
    rep.note("plain write = pq.write_table(use_dictionary=False, compression='snappy') of the "
             "same rows, one file per month, already in memory; 'ratio' of rows/s is "
             "resolve/plain (below 1 = slower)")
    if pandas_triggered:
        rep.row("avoided: first pa.array() of numpy imports pandas", secs(t_pandas),
                f"first resolve {secs(t_first)}", f"{t_pandas / t_first:.0%}")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
