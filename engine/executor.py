"""Where partition tasks run: in this process (``local``), or on a Dask cluster (``dask``).

The engine hands an executor plain functions and picklable arguments and takes back results (or
the exceptions the functions raised) in whatever order they finish. It never asks where a task
ran, so every executor produces the same snapshots and the same lock.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Skipped(Exception):
    """The outcome of a task that was not run because ``skip`` said so when its turn came."""


class Executor(Protocol):
    """Runs partition tasks. ``name`` is how the command line and the logs call it."""

    name: str

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T], *,
                      skip: Callable[[int], bool] | None = None,
                      ) -> Iterator[tuple[int, R | BaseException]]:
        """Run ``fn`` on every item and yield ``(index, result)`` as each finishes; a task that
        raised yields the exception it raised instead of a result (the others go on). An item
        for which ``skip(index)`` is true when its turn comes is not run: it yields
        :class:`Skipped` (the engine skips the windows of a request that already failed)."""
        ...

    def close(self, *, cancel: bool = False) -> None:
        """Release what the executor holds; with ``cancel``, drop tasks not yet started."""
        ...


MAX_DEFAULT_JOBS = 8


def default_jobs() -> int:
    """Partitions materialized at once when the user does not say: one per core this process
    may run on (its CPU affinity, as a container or ``taskset`` limits it), at most
    :data:`MAX_DEFAULT_JOBS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_JOBS, cores))


class LocalExecutor:
    """Tasks on ``jobs`` threads of this process (one: inline, in order).

    Threads, not processes: Parquet encoding, hashing and the conformance checks run in pyarrow
    and numpy, which release the GIL, and a thread shares the process's rate limiters.
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self.jobs = jobs
        self._pool: cf.ThreadPoolExecutor | None = None

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T], *,
                      skip: Callable[[int], bool] | None = None,
                      ) -> Iterator[tuple[int, R | BaseException]]:
        def one(i: int) -> R:
            if skip is not None and skip(i):
                raise Skipped(i)
            return fn(items[i])

        if self.jobs == 1 or len(items) <= 1:
            for i in range(len(items)):
                try:
                    result: R | BaseException = one(i)
                except Exception as exc:  # reported as the task's outcome, like a worker's
                    result = exc
                yield i, result
            return
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.jobs, thread_name_prefix="qmtl-lock task")
        futures = {self._pool.submit(one, i): i for i in range(len(items))}
        try:
            for future in cf.as_completed(futures):
                failed = future.exception()
                yield futures[future], failed if failed is not None else future.result()
        finally:  # the consumer stopped early (Ctrl-C, or it gave up): start nothing more
            for future in futures:
                future.cancel()

    def close(self, *, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
