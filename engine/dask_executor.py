"""Partition tasks on a Dask cluster: ``resolve --executor dask``.

Imported only when the dask executor is asked for; without the ``[dask]`` extra, importing this
module raises :class:`~qmtl_engine.errors.InputError` with the install hint.

:class:`DaskExecutor` connects to a running scheduler (``scheduler="tcp://HOST:PORT"``) or starts
a ``distributed.LocalCluster`` of worker processes for the run (``workers=N``) and closes it
after. What it promises, beyond the :class:`~qmtl_engine.executor.Executor` protocol:

- **A scheduler that cannot be reached** (nothing listening, an unknown host, a malformed
  address) is an :class:`InputError` (exit 2) after ``connect_timeout`` seconds: the address is
  an argument the user fixes, and nothing was materialized.
- **A worker that dies** while it runs a task (killed, out of memory): the scheduler runs the
  task again on another worker; partition tasks are idempotent (content-addressed writes), so a
  rerun is safe. A task whose workers die more often than
  ``distributed.scheduler.allowed-failures`` allows (3 by default) comes back as a
  :class:`MaterializationError` (exit 3) in place of its result; the other tasks go on. A task
  the scheduler dropped (the connection to it was lost) comes back the same way.
- **Errors raised by a task** arrive as the same class with the same attributes (every
  ``QmtlLockError`` pickles whole); a cause or context that cannot be pickled is replaced on the
  worker by a ``RuntimeError`` naming it, so it cannot turn the error into a bare ``Exception``.
- **Rate limits** hold for the whole cluster: :class:`WorkerSetup` makes every worker build its
  limiters as :class:`DistributedLimiter`, which counts requests on the scheduler.
- **Threads**: Dask's nanny starts workers with ``OMP_NUM_THREADS=1``, which makes pyarrow
  single-threaded there. :class:`WorkerSetup` sets pyarrow's CPU pool on each worker to
  ``arrow_threads``, by default the host's CPUs shared among its workers.
- **Credentials** come from each worker's own environment: tasks carry option names
  (``*_env``), never values. For a cluster it starts, the executor can set workers' environment
  variables (``env=``) without putting them in the client's environment or in any task.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import os
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from qmtl_engine import ratelimit
from qmtl_engine.errors import InputError, MaterializationError, without_credentials
from qmtl_engine.executor import Skipped
from qmtl_engine.ratelimit import Limiter, RateLimit

INSTALL_HINT = "pip install 'qmtl-lock[dask]'"

try:
    import dask.utils
    import distributed
except ImportError as missing:
    raise InputError(
        f"the dask executor needs the Python packages dask and distributed, which cannot be "
        f"imported ({missing})",
        fix=f"{INSTALL_HINT}, or run without --executor dask") from None

T = TypeVar("T")
R = TypeVar("R")

PLUGIN_NAME = "qmtl-lock"
_SCHEDULER_FIX = ("check the address: a scheduler must be running there (`dask scheduler` prints "
                  "it as tcp://HOST:PORT), or pass --workers N to start a cluster for this run")


class DaskExecutor:
    """Tasks on a Dask cluster: the one at ``scheduler``, or ``workers`` local worker processes
    (``threads_per_worker`` threads each) started for the run; with neither, one local worker
    per CPU. Use it as a context manager, or call :meth:`close`.

    ``arrow_threads`` and ``arrow_io_threads`` set pyarrow's CPU and I/O pools on every worker
    (default CPU pool: the host's CPUs divided among its workers; default I/O pool: pyarrow's).
    ``env`` sets environment variables of the workers of a cluster started here (credentials a
    task reads by name). Raises :class:`InputError` for contradictory arguments or a scheduler
    that cannot be reached within ``connect_timeout`` seconds.
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int | None = None,
                 threads_per_worker: int | None = None, *, arrow_threads: int | None = None,
                 arrow_io_threads: int | None = None, env: Mapping[str, str] | None = None,
                 connect_timeout: float = 5.0) -> None:
        _check_arguments(scheduler, workers, threads_per_worker, arrow_threads,
                         arrow_io_threads, env)
        self._cluster: distributed.LocalCluster | None = None
        self._pending: set[distributed.Future] = set()
        self.client: distributed.Client | None = None
        if scheduler is None:
            self._cluster = _start_cluster(workers or os.cpu_count() or 1, threads_per_worker,
                                           env)
            scheduler = str(self._cluster.scheduler_address)
        self.address = without_credentials(scheduler)
        try:
            self.client = _connect(scheduler, connect_timeout)
            self._set_up_workers(arrow_threads, arrow_io_threads)
        except BaseException:  # also Ctrl-C: never leave a started cluster behind
            self.close(cancel=True)
            raise

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(cancel=error is not None)

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T], *,
                      skip: Callable[[int], bool] | None = None,
                      ) -> Iterator[tuple[int, R | BaseException]]:
        """Submit every item at once; yield ``(index, result)`` as each task finishes, a task's
        exception (or a :class:`MaterializationError` for a lost task) in place of its result.
        After each result, the tasks not finished for which ``skip(index)`` has become true
        are cancelled and yield :class:`Skipped`. Stopping early cancels the tasks not yet
        finished."""
        client = self._connected()
        if not items:
            return
        # Named keys: readable on the dashboard, and unique per call (so never cached: a task
        # writes to the store, it is not a pure function).
        prefix = f"{dask.utils.funcname(fn)}-{uuid.uuid4().hex[:12]}"
        futures = client.map(partial(_run_task, fn), items, pure=False,
                             key=[f"{prefix}-{i}" for i in range(len(items))])
        index = {future.key: i for i, future in enumerate(futures)}
        self._pending.update(futures)
        told: set[Any] = set()  # keys already yielded (finished, or skipped)
        try:
            for future in distributed.as_completed(futures, loop=client.loop):
                self._pending.discard(future)
                if future.key in told:
                    continue
                told.add(future.key)
                yield index[future.key], self._outcome(future)
                if skip is None:
                    continue
                dropped = [f for f in futures if f.key not in told and skip(index[f.key])]
                if dropped:
                    client.cancel(dropped)
                for f in dropped:
                    told.add(f.key)
                    self._pending.discard(f)
                    yield index[f.key], Skipped(index[f.key])
        finally:  # the consumer stopped early (Ctrl-C, or it gave up): start nothing more
            left = [f for f in futures if not f.done()]
            if left and self.client is client:  # (closing has dropped them already)
                client.cancel(left)
            self._pending.difference_update(futures)

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the tasks still running (with ``cancel``: drop them), disconnect, and stop
        the cluster if this executor started it. Closing twice is harmless."""
        client, self.client = self.client, None
        if client is not None:
            if self._pending and cancel:
                client.cancel(list(self._pending))
            elif self._pending:
                for _ in distributed.as_completed(list(self._pending), loop=client.loop):
                    pass  # their outcomes go unread: only that they ended matters here
            self._pending.clear()
            client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()

    def _connected(self) -> distributed.Client:
        if self.client is None:
            raise RuntimeError("this DaskExecutor is closed")
        return self.client

    def _outcome(self, future: distributed.Future) -> Any:
        try:
            return future.result()
        except distributed.KilledWorker as exc:
            return MaterializationError(
                f"a task was lost: the workers running it died {exc.allowed_failures + 1} times "
                "(killed, out of memory, or crashed)",
                where=f"dask cluster {self.address}, task {future.key}",
                fix="see the workers' logs for why they died (often memory: give workers more, "
                "or run fewer threads per worker), then rerun: finished partitions are kept")
        except cf.CancelledError as exc:
            return MaterializationError(
                f"the Dask scheduler dropped a task ({exc})",
                where=f"dask cluster {self.address}, task {future.key}",
                fix="check that the scheduler is still running and reachable, then rerun: "
                "finished partitions are kept")
        except Exception as exc:  # the task's own failure is its outcome
            return exc

    def _set_up_workers(self, arrow_threads: int | None, arrow_io_threads: int | None) -> None:
        client = self._connected()
        hosts: dict[str, int] = {}
        for info in client.scheduler_info(n_workers=-1)["workers"].values():
            hosts[info["host"]] = hosts.get(info["host"], 0) + 1
        plugin = WorkerSetup(arrow_threads=arrow_threads, arrow_io_threads=arrow_io_threads,
                             workers_by_host=hosts)
        try:
            client.register_plugin(plugin, name=PLUGIN_NAME)
        except Exception as exc:
            # (a worker's failure arrives as a plain Exception carrying the repr of its own)
            reason = str(exc) if type(exc) is Exception else f"{type(exc).__name__}: {exc}"
            raise InputError(
                f"the workers of the Dask cluster cannot run qmtl-lock tasks: {reason}",
                where=f"dask cluster {self.address}",
                fix="install this qmtl-lock, with its [dask] extra, on every worker (and the same "
                "dask and distributed on the scheduler)") from None


def _check_arguments(scheduler: str | None, workers: int | None,
                     threads_per_worker: int | None, arrow_threads: int | None,
                     arrow_io_threads: int | None, env: Mapping[str, str] | None) -> None:
    if scheduler is not None and (workers is not None or threads_per_worker is not None
                                  or env is not None):
        raise InputError(
            "--scheduler names a running cluster; --workers, threads per worker and worker "
            "environment variables apply only to a cluster started for the run",
            fix="pass either --scheduler tcp://HOST:PORT or --workers N")
    for label, value in (("--workers", workers), ("threads per worker", threads_per_worker),
                         ("arrow threads", arrow_threads), ("arrow I/O threads",
                                                            arrow_io_threads)):
        if value is not None and value < 1:
            raise InputError(f"{label} must be at least 1, not {value}",
                             fix=f"pass {label} 1 or more")


def _start_cluster(workers: int, threads_per_worker: int | None,
                   env: Mapping[str, str] | None) -> distributed.LocalCluster:
    """Worker processes on this machine, reachable from here only; the scheduler's web server
    (the dashboard, when bokeh is installed) on a free port, never a fixed one that another run
    holds."""
    try:
        return distributed.LocalCluster(
            n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
            host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
            env=dict(env) if env else None)
    except Exception as exc:
        raise MaterializationError(
            f"could not start a local Dask cluster of {workers} workers: "
            f"{type(exc).__name__}: {exc}",
            fix="run with fewer --workers, or without --executor dask") from None


def _connect(address: str, timeout: float) -> distributed.Client:
    failure = ""
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, ValueError, TypeError) as exc:  # TimeoutError is an OSError
        failure = str(exc) or type(exc).__name__
    else:
        return client
    # Raised outside the ``except``: the failed exception's frames hold the half-built Client,
    # which must be collected now (while its event loop runs), not at interpreter exit where
    # its __del__ prints a traceback.
    raise InputError(f"cannot connect to the Dask scheduler: {without_credentials(failure)}",
                     where=f"--scheduler {without_credentials(address)}", fix=_SCHEDULER_FIX)


def _run_task(fn: Callable[[T], R], item: T) -> R:
    """``fn(item)`` on a worker, its failure made fit to travel back to the client."""
    try:
        return fn(item)
    except Exception as exc:
        _replace_unpicklable_links(exc)
        raise


def _replace_unpicklable_links(error: BaseException) -> None:
    """Put a stand-in for each ``__cause__``/``__context__`` of ``error``'s chain that does not
    survive pickling (one holding a socket or a lock, say): Dask would otherwise send
    ``Exception(repr(error))`` in place of the whole error. The stand-in keeps the link's class
    name, message, traceback and chain."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for attribute in ("__cause__", "__context__"):
            link = getattr(node, attribute)
            if link is None:
                continue
            if not _round_trips(link):
                stand_in = RuntimeError(f"{type(link).__module__}.{type(link).__qualname__}: "
                                        f"{link}").with_traceback(link.__traceback__)
                stand_in.__cause__, stand_in.__context__ = link.__cause__, link.__context__
                stand_in.__suppress_context__ = link.__suppress_context__
                suppress = node.__suppress_context__  # setting __cause__ would set it
                setattr(node, attribute, stand_in)
                node.__suppress_context__ = suppress
                link = stand_in
            stack.append(link)


def _round_trips(error: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return False
    return True


class DistributedLimiter:
    """A rate limit for every worker of a cluster together: at most ``limit.burst`` requests
    start in any ``limit.burst / limit.requests_per_second`` seconds.

    Each start holds one of ``burst`` leases of a ``distributed.Semaphore`` and gives it back
    that long after it started. Only durations are measured, each on one machine, so clocks that
    disagree between hosts cannot loosen the limit; the average rate is at most
    ``requests_per_second``, and never more than a token bucket of the same limit allows. A
    worker that dies holding leases loses them when the scheduler's lease timeout expires
    (``distributed.scheduler.locks.lease-timeout``): the cluster is slower meanwhile, never
    faster.

    ``scheduler_rpc`` and ``loop`` bind it to a worker (so that any thread of the worker can
    use it); without them it binds to the worker or client of the calling task.
    """

    def __init__(self, key: str, limit: RateLimit, *, scheduler_rpc: Any = None,
                 loop: Any = None) -> None:
        self.key = key
        self.limit = limit
        self.period = limit.burst / limit.requests_per_second
        self._semaphore = distributed.Semaphore(
            max_leases=limit.burst, name=semaphore_name(key, limit),
            scheduler_rpc=scheduler_rpc, loop=loop)

    def acquire(self) -> None:
        self._semaphore.acquire()
        # Given back from a timer thread: the caller's request may take any time, the limit is
        # on starts only.
        timer = threading.Timer(self.period, self._semaphore.release)
        timer.daemon = True
        timer.start()


def semaphore_name(key: str, limit: RateLimit) -> str:
    """The scheduler-side name of the limiter of endpoint ``key`` under ``limit``: a digest, so
    that a key (which may hold a URL) never shows on the dashboard or in the scheduler's logs,
    and two limits of one endpoint never share a semaphore."""
    text = f"{key}\n{limit.requests_per_second!r}\n{limit.burst}"
    return "qmtl-lock-rate-" + hashlib.sha256(text.encode()).hexdigest()[:24]


class WorkerSetup(distributed.WorkerPlugin):
    """Runs on every worker of the cluster, also on workers that join or restart later: rate
    limits for the whole cluster, and pyarrow's thread pools set deliberately.

    ``workers_by_host`` counts the workers on each host (as the client saw them), to share a
    host's CPUs among its workers when ``arrow_threads`` is not given.
    """

    def __init__(self, *, arrow_threads: int | None = None, arrow_io_threads: int | None = None,
                 workers_by_host: Mapping[str, int] | None = None) -> None:
        self.arrow_threads = arrow_threads
        self.arrow_io_threads = arrow_io_threads
        self.workers_by_host = dict(workers_by_host or {})
        self._saved: tuple[int, int] | None = None

    def cpu_threads(self, host: str) -> int:
        """pyarrow's CPU threads for a worker on ``host``."""
        if self.arrow_threads is not None:
            return self.arrow_threads
        return max(1, (os.cpu_count() or 1) // max(1, self.workers_by_host.get(host, 1)))

    def setup(self, worker: distributed.Worker) -> None:
        import pyarrow as pa

        self._saved = (pa.cpu_count(), pa.io_thread_count())
        pa.set_cpu_count(self.cpu_threads(distributed.comm.get_address_host(worker.address)))
        if self.arrow_io_threads is not None:
            pa.set_io_thread_count(self.arrow_io_threads)
        ratelimit.set_limiter_factory(
            partial(_worker_limiter, scheduler_rpc=worker.scheduler, loop=worker.loop))

    def teardown(self, worker: distributed.Worker) -> None:
        import pyarrow as pa

        ratelimit.set_limiter_factory(None)
        if self._saved is not None:
            pa.set_cpu_count(self._saved[0])
            pa.set_io_thread_count(self._saved[1])


def _worker_limiter(key: str, limit: RateLimit, *, scheduler_rpc: Any, loop: Any) -> Limiter:
    return DistributedLimiter(key, limit, scheduler_rpc=scheduler_rpc, loop=loop)
