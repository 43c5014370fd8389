"""Per-task overhead of the dask executor, against the local one and one partition's real work.

``--tasks`` trivial partition tasks (each returns an outcome shaped like a real one: a digest, a
row count, flag counts) go through, in the same run:

- ``LocalExecutor(1)``: inline, in order — the reference of every ratio below;
- ``LocalExecutor(2)``: two threads of this process (``--jobs 2``);
- ``DaskExecutor(workers=2)``: a ``distributed.LocalCluster`` of two worker processes started for
  the run (start-up and shutdown timed apart, not per task).

Each is timed as the median of a few rounds after one discarded round. The Dask figure per task is
then set against the real work of one task: writing one month of 1-minute bars (44,640 rows) with
the store's Parquet options, measured in the same run — so the overhead reads as a share of what a
partition task costs anyway. Without the ``[dask]`` extra the Dask rows are skipped, and said so.
``--years`` is accepted (``run_all.py`` passes it) and not used.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import Report, median_time, parser, ratio, secs, step, timed

ROUNDS = 3
MONTH_ROWS = 31 * 24 * 60


def outcome(i: int) -> dict[str, Any]:
    """What a partition task returns, with no work behind it."""
    return {"window": i, "digest": "sha256:" + f"{i:064x}", "rows": MONTH_ROWS,
            "flags": {"gap_bars": 0, "repeated_bars": 0}}


def per_task(seconds: float, tasks: int) -> str:
    return f"{seconds / tasks * 1000:.4f} ms/task"


def month_write_time() -> float:
    """Median time to write one month of 1-minute OHLCV bars with the store's options."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    close = 100 + rng.standard_normal(MONTH_ROWS).cumsum()
    table = pa.table({
        "ts": pa.array(np.arange(MONTH_ROWS, dtype="int64") * 60_000, pa.timestamp("ms", "UTC")),
        "open": close, "high": close + 1, "low": close - 1, "close": close,
        "volume": rng.random(MONTH_ROWS) * 10})
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-") as folder:
        path = Path(folder) / "month.parquet"
        return median_time(lambda: pq.write_table(table, path, use_dictionary=False,
                                                  compression="snappy"), 5)


def run_all(run: Callable[[], list[tuple[int, Any]]], tasks: int) -> float:
    """Median wall time of ``run`` after one discarded round; every outcome must arrive."""
    got = run()
    if sorted(i for i, _ in got) != list(range(tasks)):
        raise SystemExit("an executor lost or repeated tasks")
    return median_time(run, ROUNDS)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=500, help="trivial tasks per round (500)")
    args = p.parse_args()
    tasks = args.tasks
    items = list(range(tasks))
    rep = Report(f"dask overhead: {tasks} trivial partition tasks per round")

    from qmtl_engine.errors import InputError
    from qmtl_engine.executor import LocalExecutor

    results: dict[str, float] = {}
    for jobs in (1, 2):
        step(f"LocalExecutor({jobs}): median of {ROUNDS} rounds")
        local = LocalExecutor(jobs)
        results[f"LocalExecutor({jobs})"] = run_all(
            lambda ex=local: list(ex.map_unordered(outcome, items)), tasks)
        local.close()
    reference = results["LocalExecutor(1)"]
    ref = f"LocalExecutor(1) {per_task(reference, tasks)}"
    rep.row("LocalExecutor(1), inline (reference)", per_task(reference, tasks))
    rep.row("LocalExecutor(2), threads", per_task(results["LocalExecutor(2)"], tasks), ref,
            ratio(results["LocalExecutor(2)"], reference))

    try:
        from qmtl_engine.dask_executor import DaskExecutor
    except InputError as missing:
        rep.note(f"DaskExecutor skipped: {missing.what} ({missing.fix})")
        rep.finish(args.json)
        return

    step("DaskExecutor(workers=2): start a LocalCluster of 2 worker processes")
    t_start, dask_executor = timed(lambda: DaskExecutor(workers=2, threads_per_worker=1))
    step(f"DaskExecutor(workers=2): median of {ROUNDS} rounds")
    t_dask = run_all(lambda: list(dask_executor.map_unordered(outcome, items)), tasks)
    t_close, _ = timed(dask_executor.close)
    step("reference: write one month of 1-minute bars to Parquet (median of 5)")
    t_month = month_write_time()

    rep.row("DaskExecutor(workers=2), processes", per_task(t_dask, tasks), ref,
            ratio(t_dask, reference))
    rep.row("  against one month's Parquet write", per_task(t_dask, tasks),
            f"write of {MONTH_ROWS:,} rows {t_month * 1000:.1f} ms",
            ratio(t_dask / tasks, t_month))
    rep.row("  cluster start-up (once per run)", secs(t_start))
    rep.row("  cluster shutdown (once per run)", secs(t_close))
    rep.note("the Dask rows include pickling each task and its outcome, the scheduler's round "
             "trips and the as-completed iteration; start-up and shutdown are paid once per "
             "resolve, not per task")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
