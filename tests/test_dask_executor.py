"""The dask executor on a real ``distributed.LocalCluster`` of worker processes: results as they
finish, errors that cross processes whole, killed workers, cancelling, an unreachable scheduler,
the missing extra, cluster-wide rate limits, pyarrow threads and worker-only credentials."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import pyarrow as pa
import pytest
import qmtl_engine
from dask_helpers import RecordingExecutor, local_cluster, observer_client, worker_values
from qmtl_engine import ratelimit
from qmtl_engine.conformance import ConformanceReport
from qmtl_engine.dask_executor import (
    DaskExecutor,
    WorkerSetup,
    semaphore_name,
)
from qmtl_engine.errors import (
    ConformanceError,
    FingerprintMismatch,
    InputError,
    IntegrityError,
    MaterializationError,
    MissingDependency,
    ObjectCorrupted,
    ObjectMissing,
    PresetError,
    QmtlLockError,
    RangeError,
    SLAExceeded,
    SourceError,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    YAMLFileError,
)
from qmtl_engine.executor import LocalExecutor
from qmtl_engine.http import PermanentError
from qmtl_engine.ratelimit import RateLimit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with local_cluster(2) as started:
        yield started


@pytest.fixture
def observer(cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    """A second client on the cluster, to look at it (and wait until both workers are up: a
    test may have killed one, which its nanny restarts)."""
    client = observer_client(cluster.scheduler_address)
    client.wait_for_workers(2, timeout=60)
    yield client
    client.close()


@pytest.fixture
def executor(cluster: distributed.LocalCluster, observer: distributed.Client,
             ) -> Iterator[DaskExecutor]:
    with DaskExecutor(scheduler=cluster.scheduler_address) as connected:
        yield connected


# -- tasks (module level: workers import them from this file) -----------------------------------
def _where(_: object) -> tuple[str, int]:
    return str(Path(qmtl_engine.__file__).resolve()), os.getpid()


def _square(x: int) -> int:
    return x * x


def _sleep_then(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _fail(kind: str) -> None:
    if kind == "source":
        raise SourceError("the vendor said 500", source="polygon", symbol="AAPL",
                          window="2024-01", url="https://api.polygon.io/v2/aggs")
    if kind == "unpicklable cause":
        refused = PermanentError("401 unauthorized", url="https://api.polygon.io")
        refused.session = threading.Lock()  # what a client object holds: no pickling at all
        try:
            raise refused
        except PermanentError as exc:
            raise SourceError("credentials refused", source="polygon", symbol="AAPL") from exc
    raise KeyError(kind)


def _mark(args: tuple[str, int, float]) -> int:
    folder, i, seconds = args
    (Path(folder) / f"{i}.started").touch()
    time.sleep(seconds)
    (Path(folder) / f"{i}.done").touch()
    return i


def _kill_my_worker(_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _limited(args: tuple[str, float, int, int]) -> tuple[int, str, list[float]]:
    key, rps, burst, n = args
    limiter = ratelimit.limiter(key, RateLimit(rps, burst))
    starts = []
    for _ in range(n):
        limiter.acquire()
        starts.append(time.time())
    return os.getpid(), type(limiter).__name__, starts


def _threads_and_env(_: object) -> dict[str, Any]:
    return {"cpu": pa.cpu_count(), "io": pa.io_thread_count(),
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "secret": os.environ.get("QMTL_TEST_WORKER_SECRET")}


# -- the Executor protocol --------------------------------------------------------------------
def test_workers_import_the_engine_from_this_checkout(executor: DaskExecutor) -> None:
    [(_, (path, _pid))] = list(executor.map_unordered(_where, [None]))
    assert path == str(Path(qmtl_engine.__file__).resolve())
    assert Path(path).is_relative_to(ROOT)


def test_results_match_the_local_executor(executor: DaskExecutor) -> None:
    items = list(range(20))
    local = dict(LocalExecutor(2).map_unordered(_square, items))
    assert dict(executor.map_unordered(_square, items)) == local == {i: i * i for i in items}
    assert list(executor.map_unordered(_square, [])) == []


def test_results_arrive_as_they_finish(executor: DaskExecutor) -> None:
    order = [i for i, _ in executor.map_unordered(_sleep_then, [1.5, 0.0])]
    assert order == [1, 0]  # the idle worker takes 1 and finishes while 0 sleeps


def test_task_errors_come_back_whole_as_results(executor: DaskExecutor) -> None:
    out = dict(executor.map_unordered(_fail, ["source", "unpicklable cause", "other"]))
    error = out[0]
    assert isinstance(error, SourceError)
    assert (error.source, error.symbol, error.window, error.url) == (
        "polygon", "AAPL", "2024-01", "https://api.polygon.io/v2/aggs")
    assert error.exit_code == 3 and "the vendor said 500" in str(error)
    # the cause could not travel, a stand-in did; the error it caused did, as itself
    assert isinstance(out[1], SourceError) and out[1].what == "credentials refused"
    assert isinstance(out[1].__cause__, RuntimeError)
    assert str(out[1].__cause__) == "qmtl_engine.http.PermanentError: 401 unauthorized"
    assert isinstance(out[2], KeyError)


# -- workers that die, cancelling -------------------------------------------------------------
def test_a_killed_worker_costs_no_result(executor: DaskExecutor,
                                         observer: distributed.Client) -> None:
    """Decided: the scheduler reruns a dead worker's task elsewhere, so every result arrives."""
    pids = {pid: address for address, pid in worker_values(observer, os.getpid).items()}
    outcomes = executor.map_unordered(_pid_after, [0.8] * 6)
    first = next(outcomes)
    busy = [address for address, keys in observer.processing().items() if keys]
    victim = next(pid for pid, address in pids.items() if address in (busy or pids.values()))
    os.kill(victim, signal.SIGKILL)
    results = dict([first, *outcomes])
    assert sorted(results) == list(range(6))
    assert all(isinstance(pid, int) for pid in results.values()), results


def test_a_task_that_kills_every_worker_is_an_error_and_the_run_goes_on(
        executor: DaskExecutor, observer: distributed.Client) -> None:
    [(_, lost)] = list(executor.map_unordered(_kill_my_worker, [None]))
    assert isinstance(lost, MaterializationError) and lost.exit_code == 3
    assert "the workers running it died 2 times" in lost.what
    assert executor.address in (lost.where or "") and "rerun" in (lost.fix or "")
    observer.wait_for_workers(2, timeout=60)
    assert dict(executor.map_unordered(_square, [3])) == {0: 9}


def test_close_with_cancel_starts_nothing_more(cluster: distributed.LocalCluster,
                                               observer: distributed.Client,
                                               tmp_path: Path) -> None:
    executor = DaskExecutor(scheduler=cluster.scheduler_address)
    items = [(str(tmp_path), i, 0.4) for i in range(10)]
    outcomes = executor.map_unordered(_mark, items)  # held: dropping it would cancel too
    next(outcomes)
    executor.close(cancel=True)
    time.sleep(1.0)  # a task that had started finishes on its worker meanwhile
    started = len(list(tmp_path.glob("*.started")))
    assert 1 <= started < len(items)
    assert len(list(tmp_path.glob("*.done"))) == started


def test_close_without_cancel_waits_for_every_task(cluster: distributed.LocalCluster,
                                                   observer: distributed.Client,
                                                   tmp_path: Path) -> None:
    executor = DaskExecutor(scheduler=cluster.scheduler_address)
    items = [(str(tmp_path), i, 0.2) for i in range(6)]
    outcomes = executor.map_unordered(_mark, items)
    next(outcomes)
    executor.close()
    assert len(list(tmp_path.glob("*.done"))) == len(items)
    executor.close()  # twice: harmless
    with pytest.raises(RuntimeError, match="closed"):
        list(executor.map_unordered(_square, [1]))


# -- arguments and connection failures ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_scheduler_is_one_clear_error_within_seconds() -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    code = textwrap.dedent(f"""
        import json, time
        from qmtl_engine.dask_executor import DaskExecutor
        from qmtl_engine.errors import QmtlLockError
        t0 = time.monotonic()
        try:
            DaskExecutor(scheduler={address!r})
        except QmtlLockError as exc:
            print(json.dumps([type(exc).__name__, exc.exit_code, exc.where, str(exc),
                              time.monotonic() - t0]))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    kind, exit_code, where, text, elapsed = json.loads(proc.stdout)
    assert (kind, exit_code, where) == ("InputError", 2, f"--scheduler {address}")
    assert "cannot connect to the Dask scheduler" in text and "--workers N" in text
    assert elapsed < 20  # the default connect timeout is 5 s (distributed's own: 30 s)
    assert "Traceback" not in proc.stderr, proc.stderr


def test_workers_that_cannot_import_qmtl_lock_are_one_clear_error(tmp_path: Path) -> None:
    """A running cluster (a scheduler and a worker of their own, as `dask scheduler` and
    `dask worker` start them) whose worker has no qmtl-lock."""
    shadow = tmp_path / "qmtl_engine"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no qmtl-lock on this worker')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = [subprocess.Popen(
        [sys.executable, "-m", f"distributed.cli.dask_{kind}", *args, "--no-dashboard"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for kind, args in (("scheduler", ["--host", "127.0.0.1", "--port",
                                          address.rsplit(":", 1)[1]]),
                           ("worker", [address, "--nthreads", "1"]))]
    try:
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
        with pytest.raises(InputError, match="cannot run qmtl-lock tasks") as caught:
            DaskExecutor(scheduler=address)
        assert "no qmtl-lock on this worker" in str(caught.value)
        assert caught.value.where == f"dask cluster {address}"
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"scheduler": "http://127.0.0.1:8786"}, "unknown address scheme"),
    ({"scheduler": "tcp://127.0.0.1:1", "workers": 2}, "either --scheduler"),
    ({"scheduler": "tcp://127.0.0.1:1", "env": {"A": "b"}}, "either --scheduler"),
    ({"workers": 0}, "--workers must be at least 1"),
    ({"workers": 1, "arrow_threads": 0}, "arrow threads must be at least 1"),
])
def test_bad_arguments_are_input_errors(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InputError, match=words) as caught:
        DaskExecutor(**kwargs)
    assert caught.value.exit_code == 2 and caught.value.fix


def test_without_distributed_the_hint_says_what_to_install() -> None:
    code = ("import sys, json; sys.modules['distributed'] = None\n"
            "from qmtl_engine.errors import InputError\n"
            "try:\n    import qmtl_engine.dask_executor\n"
            "except InputError as exc:\n    print(json.dumps([exc.exit_code, exc.what, exc.fix]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    exit_code, what, fix = json.loads(proc.stdout)
    assert exit_code == 2 and "dask and distributed" in what
    assert fix.startswith("pip install 'qmtl-lock[dask]'")


def test_the_engine_imports_no_dask_unless_asked() -> None:
    code = ("import sys, qmtl_engine, qmtl_engine.executor, qmtl_engine.ratelimit, "
            "qmtl_engine.errors, qmtl_engine.materialize, qmtl_engine.store\n"
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- errors cross process boundaries ------------------------------------------------------------
def _samples() -> list[QmtlLockError]:
    from qmtl_lock.cli.merge_driver import MergeConflict
    from qmtl_lock.cli.output import UnexpectedError
    from qmtl_lock.errors import (
        ContractMismatch,
        GitError,
        LockfileError,
        LockOutOfDate,
        LockVersionError,
        ManifestError,
        ProjectBusy,
        PullFailed,
        RequestsFailed,
        UpstreamChanged,
    )
    from qmtl_lock.git import _GitMissing
    from qmtl_lock.merge import Conflict

    report = ConformanceReport()
    report.add("gap_bars", 2, [1_700_000_000_000, 1_700_000_060_000])
    located = ObjectCorrupted(path="objects/ab/abc.parquet", expected="sha256:ab",
                              actual="sha256:cd", partition="2024-01")
    located.locate(dataset="crypto", symbol="BTCUSDT")
    source = SourceError("timeout", source="polygon", url="https://api.polygon.io/v2?x=1")
    source.locate(dataset="equities", symbol="AAPL", window="2024-01")
    return [
        QmtlLockError("root", where="here", fix="do this"),
        InputError("bad input", fix="fix it"),
        YAMLFileError("bad yaml", path="seamless.yaml", line=3, key="store", fix="indent"),
        PresetError("unknown preset", preset="ohlcv.x", path="catalog.yaml", line=7),
        RangeError("empty range", where="crypto"),
        IntegrityError("differs", where="crypto/BTCUSDT"),
        FingerprintMismatch(expected="sha256:aa", actual="sha256:bb", dataset="crypto",
                            symbol="BTCUSDT", partition="2024-01"),
        ObjectMissing("no such object", path="objects/ab/abc.parquet", partition="2024-01"),
        ObjectCorrupted(path="snapshots/ab/x.json", expected="sha256:ab", actual="sha256:cd",
                        kind="snapshot"),
        located,
        MaterializationError("could not", where="crypto"),
        source,
        MissingDependency(source="ccxt", module="ccxt", extra="ccxt"),
        ConformanceError(report, blocking={"gap_bars": 2}, symbol="BTCUSDT", partition="2024-01",
                         preset="strict"),
        SLAExceeded(phase="fetch", budget_ms=1000, elapsed_ms=2500.5, dataset="crypto",
                    symbol="BTCUSDT"),
        StoreError("permission denied", url="s3://key:secret@bucket/prefix",
                   path="objects/ab", errno=13, fix="grant write access"),
        StoreUnavailable("cannot reach the store", kind="unreachable",
                         url="s3://bucket/prefix", fix="check the endpoint"),
        PullFailed(["crypto/BTCUSDT: object sha256:ab is missing"]),
        StoreBusy("a gc is running", url="s3://bucket/prefix", path="locks/gc.json",
                  holder="gc by pid 42 on host-a since 2024-06-01T00:00:00Z",
                  fix="wait for it, or run again later"),
        ManifestError("bad manifest", path="seamless.yaml", line=2, key="datasets"),
        LockfileError("bad lock", path="seamless.lock", line=1),
        LockVersionError(path="seamless.lock", found=9, supported=1, line=1),
        ContractMismatch(dataset="crypto", expected="v2", actual="v1"),
        LockOutOfDate(["crypto/BTCUSDT: new data", "equities: removed"]),
        GitError("unknown revision", revision="HEAD~9"),
        _GitMissing("git is not installed", fix="install git"),
        ProjectBusy(path=Path("/tmp/p/seamless.lock"), holder="pid 42", waited_s=2.5),
        RequestsFailed([("crypto", "BTCUSDT", SourceError("x", source="s")),
                        ("equities", "AAPL", InputError("y"))], total=4),
        UpstreamChanged(dataset="crypto", symbol="BTCUSDT", expected="sha256:a",
                        actual="sha256:b"),
        UnexpectedError("unexpected KeyError: 'k'", where="engine/x.py:1"),
        MergeConflict([Conflict("crypto", "BTCUSDT", "both changed the range")]),
    ]


def _same(a: Any, b: Any) -> bool:
    """Equal, comparing errors (which compare by identity) by class, args and attributes."""
    if isinstance(a, BaseException):
        return (type(a) is type(b) and a.args == b.args and str(a) == str(b)
                and _same(vars(a), vars(b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _subclasses(cls: type) -> set[type]:
    return {cls}.union(*(_subclasses(sub) for sub in cls.__subclasses__()))


def test_every_error_class_has_a_sample() -> None:
    samples = {type(s) for s in _samples()}
    named = {c for c in _subclasses(QmtlLockError)
             if c.__module__ in ("qmtl_engine.errors", "qmtl_lock.errors")}
    assert named <= samples, f"add a sample of {sorted(c.__name__ for c in named - samples)}"


@pytest.mark.parametrize("error", _samples(), ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_whole(error: QmtlLockError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert _same(error, back)
    assert back.exit_code == error.exit_code and back.to_dict() == error.to_dict()
    assert "secret" not in str(back)


def test_errors_survive_dask_pickling_with_their_chain() -> None:
    """Dask pickles a task's error with tblib (traceback and cause included)."""
    from distributed.core import clean_exception, error_message

    try:
        try:
            raise OSError(13, "permission denied")
        except OSError as cause:
            raise StoreError("cannot write", url="file:///s", errno=13) from cause
    except StoreError as raised:
        message = error_message(raised)
    _, back, _ = clean_exception(message["exception"].data, message["traceback"].data)
    assert isinstance(back, StoreError) and (back.url, back.errno) == ("file:///s", 13)
    assert isinstance(back.__cause__, OSError) and back.__cause__.errno == 13


# -- rate limits across the cluster -------------------------------------------------------------
def test_the_rate_limit_holds_for_all_workers_together(executor: DaskExecutor) -> None:
    rps, burst, per_task, tasks = 10.0, 2, 2, 8
    key = "polygon:https://api.polygon.io"
    out = dict(executor.map_unordered(_limited, [(key, rps, burst, per_task)] * tasks))
    assert {kind for _, kind, _ in out.values()} == {"DistributedLimiter"}
    assert len({pid for pid, _, _ in out.values()}) == 2  # both workers took part
    starts = sorted(t for _, _, times in out.values() for t in times)
    # A lower bound only (safe under load): n starts under the limit cannot take less than
    # (n - burst) / rps. One token bucket per worker would allow about half of it.
    bound = (len(starts) - burst) / rps
    assert starts[-1] - starts[0] >= bound - 0.1, (starts[-1] - starts[0], bound)


def test_the_scheduler_never_sees_the_endpoint_key() -> None:
    key = "polygon:https://api.polygon.io/v2?apiKey=abc"
    name = semaphore_name(key, RateLimit(5, 1))
    assert name.startswith("qmtl-lock-rate-") and "polygon" not in name
    assert name != semaphore_name(key, RateLimit(5, 2)) != semaphore_name(key + "x",
                                                                         RateLimit(5, 1))


def test_a_worker_shares_its_hosts_cpus_with_the_other_workers_there() -> None:
    cpus = os.cpu_count() or 1
    setup = WorkerSetup(workers_by_host={"10.0.0.1": 2, "10.0.0.2": 64})
    assert setup.cpu_threads("10.0.0.1") == max(1, cpus // 2)
    assert setup.cpu_threads("10.0.0.2") == 1
    assert setup.cpu_threads("10.0.0.3") == cpus
    assert WorkerSetup(arrow_threads=3, workers_by_host={"h": 64}).cpu_threads("h") == 3


def test_worker_threads_by_default(executor: DaskExecutor) -> None:
    [(_, seen)] = list(executor.map_unordered(_threads_and_env, [None]))
    assert seen["omp"] == "1"  # the nanny's setting, which pyarrow would otherwise follow
    assert seen["cpu"] == max(1, (os.cpu_count() or 1) // 2)


# -- a cluster started for the run: threads and worker-only credentials -------------------------
def test_the_recorder_sees_a_secret_put_in_a_task() -> None:
    with RecordingExecutor(LocalExecutor(1)) as recorder:
        assert dict(recorder.map_unordered(len, ["token=s3cr3t-value"])) == {0: 18}
    recorder.assert_never_shipped("another-secret")
    with pytest.raises(AssertionError, match="a secret was shipped in tasks"):
        recorder.assert_never_shipped("s3cr3t-value")


def test_a_started_cluster_sets_threads_and_worker_only_credentials() -> None:
    secret = "wk-only-7f3a9c"
    assert "QMTL_TEST_WORKER_SECRET" not in os.environ
    dask_executor = DaskExecutor(workers=1, threads_per_worker=1, arrow_threads=3,
                                 arrow_io_threads=5, env={"QMTL_TEST_WORKER_SECRET": secret})
    address = dask_executor.address
    with RecordingExecutor(dask_executor) as recorder:
        [(_, seen)] = list(recorder.map_unordered(_threads_and_env, ["QMTL_TEST_WORKER_SECRET"]))
    assert seen == {"cpu": 3, "io": 5, "omp": "1", "secret": secret}
    recorder.assert_never_shipped(secret)
    with pytest.raises(InputError, match="cannot connect"):  # the cluster went with it
        DaskExecutor(scheduler=address, connect_timeout=1)
