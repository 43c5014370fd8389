"""resolve on a real Dask cluster (``distributed.LocalCluster`` of worker processes on loopback).

The windows of every request are tasks on the workers; the client plans, finalizes each symbol
and writes the lock once. So the lock is the one a local resolve writes, byte for byte; the
checks across partition boundaries agree; a worker killed mid-run costs nothing but its task;
and a client killed mid-run loses no finished window: the rerun fetches only the others.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="the [dask] extra is not installed")

from conftest import Project  # noqa: E402
from dask_helpers import RecordingExecutor, local_cluster, observer_client  # noqa: E402
from http_server import Server  # noqa: E402
from killing import kill_when  # noqa: E402
from qmtl_engine import DaskExecutor, to_ms  # noqa: E402
from s3_server import SECRET, S3Bucket  # noqa: E402
from test_backfill import (  # noqa: E402, F401  (fixtures: archive, server)
    DAYS,
    T,
    _windows_done,
    archive,
    entry,
    resolve_at,
    server,
    setup_project,
    zips,
)
from test_binance_vision import Archive, route_archive  # noqa: E402
from test_executors import _project  # noqa: E402

from qmtl_lock.cli import cli  # noqa: E402
from qmtl_lock.lockfile import read_lock  # noqa: E402
from qmtl_lock.resolve import PinnedNowClock, resolve  # noqa: E402

NOW = "2024-06-01T00:00:00Z"
MANIFEST = """\
version: 1
store: {store}
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BTCUSDT, ETHUSDT]
    start: 2024-01-01
    end: 2024-04-01
    contract_version: v1
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with local_cluster(2) as started:
        yield started


@pytest.fixture
def dask(cluster: distributed.LocalCluster) -> Iterator[DaskExecutor]:
    with observer_client(cluster.scheduler_address) as look:
        look.wait_for_workers(2, timeout=60)  # a test may have killed one: its nanny restarts it
    with DaskExecutor(scheduler=cluster.scheduler_address) as connected:
        yield connected


def _synthetic(root: Path, store: str = ".seamless/store") -> Path:
    root.mkdir(parents=True)
    (root / "seamless.yaml").write_text(MANIFEST.format(store=store), encoding="utf-8")
    return root / "seamless.yaml"


def test_the_lock_is_the_same_on_dask_as_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              dask: DaskExecutor) -> None:
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    here = _synthetic(tmp_path / "here")
    there = _synthetic(tmp_path / "there")
    resolve(here)
    resolve(there, executor=dask)
    assert there.with_name("seamless.lock").read_bytes() == here.with_name(
        "seamless.lock").read_bytes()


def test_the_lock_is_the_same_on_dask_with_an_s3_store(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       s3: S3Bucket) -> None:
    """Workers reach S3 with the credentials of their own environment; none is in a task."""
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    here = _synthetic(tmp_path / "here")
    resolve(here)
    there = _synthetic(tmp_path / "there", s3.url())
    with local_cluster(2, env=s3.env()) as own, \
            RecordingExecutor(DaskExecutor(scheduler=own.scheduler_address)) as recorded:
        resolve(there, executor=recorded)
    recorded.assert_never_shipped(SECRET)
    assert there.with_name("seamless.lock").read_bytes() == here.with_name(
        "seamless.lock").read_bytes()
    assert len([key for key in s3.keys(prefix="store/objects/")]) == 2 * 3


def test_repeats_across_a_boundary_are_counted_on_dask_as_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dask: DaskExecutor) -> None:
    from qmtl_engine import ConformanceError

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    here = _project(tmp_path / "here", conformance="permissive-dev")
    there = _project(tmp_path / "there", conformance="permissive-dev")
    resolve(here)
    resolve(there, executor=dask)
    assert read_lock(there.with_name("seamless.lock")).datasets["daily"].symbols[
        "ABC"].conformance_flags["repeated_bars"] == 1
    assert there.with_name("seamless.lock").read_bytes() == here.with_name(
        "seamless.lock").read_bytes()
    strict = _project(tmp_path / "strict", conformance="strict-blocking")
    with pytest.raises(ConformanceError) as info:
        resolve(strict, executor=dask)
    assert info.value.blocking == {"repeated_bars": 1}
    assert "first in partition 2024-02" in info.value.where


def test_a_worker_killed_mid_run_costs_only_its_task(
        project: Project, server: Server, archive: Archive,  # noqa: F811 (imported fixtures)
        dask: DaskExecutor, cluster: distributed.LocalCluster) -> None:
    route_archive(server, archive)
    clean = setup_project(project.root.parent / "clean", server.url, start="2025-01-01",
                          end="2025-01-13", partition="day")
    resolve_at(clean, T)
    route_archive(server, archive, delay_s=0.15)  # slow enough to kill a worker midway
    manifest = setup_project(project.root, server.url, start="2025-01-01", end="2025-01-13",
                             partition="day")
    with observer_client(cluster.scheduler_address) as look:
        pids = sorted(look.run(os.getpid).values())
        killed = threading.Event()

        def kill_one() -> None:
            deadline = time.monotonic() + 60
            while len(_windows_done(project.store)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGKILL)
            killed.set()

        killer = threading.Thread(target=kill_one)
        killer.start()
        resolve(manifest, clock=PinnedNowClock(to_ms(T)), executor=dask)
        killer.join()
    assert killed.is_set()
    e = entry(project.root)
    assert e.partitions == DAYS and e.dataset_fingerprint == entry(clean.parent).dataset_fingerprint


def test_a_client_killed_mid_run_loses_no_finished_window(
        project: Project, server: Server, archive: Archive,  # noqa: F811 (imported fixtures)
        cluster: distributed.LocalCluster) -> None:
    route_archive(server, archive, delay_s=0.15)
    manifest = setup_project(project.root, server.url, start="2025-01-01", end="2025-01-13",
                             partition="day")
    env = {**os.environ, "QMTL_LOCK_NOW": T}
    env.pop("CI", None)
    kill_when([sys.executable, "-m", "qmtl_lock.cli", "resolve", "--executor", "dask",
               "--scheduler", cluster.scheduler_address], cwd=project.root, env=env,
              ready=lambda: len(_windows_done(project.store)) >= 3, timeout_s=120)
    assert not project.lock.exists()
    # The scheduler drops the dead client's tasks, but a task already running on a worker
    # runs to its end: wait until the workers are quiet (no request, no window for a second).
    deadline, seen = time.monotonic() + 60, (-1, -1)
    while time.monotonic() < deadline:
        now = (len(server.requests), len(_windows_done(project.store)))
        if now == seen:
            break
        seen = now
        time.sleep(1.0)
    finished = _windows_done(project.store)
    assert 3 <= len(finished) < DAYS
    server.requests.clear()
    route_archive(server, archive)
    with DaskExecutor(scheduler=cluster.scheduler_address) as again:
        resolve(manifest, clock=PinnedNowClock(to_ms(T)), executor=again)
    assert len(zips(server)) == DAYS - len(finished)  # nothing finished was fetched again
    assert entry(project.root).partitions == DAYS


def test_the_command_line_runs_on_a_cluster_it_starts(tmp_path: Path) -> None:
    manifest = _synthetic(tmp_path / "p")
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    proc = subprocess.run([sys.executable, "-m", "qmtl_lock.cli", "resolve", "--executor",
                           "dask", "--workers", "2"], cwd=manifest.parent, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    here = _synthetic(tmp_path / "here")
    os.environ.setdefault("QMTL_LOCK_NOW", NOW)
    local = subprocess.run([sys.executable, "-m", "qmtl_lock.cli", "resolve"], cwd=here.parent,
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert local.returncode == 0, local.stderr
    assert manifest.with_name("seamless.lock").read_bytes() == here.with_name(
        "seamless.lock").read_bytes()


@pytest.mark.parametrize(("args", "says"), [
    (["--executor", "local", "--workers", "2"], "--scheduler and --workers choose a Dask"),
    (["--executor", "dask", "--jobs", "2"], "--jobs sets threads of the local executor"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"], "--scheduler"),
])
def test_executor_options_that_cannot_work_are_bad_input(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         args: list[str], says: str) -> None:
    from click.testing import CliRunner

    manifest = _synthetic(tmp_path / "p")
    monkeypatch.chdir(manifest.parent)
    result = CliRunner().invoke(cli, ["resolve", *args], env={"QMTL_LOCK_NOW": NOW},
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert not manifest.with_name("seamless.lock").exists()


def test_the_materialize_job_api_takes_an_executor(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   dask: DaskExecutor) -> None:
    from qmtl_lock import MaterializeSeamlessJob

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)

    def job(store: Path, **kwargs: object) -> object:
        return MaterializeSeamlessJob(preset="ohlcv.synthetic.crypto.1m", symbol="BTCUSDT",
                                      start="2024-01-01", end="2024-03-01", contract_version="v1",
                                      artifact_dir=store, **kwargs).run()  # type: ignore[arg-type]

    here = job(tmp_path / "here")
    there = job(tmp_path / "there", executor=dask)
    assert there.dataset_fingerprint == here.dataset_fingerprint  # type: ignore[attr-defined]
    assert there.partitions == 2  # type: ignore[attr-defined]
