"""Peak memory of resolving 1 year against ``--years`` years: should be nearly flat.

Materialization streams partition by partition, so ten times the rows should need about the same
memory. Each case runs in its own fresh subprocess (this script with ``--child``), so figures never
mix:

- ``rss`` mode: the RSS high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before the
  resolve (after the imports) and after it, plus pyarrow's memory pool high-water mark
  (``default_memory_pool().max_memory()``);
- ``trace`` mode: the ``tracemalloc`` peak of Python and numpy allocations during the resolve
  (tracemalloc adds its own overhead, so it runs in a separate subprocess from the RSS case).

The reference is the 1-year case of the same run (one month when ``--years 1``, so that a quick
run still compares two lengths); the ratio larger/reference is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from _common import (
    PYTHON,
    Report,
    parser,
    run_cmd,
    step,
    temp_project,
)


def child(months: int, mode: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet

    from qmtl_lock.resolve import resolve

    out: dict[str, float] = {}
    with temp_project(0, months, prefix="qmtl-bench-mem-") as project:
        manifest = project / "seamless.yaml"
        out["rss_before"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if mode == "trace":
            import tracemalloc

            tracemalloc.start()
        t0 = time.perf_counter()
        result = resolve(manifest)
        out["seconds"] = time.perf_counter() - t0
        if mode == "trace":
            out["traced_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        out["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["pool_peak"] = pa.default_memory_pool().max_memory()
        out["arrow_live_after"] = pa.total_allocated_bytes()
        out["rows"] = sum(s.rows for d in result.lock.datasets.values()
                          for s in d.symbols.values())
    print("RESULT " + json.dumps(out))


def run_case(months: int, mode: str) -> dict[str, float]:
    proc = run_cmd([PYTHON, str(Path(__file__).resolve()), "--child", "--months", str(months),
                    "--mode", mode])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    data: dict[str, float] = json.loads(line[len("RESULT "):])
    return data


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--months", type=int, default=12, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("rss", "trace"), default="rss", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.months, args.mode)
        return

    big_m = args.years * 12
    base_m = 12 if big_m > 12 else 1

    def name(months: int) -> str:
        return f"{months // 12}y" if months % 12 == 0 else f"{months}m"

    label, ref = name(big_m), name(base_m)
    rep = Report(f"memory: resolve {ref} vs {label} of 1-minute bars (fresh subprocesses)")
    cases: dict[tuple[int, str], dict[str, float]] = {}
    for months in (base_m, big_m):
        for mode in ("rss", "trace"):
            step(f"subprocess: resolve {name(months)}, {mode}")
            cases[(months, mode)] = run_case(months, mode)

    small, big = cases[(base_m, "rss")], cases[(big_m, "rss")]
    small_t, big_t = cases[(base_m, "trace")], cases[(big_m, "trace")]

    def mib(n: float) -> str:
        return f"{n / 2**20:.0f} MiB"

    def r(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    rep.row("rows resolved", f"{label}: {big['rows']:,.0f}", f"{ref}: {small['rows']:,.0f}",
            r(big["rows"], small["rows"]))
    rep.row("peak RSS (ru_maxrss)", f"{label}: {mib(big['rss_peak'])}",
            f"{ref}: {mib(small['rss_peak'])}", r(big["rss_peak"], small["rss_peak"]))
    d_big, d_small = big["rss_peak"] - big["rss_before"], small["rss_peak"] - small["rss_before"]
    rep.row("peak RSS above imports", f"{label}: {mib(d_big)}", f"{ref}: {mib(d_small)}",
            r(d_big, d_small))
    rep.row("pyarrow pool peak", f"{label}: {mib(big['pool_peak'])}",
            f"{ref}: {mib(small['pool_peak'])}", r(big["pool_peak"], small["pool_peak"]))
    rep.row("tracemalloc peak (Python+numpy)", f"{label}: {mib(big_t['traced_peak'])}",
            f"{ref}: {mib(small_t['traced_peak'])}",
            r(big_t["traced_peak"], small_t["traced_peak"]))
    rep.row("arrow bytes live after resolve", f"{label}: {mib(big['arrow_live_after'])}",
            f"{ref}: {mib(small['arrow_live_after'])}", "")
    rep.row("RSS after imports (baseline)", f"{label}: {mib(big['rss_before'])}",
            f"{ref}: {mib(small['rss_before'])}", r(big["rss_before"], small["rss_before"]))
    rep.row("resolve time (rss case)", f"{label}: {big['seconds']:.2f} s",
            f"{ref}: {small['seconds']:.2f} s", r(big["seconds"], small["seconds"]))
    rep.note("a ratio near 1.0 means memory does not grow with the length of the range")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
