"""``qmtl-lock pull``: what the lock pins, from the team's S3 store into the local cache, verified;
afterwards loading and ``verify`` need no store at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Project, expect
from s3_server import S3Bucket
from test_store_s3 import SMALL, Team, make_team


@pytest.fixture
def team(project: Project, s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Team:
    return make_team(project, s3, monkeypatch)


TWO = SMALL + """\
  ether:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [ETHUSDT]
    start: 2024-01-30
    end: 2024-02-02
    contract_version: v1
"""


def cache_files(kind: str) -> list[Path]:
    root = Path(os.environ["QMTL_LOCK_CACHE"]) / kind
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_pull_brings_every_pinned_file_once_and_says_how_much(team: Team) -> None:
    team.run("resolve", code=0)
    out = team.run("pull", code=0).stdout
    assert out.startswith("pulled 1 snapshot(s) and 2 object(s) (")
    assert " KB) from s3://" in out and "0 snapshot(s) and 0 object(s) were already" in out
    assert len(cache_files("objects")) == 2 and len(cache_files("snapshots")) == 1
    team.s3.proxy.reset()
    data = json.loads(team.run("pull", "--json", code=0).stdout)
    assert data["snapshots"] == {"fetched": 0, "cached": 1}
    assert data["objects"] == {"fetched": 0, "cached": 2}
    assert data["bytes_fetched"] == 0 and data["ok"] is True
    assert team.s3.proxy.total() == 0  # all verified from the cache


def test_pull_of_named_datasets_brings_only_theirs(team: Team) -> None:
    team.manifest(text=TWO)
    team.run("resolve", code=0)
    data = json.loads(team.run("pull", "ether", "--json", code=0).stdout)
    assert data["snapshots"]["fetched"] == 1 and data["objects"]["fetched"] == 2
    data = json.loads(team.run("pull", "--json", code=0).stdout)
    assert data["snapshots"] == {"fetched": 1, "cached": 1}


def test_after_pull_load_and_verify_work_with_the_endpoint_down(team: Team) -> None:
    from qmtl_lock import Lock

    team.run("resolve", code=0)
    team.run("pull", code=0)
    team.s3.proxy.close()  # nothing listens there any more
    table = Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    assert table.num_rows == 3 * 24 * 60
    assert "all match the lock" in team.run("verify", code=0).stdout
    team.run("show", "crypto", "--gaps", code=0)


def test_a_corrupted_cached_file_is_fetched_again_by_pull(team: Team) -> None:
    team.run("resolve", code=0)
    team.run("pull", code=0)
    victim = cache_files("objects")[0]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])
    data = json.loads(team.run("pull", "--json", code=0).stdout)
    assert data["objects"] == {"fetched": 1, "cached": 1}
    assert victim.read_bytes() == good


def test_pull_names_what_the_store_lacks_and_exits_3(team: Team) -> None:
    team.run("resolve", code=0)
    [key] = [k for k in team.s3.keys("team/objects/")][:1]
    team.s3.endpoint.client().delete_object(Bucket=team.s3.name, Key=key)
    err = team.run("pull", code=3).stderr
    assert "pull could not bring 1 pinned snapshot(s) into the cache" in err
    assert "crypto/BTCUSDT: store object sha256:" in err and "qmtl-lock repair" in err


def test_pull_refuses_unknown_datasets_and_a_missing_lock(team: Team) -> None:
    assert "does not exist" in team.run("pull", code=2).stderr
    team.run("resolve", code=0)
    assert "dataset 'nope' is not in the lock" in team.run("pull", "nope", code=2).stderr


def test_a_local_store_has_nothing_to_pull(resolved: Project) -> None:
    out = expect(resolved.run("pull"), 0).stdout
    assert out.startswith("nothing to pull: the store ")
    assert json.loads(expect(resolved.run("pull", "--json"), 0).stdout)["cache"] is None
