"""``qmtl-lock doctor``: one verdict per probe of the store, on a local disk and on S3, including a
server that ignores ``If-None-Match`` (a proxy that drops the header before moto sees it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project, expect
from s3_server import S3Bucket
from test_store_s3 import Team, make_team


@pytest.fixture
def team(project: Project, s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Team:
    return make_team(project, s3, monkeypatch)


def verdicts(output: str) -> dict[str, str]:
    """probe name -> status, from doctor's lines."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("ok", "warn", "fail", "skip"):
            found[parts[1]] = parts[0]
    return found


def test_a_local_store_is_reachable_writable_and_exclusive(project: Project) -> None:
    out = expect(project.run("doctor"), 0).stdout
    assert verdicts(out) == {"reachable": "ok", "writable": "ok", "conditional-writes": "ok",
                             "cache": "skip"}
    assert "O_EXCL honoured" in out and "is made on the first write" in out
    assert not (project.store / "doctor").exists()  # the probes are gone, their folder too
    data = json.loads(expect(project.run("doctor", "--json"), 0).stdout)
    assert data["ok"] is True and data["endpoint"] is None
    assert [p["name"] for p in data["probes"]] == ["reachable", "writable",
                                                   "conditional-writes", "cache"]


def test_a_local_store_that_cannot_be_written_fails(project: Project) -> None:
    (project.root / "blocker").write_text("a file where the store's folder should be\n")
    project.edit_manifest("store: .seamless/store", "store: blocker/store")
    result = expect(project.run("doctor"), 3)
    assert verdicts(result.stdout)["writable"] == "fail"
    assert verdicts(result.stdout)["conditional-writes"] == "skip"


def test_an_s3_store_passes_every_probe_and_leaves_nothing(team: Team) -> None:
    out = team.run("doctor", code=0).stdout
    assert out.splitlines()[0] == f"store s3://{team.s3.name}/team at {team.s3.endpoint_url}"
    assert verdicts(out) == {"reachable": "ok", "writable": "ok", "conditional-writes": "ok",
                             "cache": "ok"}
    assert f"bucket {team.s3.name} at {team.s3.endpoint_url} answers" in out
    assert "If-None-Match: * honoured" in out
    assert team.s3.keys() == []


def test_a_server_that_ignores_if_none_match_is_a_warning_that_says_what_it_risks(
        team: Team) -> None:
    team.manifest(endpoint=team.s3.unconditional_proxy().url)
    result = team.run("doctor", code=1)
    assert verdicts(result.stdout)["conditional-writes"] == "warn"
    assert "it ignores If-None-Match: *" in result.stdout
    assert "can overwrite each other" in result.stdout and "gc lock" in result.stdout
    assert "fix: use a store that honours conditional writes" in result.stdout
    data = json.loads(team.run("doctor", "--json", code=1).stdout)
    assert data["ok"] is False
    assert team.s3.keys() == []


def test_a_missing_bucket_fails_and_skips_the_rest(team: Team) -> None:
    team.manifest(url=f"s3://{team.s3.name}-typo/team")
    result = team.run("doctor", code=3)
    assert verdicts(result.stdout) == {"reachable": "fail", "writable": "skip",
                                       "conditional-writes": "skip", "cache": "ok"}
    assert "qmtl-lock never creates buckets" in result.stdout


def test_a_cache_that_cannot_be_written_is_a_warning(team: Team, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("QMTL_LOCK_CACHE", str(blocker / "cache"))
    result = team.run("doctor", code=1)
    assert verdicts(result.stdout)["cache"] == "warn"
    assert f"cannot write to the cache folder {blocker / 'cache'}" in result.stdout
