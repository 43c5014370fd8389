"""The `files` source: peak memory of 1 year against ``--years`` years, and files read by an
extension (issue 11: "peak memory flat from 1 to 20 years; an extension reads only the files that
can hold the new windows").

Vendor data: 1-minute bars from 2000-01-01 as CSV (``Date,Open,High,Low,Close,Volume``, naive
ISO times), written once as one file per month; the cases take the first months of them, as
hard links (``monthly``) or joined into one file (``single``). Each case is a temporary
project with a files preset (monthly partitions), written by this process and resolved by
``qmtl_lock.resolve.resolve()`` in a fresh subprocess (this script with ``--child``), so memory
figures never mix:

- memory: the RSS high-water mark (``ru_maxrss``) of the child and its rise above the
  post-import baseline, and pyarrow's pool peak; the reference is the 1-year case of the same
  layout in the same run (one month when ``--years 1``).
- extension: ``--years`` years of monthly files plus one of the next January holding one day
  are resolved; the vendor then adds the second day to that file and the request's end moves
  by one day. Files read by that resolve are counted in the child by an audit hook
  (``sys.addaudithook``, ``open`` events under the vendor folder), with the index of the first
  resolve in the cache folder, and again with an empty cache folder (no index: every file
  must be read to know what it holds). The reference is the number of files whose rows can fall
  in the windows the extension fetches, from what was written.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import ENV, PYTHON, Report, parser, secs, step

# Vendor histories start early enough that twenty-odd years end before the pinned clock
# (QMTL_LOCK_NOW, 2026-01-01): a request is cut at the last closed bar.
START_YEAR = 2000
MAX_YEARS = 25
PID = "ohlcv.vendor.csv.1m"
SYMBOL = "BTCUSD"
CATALOG = """\
version: 1
data_presets:
  {pid}:
    kind: ohlcv
    interval_ms: 60000
    stabilization_bars: 0
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    partition: month
    source: {{name: files, options: {{url: "vendor/{url}", columns: {{ts: Date, open: Open,
      high: High, low: Low, close: Close, volume: Volume}}}}}}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""
MANIFEST = """\
version: 1
store: .seamless/store
presets: [presets.yaml]
datasets:
  vendor:
    preset: {pid}
    symbols: [{symbol}]
    start: {start}
    end: {end}
    contract_version: v1
"""


def month_start(k: int) -> datetime:
    """The first instant of month ``k`` counted from START_YEAR-01."""
    return datetime(START_YEAR + k // 12, k % 12 + 1, 1, tzinfo=UTC)


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def bars_csv(start_ms: int, end_ms: int, seed: int, header: bool = True) -> bytes:
    """1-minute bars of ``[start_ms, end_ms)`` as vendor CSV text (a seeded random walk)."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    ts = np.arange(start_ms, end_ms, 60_000, dtype=np.int64)
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-4, ts.size)))
    open_ = np.concatenate(([100.0], close[:-1]))
    spread = np.abs(rng.normal(0, 5e-5, ts.size)) * close
    table = pa.table({
        "Date": pc.strftime(pa.array(ts // 1000, pa.timestamp("s")), "%Y-%m-%d %H:%M:%S"),
        "Open": open_, "High": np.maximum(open_, close) + spread,
        "Low": np.minimum(open_, close) - spread, "Close": close,
        "Volume": np.round(rng.uniform(0, 50, ts.size), 4)})
    out = io.BytesIO()
    pcsv.write_csv(table, out, pcsv.WriteOptions(include_header=header, quoting_style="none"))
    return out.getvalue()


def write_months(folder: Path, months: int) -> list[Path]:
    """One CSV per month for ``months`` months; the files, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(months):
        path = folder / month_file(k)
        path.write_bytes(bars_csv(to_ms(month_start(k)), to_ms(month_start(k + 1)), seed=k))
        out.append(path)
    return out


def month_file(k: int) -> str:
    return f"{SYMBOL}-{month_start(k):%Y-%m}.csv"


def link_months(pool: list[Path], months: int, folder: Path) -> list[str]:
    """The first ``months`` monthly files of ``pool`` in ``folder``, as hard links (the same
    bytes, no copy)."""
    folder.mkdir(parents=True)
    for path in pool[:months]:
        os.link(path, folder / path.name)
    return [p.name for p in pool[:months]]


def join_months(pool: list[Path], months: int, folder: Path) -> None:
    """The first ``months`` monthly files of ``pool`` as one file with one header."""
    folder.mkdir(parents=True)
    with (folder / f"{SYMBOL}.csv").open("wb") as out:
        for k, path in enumerate(pool[:months]):
            with path.open("rb") as f:
                if k:
                    f.readline()  # the header, once
                shutil.copyfileobj(f, out, 1 << 22)
    age(folder)


def age(where: Path) -> None:
    """Set the mtime of ``where`` (or of every file in it) a minute back."""
    past = time.time() - 60
    for p in ([where] if where.is_file() else where.iterdir()):
        os.utime(p, (past, past))


def project(root: Path, layout: str, end: datetime) -> Path:
    url = f"{SYMBOL}-*.csv" if layout == "monthly" else f"{SYMBOL}.csv"
    (root / "presets.yaml").write_text(CATALOG.format(pid=PID, url=url), encoding="utf-8")
    manifest = root / "seamless.yaml"
    manifest.write_text(MANIFEST.format(pid=PID, symbol=SYMBOL, start=f"{START_YEAR}-01-01",
                                        end=end.strftime("%Y-%m-%d")), encoding="utf-8")
    return manifest


# -- the child: one resolve in a fresh process ------------------------------------------------
def child(manifest: Path, vendor: Path, update: bool) -> None:
    import contextlib

    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    from qmtl_lock.resolve import resolve

    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401  (pyarrow imports it on first use: before measuring)
    opened: set[str] = set()
    prefix = str(vendor.resolve())

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].startswith(prefix):
            opened.add(args[0])

    sys.addaudithook(hook)
    out: dict[str, float] = {"rss_before": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                             * 1024}
    t0 = time.perf_counter()
    result = resolve(manifest, update=update)
    out["seconds"] = time.perf_counter() - t0
    out["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["pool_peak"] = pa.default_memory_pool().max_memory()
    out["files_opened"] = len(opened)
    out["rows"] = sum(s.rows for d in result.lock.datasets.values() for s in d.symbols.values())
    print("RESULT " + json.dumps(out))


def run_child(manifest: Path, vendor: Path, cache: Path, update: bool = False,
              ) -> dict[str, float]:
    cmd = [PYTHON, str(Path(__file__).resolve()), "--child", str(manifest), "--vendor",
           str(vendor)] + (["--update"] if update else [])
    proc = subprocess.run(cmd, cwd=manifest.parent, env={**ENV, "QMTL_LOCK_CACHE": str(cache)},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stdout}\n{proc.stderr}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    data: dict[str, float] = json.loads(line[len("RESULT "):])
    return data


# -- cases -------------------------------------------------------------------------------------
def single_case(tmp: Path, pool: list[Path], months: int) -> dict[str, float]:
    """``months`` months in one file, resolved."""
    root = tmp / f"single-{months}"
    join_months(pool, months, root / "vendor")
    out = run_child(project(root, "single", month_start(months)), root / "vendor",
                    root / "cache")
    shutil.rmtree(root, ignore_errors=True)
    return out


def extension_case(tmp: Path, pool: list[Path], months: int, *, bare_too: bool,
                   ) -> dict[str, Any]:
    """``months`` monthly files and one holding a day, resolved to the end of that day; the
    vendor then adds the next day to that file and the request follows it, with the index of
    the first resolve, and (``bare_too``) in a copy of the project with an empty cache folder."""
    root, bare = tmp / f"extension-{months}", tmp / f"extension-{months}-no-index"
    # Linked now, not after the first resolve: a new link moves a file's ctime, which is part
    # of its identity, so the index would rightly not be believed.
    wheres = [root, bare] if bare_too else [root]
    day1 = month_start(months)
    for where in wheres:
        names = [*link_months(pool, months, where / "vendor"), month_file(months)]
        tail = where / "vendor" / names[-1]
        tail.write_bytes(bars_csv(to_ms(day1), to_ms(day1) + 86_400_000, seed=months))
        age(tail)  # the month under way: its first day
    vendor = root / "vendor"
    manifest = project(root, "monthly", day1.replace(day=2))
    out: dict[str, Any] = {"files": len(names),
                           "first": run_child(manifest, vendor, root / "cache")}
    text = bars_csv(to_ms(day1), to_ms(day1) + 2 * 86_400_000, seed=months)
    for where in wheres:  # the vendor adds the second day to the last file
        last = where / "vendor" / names[-1]
        last.write_bytes(text)
        age(last)
    if bare_too:
        shutil.copytree(root / ".seamless", bare / ".seamless", copy_function=_link)
        shutil.copy2(root / "seamless.lock", bare / "seamless.lock")
        shutil.copy2(root / "presets.yaml", bare / "presets.yaml")
    for where in wheres:
        project(where, "monthly", day1.replace(day=3))
    # the window the extension fetches: the last month's, now two days long
    window = (to_ms(day1), to_ms(day1) + 2 * 86_400_000)
    spans = [(to_ms(month_start(k)), to_ms(month_start(k + 1))) for k in range(months)]
    spans.append(window)
    out["can_hold"] = sum(1 for a, b in spans if a < window[1] and b > window[0])
    out["extended"] = run_child(manifest, vendor, root / "cache", update=True)
    if bare_too:
        out["no_index"] = run_child(bare / "seamless.yaml", bare / "vendor", bare / "cache",
                                    update=True)
        shutil.rmtree(bare, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return out


def _link(src: str, dst: str) -> None:
    """Link the store's immutable objects and snapshot manifests; copy what may change."""
    if any(part in Path(src).parts for part in ("objects", "snapshots")):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--vendor", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--update", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.vendor, args.update)
        return
    if not 1 <= args.years <= MAX_YEARS:
        raise SystemExit(f"--years must be 1 to {MAX_YEARS}: bars start in {START_YEAR}")
    big_m = args.years * 12
    base_m = 12 if big_m > 12 else 1

    def name(months: int) -> str:
        return f"{months // 12}y" if months % 12 == 0 else f"{months}m"

    label, ref = name(big_m), name(base_m)
    rep = Report(f"files source: {ref} vs {label} of 1-minute bars from vendor CSV "
                 "(fresh subprocesses)")
    mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-files-") as tmp_name:
        tmp = Path(tmp_name)
        step(f"writing {big_m} monthly files of 1-minute bars")
        pool = write_months(tmp / "pool", big_m)
        age(tmp / "pool")
        step(f"subprocess: resolve {ref} of monthly files, extend it by a day (with and "
             "without the index)")
        ext_small = extension_case(tmp, pool, base_m, bare_too=True)
        step(f"subprocess: resolve {label} of monthly files, extend it by a day")
        ext = extension_case(tmp, pool, big_m, bare_too=False)
        step(f"subprocess: resolve {ref} and {label} in one vendor file")
        small_s, big_s = single_case(tmp, pool, base_m), single_case(tmp, pool, big_m)
    for layout, small, big in (("monthly files", ext_small["first"], ext["first"]),
                               ("one file", small_s, big_s)):
        rep.goal(f"files source peak RSS, {layout}, {label} vs {ref}", big["rss_peak"], ref,
                 small["rss_peak"], 1.5, unit=mib)
        above_big = big["rss_peak"] - big["rss_before"]
        above_small = small["rss_peak"] - small["rss_before"]
        rep.row(f"  peak RSS above imports, {layout}", f"{label} {mib(above_big)}",
                f"{ref} {mib(above_small)}", f"{above_big / above_small:.2f}x")
        rep.row(f"  pyarrow pool peak, {layout}", f"{label} {mib(big['pool_peak'])}",
                f"{ref} {mib(small['pool_peak'])}", f"{big['pool_peak'] / small['pool_peak']:.2f}x")
        rep.row(f"  resolve time, {layout}", f"{label} {secs(big['seconds'])}",
                f"{ref} {secs(small['seconds'])}",
                f"{big['seconds'] / small['seconds']:.2f}x for {big['rows'] / small['rows']:.1f}x "
                "the rows")
    rep.goal("files read by a one-day extension of monthly files",
             ext["extended"]["files_opened"], "files that can hold the new window",
             ext["can_hold"], 1.0, unit=lambda n: f"{n:.0f}")
    rep.row("  one-day extension, time", secs(ext["extended"]["seconds"]),
            f"first resolve of {ext['files']} files {secs(ext['first']['seconds'])}",
            f"{ext['extended']['seconds'] / ext['first']['seconds']:.2f}x")
    small = ext_small
    rep.row("  extension with the index vs without, files read",
            f"{small['extended']['files_opened']:.0f} of {small['files']}",
            f"without (empty cache) {small['no_index']['files_opened']:.0f}")
    rep.row("  extension with the index vs without, time", secs(small["extended"]["seconds"]),
            f"without {secs(small['no_index']['seconds'])}",
            f"{small['extended']['seconds'] / small['no_index']['seconds']:.2f}x")
    keys = 8 * (ext["first"]["rows"] - small["first"]["rows"])
    rep.note("peak RSS is the child's whole high-water mark (imports included). Part of its "
             f"rise with the years is the engine's, not the source's: it keeps each partition's "
             f"distinct row hashes until the finalize, 8 bytes a row ({mib(keys)} more for "
             f"{label} than for {ref}; bench_memory.py shows it with the synthetic source)")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
