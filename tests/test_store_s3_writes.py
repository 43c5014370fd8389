"""Writing into a store on object storage: a real S3 endpoint on loopback (moto's server),
requests counted where the server sees them (tests/s3_server.py).

Immutable files go in with one exclusive create each and mutable ones with one PUT, so a
fetched partition costs its object and its checkpoint; the same lock comes out of a local store
and of S3, with one thread or two; and two resolvers of one request into one prefix cooperate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from s3_server import S3Bucket

from qmtl_lock.cli import cli

NOW = "2024-06-01T00:00:00Z"
MONTHS = 4  # 1-minute bars partition by month: January to April 2024
SYMBOLS = ("BTCUSDT", "ETHUSDT")

MANIFEST = """\
version: 1
store: {store}
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [{symbols}]
    start: 2024-01-01
    end: 2024-05-01
    contract_version: v1
"""


def project(root: Path, store: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "seamless.yaml").write_text(MANIFEST.format(store=store, symbols=", ".join(SYMBOLS)),
                                        encoding="utf-8")
    return root


def resolve(root: Path, *args: str) -> str:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(cli, ["resolve", *args], env={"QMTL_LOCK_NOW": NOW},
                                    catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_fetched_partition_costs_at_most_four_store_requests(s3: S3Bucket,
                                                               tmp_path: Path) -> None:
    root = project(tmp_path / "p", s3.url())
    s3.proxy.reset()
    resolve(root)
    fetched = MONTHS * len(SYMBOLS)
    writes = [path for method, path in s3.proxy.paths if method == "PUT"]
    objects = [p for p in writes if "/objects/" in p]
    checkpoints = [p for p in writes if "/jobs/" in p]
    assert len(objects) == fetched and len(checkpoints) == fetched  # one each, no copies
    assert not [p for p in s3.proxy.paths if "x-amz-copy" in p[1] or ".tmp-" in p[1]]
    assert s3.proxy.total() <= 4 * fetched, s3.proxy.paths
    # what was written is all there, and nothing else: no staging, no temporaries
    keys = s3.keys()
    assert len([k for k in keys if "/objects/" in k]) == fetched
    assert not [k for k in keys if "/jobs/" in k or ".tmp-" in k or "/leases/" in k]

    s3.proxy.reset()
    assert "seamless.lock is up to date" in resolve(root)  # nothing to do: is each pin there?
    assert dict(s3.proxy.counts) == {"HEAD": len(SYMBOLS)}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_lock_is_the_same_from_a_local_store_and_from_s3(s3: S3Bucket, tmp_path: Path,
                                                              jobs: str) -> None:
    local = project(tmp_path / "local", ".seamless/store")
    remote = project(tmp_path / "remote", s3.url())
    resolve(local)
    resolve(remote, "--jobs", jobs)
    assert (remote / "seamless.lock").read_bytes() == (local / "seamless.lock").read_bytes()
    for root in (local, remote):
        os.chdir(root)
        verify = CliRunner().invoke(cli, ["verify"], catch_exceptions=False)
        assert verify.exit_code == 0, verify.output


def test_two_resolvers_of_one_request_into_one_prefix_both_succeed(s3: S3Bucket,
                                                                   tmp_path: Path) -> None:
    """Two machines (here: two processes) resolve the same request into one S3 prefix at the
    same time: both finish, with identical locks, over one set of objects."""
    roots = [project(tmp_path / name, s3.url()) for name in ("a", "b")]
    env = {**os.environ, **s3.env(), "QMTL_LOCK_NOW": NOW}
    env.pop("CI", None)
    procs = [subprocess.Popen([sys.executable, "-m", "qmtl_lock.cli", "resolve"], cwd=root,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for root in roots]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("Traceback" not in err for _, err in outs)
    a, b = ((root / "seamless.lock").read_text(encoding="utf-8") for root in roots)
    strip = lambda text: [ln for ln in text.splitlines() if "as_of" not in ln  # noqa: E731
                          and "expires_at" not in ln]
    assert strip(a) == strip(b)
    keys = s3.keys()
    assert len([k for k in keys if "/objects/" in k]) == MONTHS * len(SYMBOLS)
    assert len([k for k in keys if "/snapshots/" in k]) == len(SYMBOLS)


def test_a_store_with_real_latency_gives_the_same_lock(s3: S3Bucket, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """24 ms added to every store request (as a distant bucket has): budgets hold per partition
    fetch, so a slow store slows a resolve down but never fails it, and the lock is the one a
    local store gives."""
    slow = s3.slow_proxy(0.024)
    monkeypatch.setenv("AWS_ENDPOINT_URL", slow.url)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    local = project(tmp_path / "local", ".seamless/store")
    remote = project(tmp_path / "remote", s3.url())
    resolve(local)
    resolve(remote, "--jobs", "2")
    assert slow.total() > 0  # every request went through the slow proxy
    assert (remote / "seamless.lock").read_bytes() == (local / "seamless.lock").read_bytes()
