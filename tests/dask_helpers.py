"""Helpers for tests that run partition tasks on a real Dask cluster.

- :func:`local_cluster`: a ``distributed.LocalCluster`` of worker *processes* on loopback, for a
  module-scoped fixture (start-up costs seconds). Its scheduler lets a task's workers die once
  (``allowed-failures: 1``), so a test can kill a worker and still see the task finish, and a
  task that kills every worker it runs on is given up after two deaths, not four.
- :class:`RecordingExecutor`: wraps any executor and keeps the bytes of every function and item
  it ships, pickled as Dask pickles them, so a test can prove that a secret never enters the task
  graph (``recorder.assert_never_shipped(secret)``): workers read credentials from their own
  environment, by the names the tasks carry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import dask
import distributed
from distributed.protocol.pickle import dumps
from qmtl_engine.executor import Executor

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def local_cluster(n_workers: int = 2, *, env: Mapping[str, str] | None = None,
                  ) -> Iterator[distributed.LocalCluster]:
    """Worker processes of one thread each; the scheduler runs in this process."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
            env=dict(env) if env else None)
    try:
        yield cluster
    finally:
        cluster.close()


def observer_client(address: str, *, attempts: int = 3) -> distributed.Client:
    """A client that only looks at the cluster. distributed gives its event loop thread 10 s to
    start, which a machine busy with worker processes can miss once: try again then."""
    for attempt in range(attempts):
        try:
            return distributed.Client(address, set_as_default=False)
        except AssertionError:  # distributed.utils.LoopRunner: the loop did not start in time
            if attempt == attempts - 1:
                raise
    raise AssertionError("not reached")


class RecordingExecutor:
    """``inner``, keeping ``shipped``: the pickled bytes of each task's function and item."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.name = inner.name
        self.shipped: list[bytes] = []

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T], *,
                      skip: Callable[[int], bool] | None = None,
                      ) -> Iterator[tuple[int, R | BaseException]]:
        self.shipped += [dumps((fn, item)) for item in items]
        return self.inner.map_unordered(fn, items, skip=skip)

    def close(self, *, cancel: bool = False) -> None:
        self.inner.close(cancel=cancel)

    def __enter__(self) -> RecordingExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(cancel=exc[0] is not None)

    def assert_never_shipped(self, *secrets: str) -> None:
        """No task's function or item holds any of ``secrets`` (as UTF-8 bytes)."""
        assert self.shipped, "nothing was shipped: the check would prove nothing"
        for secret in secrets:
            assert secret, "an empty secret is in every byte string"
            found = [i for i, blob in enumerate(self.shipped) if secret.encode() in blob]
            assert not found, f"a secret was shipped in tasks {found}"


def worker_values(client: distributed.Client, fn: Callable[[], Any]) -> dict[str, Any]:
    """``fn()`` on every worker, by worker address (``Client.run``)."""
    return dict(client.run(fn))
