"""A team store on a real S3 endpoint (moto's server on loopback, behind a counting proxy).

The project names its store as ``{url, options}`` with the endpoint in the options and the
credentials read from environment variables (``key_env``, ``secret_env``) whose names do not look
secret, and the AWS environment is removed: so the options alone reach the bucket, and only the
engine's own registration of what it read keeps the planted secret out of every output. Every
command runs for real (click's CliRunner, and the console script where a traceback or the time
to fail matter).
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from conftest import MANIFEST, Project, expect
from s3_server import KEY_ID, SECRET, S3Bucket

KEY_VAR, SECRET_VAR = "TEAM_S3_ID", "TEAM_S3_PW"  # names the env redaction does not catch
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN")
DOCUMENTED = (0, 1, 2, 3)

# one symbol of synthetic minute bars, two month partitions: quick to resolve into S3
SMALL = """\
version: 1
store:
  url: {url}
  options:
    endpoint_url: {endpoint}
    key_env: TEAM_S3_ID
    secret_env: TEAM_S3_PW
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BTCUSDT]
    start: 2024-01-30
    end: 2024-02-02
    contract_version: v1
"""


def store_block(url: str, endpoint: str) -> str:
    return (f"store:\n  url: {url}\n  options:\n    endpoint_url: {endpoint}\n"
            f"    key_env: {KEY_VAR}\n    secret_env: {SECRET_VAR}\n")


@dataclass
class Team:
    """A project whose store is a bucket of the moto server, reached through options only."""

    project: Project
    s3: S3Bucket

    def manifest(self, *, url: str | None = None, endpoint: str | None = None,
                 text: str = SMALL) -> None:
        self.project.write_manifest(text.format(url=url or self.s3.url("team"),
                                                endpoint=endpoint or self.s3.endpoint_url))

    def run(self, *args: str, code: int | None = None) -> Result:
        """``qmtl-lock ARGS``; its output never holds the secret, its code is documented."""
        result = self.project.run(*args)
        printed = result.stdout + result.stderr
        assert SECRET not in printed and KEY_ID not in printed, (args, printed)
        assert "Traceback" not in printed, (args, printed)
        assert result.exit_code in DOCUMENTED, (args, result.exit_code, printed)
        if code is not None:
            expect(result, code)
        return result

    def assert_secret_nowhere(self) -> None:
        """Not in a file of the project (lock, seamless.yaml, .seamless/), of the cache, or of
        the bucket."""
        for folder in (self.project.root, Path(os.environ["QMTL_LOCK_CACHE"])):
            for path in folder.rglob("*"):
                if path.is_file():
                    assert SECRET.encode() not in path.read_bytes(), path
        client = self.s3.endpoint.client()
        for key in self.s3.keys(""):
            body = client.get_object(Bucket=self.s3.name, Key=key)["Body"].read()
            assert SECRET.encode() not in body and SECRET not in key, key


def make_team(project: Project, s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Team:
    """The project with :data:`SMALL` on the bucket, the AWS environment gone and the
    credentials in the variables the options name (the ``team`` fixture of each module)."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_VAR, KEY_ID)
    monkeypatch.setenv(SECRET_VAR, SECRET)
    made = Team(project, s3)
    made.manifest()
    return made


@pytest.fixture
def team(project: Project, s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Team:
    return make_team(project, s3, monkeypatch)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cli_process(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qmtl_lock.cli", *args], cwd=root,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ))


# -- resolve, verify, load through options ----------------------------------------------------
def test_resolve_verify_show_diff_and_load_through_store_options(team: Team) -> None:
    team.run("resolve", code=0)
    team.run("verify", code=0)
    shown = team.run("show", code=0).stdout
    assert "BTCUSDT" in shown
    team.run("diff", "seamless.lock", "seamless.lock", code=0)
    team.run("show", "crypto", "--gaps", code=0)
    team.run("gc", "--dry-run", "--no-git", code=0)
    keys = team.s3.keys("team/")
    assert [k for k in keys if k.startswith("team/objects/")], keys
    assert [k for k in keys if k.startswith("team/snapshots/")], keys

    from qmtl_lock import Lock

    table = Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    assert table.num_rows == 3 * 24 * 60
    team.assert_secret_nowhere()


def test_a_second_resolve_is_the_light_no_op_on_s3_too(team: Team) -> None:
    team.run("resolve", code=0)
    team.s3.proxy.reset()
    assert team.run("resolve", code=0).stdout.endswith("seamless.lock is up to date\n")
    assert team.s3.proxy.counts["GET"] == 0  # snapshots looked up (HEAD), no data read


def test_the_lock_on_s3_is_the_lock_of_a_local_store(team: Team, resolved_template: Path) -> None:
    team.project.write_manifest(MANIFEST.replace("store: .seamless/store\n", store_block(
        team.s3.url("full"), team.s3.endpoint_url)))
    team.run("resolve", code=0)
    assert team.project.lock.read_bytes() == (resolved_template / "seamless.lock").read_bytes()
    team.run("verify", code=0)


def test_a_store_pickles_without_its_secret_and_works_where_it_is_unpickled(team: Team) -> None:
    from qmtl_engine import Store

    team.run("resolve", code=0)
    options = {"endpoint_url": team.s3.endpoint_url, "key_env": KEY_VAR,
               "secret_env": SECRET_VAR}
    store = Store(team.s3.url("team"), storage_options=options)
    data = pickle.dumps(store)
    assert SECRET.encode() not in data and KEY_ID.encode() not in data
    assert SECRET_VAR.encode() in data  # what travels is the variable's name
    again = pickle.loads(data)
    assert again.storage_options == options
    assert sorted(again.iter_snapshots()) == sorted(store.iter_snapshots()) != []


# -- what is refused ---------------------------------------------------------------------------
def test_a_password_in_the_store_url_is_refused_with_the_fix(team: Team) -> None:
    team.project.write_manifest(SMALL.format(url=f"s3://{KEY_ID}:{SECRET}@{team.s3.name}/x",
                                             endpoint=team.s3.endpoint_url))
    for args in (["resolve"], ["resolve", "--dry-run"], ["doctor"]):
        result = team.run(*args, code=2)
        assert "carries a password" in result.stderr, args
        assert "secret_env" in result.stderr and "<redacted>@" in result.stderr, result.stderr
    assert team.s3.keys() == []


def test_a_missing_variable_is_bad_input_naming_it_the_option_and_seamless_yaml(
        team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_VAR)
    for args in (["resolve"], ["doctor"]):
        err = team.run(*args, code=2).stderr
        assert f"environment variable {SECRET_VAR} is not set" in err, err
        assert "secret_env" in err and "seamless.yaml" in err, err


@pytest.mark.parametrize(("options", "words"), [
    ("    secret: inline\n", "given twice"),
    ("    region_env: not a name\n", "must name an environment variable"),
], ids=["option-and-its-env", "bad-variable-name"])
def test_options_that_cannot_resolve_are_refused_at_their_line(team: Team, options: str,
                                                               words: str) -> None:
    team.project.write_manifest(SMALL.format(url=team.s3.url(), endpoint=team.s3.endpoint_url)
                                .replace("    secret_env: TEAM_S3_PW\n",
                                         "    secret_env: TEAM_S3_PW\n" + options))
    err = team.run("check", code=2).stderr
    assert words in err and "seamless.yaml:" in err, err


# -- buckets are never created -----------------------------------------------------------------
def test_a_missing_bucket_is_a_clear_storage_error_and_no_bucket_is_made(team: Team) -> None:
    team.run("resolve", code=0)
    name = team.s3.name + "-typo"
    team.manifest(url=f"s3://{name}/team")
    for args in (["resolve"], ["resolve", "--frozen"], ["verify"], ["pull"],
                 ["gc", "--dry-run", "--no-git"], ["repair"], ["doctor"]):
        output = team.run(*args, code=3).output
        assert f"bucket {name} does not exist at {team.s3.endpoint_url}" in output, args
        assert "qmtl-lock never creates buckets" in output, args
    buckets = [b["Name"] for b in team.s3.endpoint.client().list_buckets()["Buckets"]]
    assert name not in buckets


def test_a_bucket_that_went_missing_after_resolve_is_named_by_verify_and_load(
        team: Team) -> None:
    team.run("resolve", code=0)
    team.manifest(url=f"s3://{team.s3.name}-gone/team")
    for args in (["verify"], ["pull"]):
        err = team.run(*args, code=3).stderr
        assert f"bucket {team.s3.name}-gone does not exist" in err, (args, err)

    from qmtl_engine import StoreError

    from qmtl_lock import Lock

    with pytest.raises(StoreError, match="does not exist"):
        Lock.open(team.project.lock).load("crypto", "BTCUSDT")


# -- an endpoint that does not answer ----------------------------------------------------------
def test_an_unreachable_endpoint_fails_fast_with_one_message_from_every_command(
        team: Team) -> None:
    team.run("resolve", code=0)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    # one attempt per request (an option the user may set; the defaults are timed below)
    team.manifest(endpoint=f"{endpoint}\n    config_kwargs: {{retries: {{max_attempts: 1}}}}")
    for args in (["resolve"], ["resolve", "--frozen"], ["verify"], ["pull"], ["show", "crypto",
                 "--gaps"], ["gc", "--dry-run", "--no-git"], ["repair"], ["doctor"],
                 ["doctor", "--json"], ["verify", "--json"]):
        started = time.monotonic()
        result = team.run(*args, code=3)
        assert time.monotonic() - started < 10, args
        assert f"cannot reach the store at {endpoint}" in result.output, (args, result.output)
        assert f"s3://{team.s3.name}/team" in result.output, (args, result.output)

    # diff only notes that the snapshots cannot be read: the locks still compare
    note = team.run("diff", "seamless.lock", "seamless.lock", code=0).output
    assert "Traceback" not in note

    from qmtl_engine import StoreError

    from qmtl_lock import Lock

    with pytest.raises(StoreError, match="cannot reach the store"):
        Lock.open(team.project.lock).load("crypto", "BTCUSDT")


def test_the_console_script_fails_in_seconds_without_a_traceback(team: Team) -> None:
    team.manifest(endpoint=f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    proc = cli_process(team.project.root, "resolve")
    assert time.monotonic() - started < 20  # bounded retries: not botocore's minutes
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: cannot reach the store at http://127.0.0.1:")
    assert "Traceback" not in proc.stderr and SECRET not in proc.stdout + proc.stderr


def test_refused_credentials_are_one_message_that_points_at_the_variables(team: Team) -> None:
    team.run("resolve", code=0)
    denied = team.s3.denying_proxy().url
    team.manifest(endpoint=denied)
    for args in (["resolve"], ["verify"], ["pull"], ["gc", "--dry-run", "--no-git"]):
        err = team.run(*args, code=3).stderr
        assert err.startswith(f"error: the store at {denied} refused access"), (args, err)
        assert "key_env" in err and "secret_env" in err, err
    result = team.run("doctor", code=3)
    assert "fail  reachable" in result.stdout and "refused access" in result.stdout


# -- the read-through cache --------------------------------------------------------------------
def cached_files(kind: str) -> list[Path]:
    root = Path(os.environ["QMTL_LOCK_CACHE"]) / kind
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_second_load_reads_the_cache_and_the_store_not_at_all(team: Team) -> None:
    from qmtl_lock import Lock

    team.run("resolve", code=0)
    first = Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    assert len(cached_files("objects")) == 2 and len(cached_files("snapshots")) == 1
    team.s3.proxy.reset()
    again = Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    assert again.equals(first)
    assert team.s3.proxy.total() == 0, team.s3.proxy.paths


def test_a_corrupted_cache_file_is_fetched_again_never_trusted(team: Team) -> None:
    from qmtl_lock import Lock

    team.run("resolve", code=0)
    good = Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    victim = cached_files("objects")[0]
    original = victim.read_bytes()
    victim.write_bytes(original[:100] + b"\0" * 50 + original[150:])
    snapshot = cached_files("snapshots")[0]
    snapshot.write_text(snapshot.read_text().replace('"rows": ', '"rows": 1', 1))
    team.s3.proxy.reset()
    assert Lock.open(team.project.lock).load("crypto", "BTCUSDT").equals(good)
    gets = [path for method, path in team.s3.proxy.paths if method == "GET"]
    assert len(gets) == 2, team.s3.proxy.paths  # the bad object and the bad manifest, no more
    assert victim.read_bytes() == original  # put back from the store


def test_a_local_store_has_no_cache(project: Project, monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    monkeypatch.setenv("QMTL_LOCK_CACHE", str(tmp_path / "cache"))
    expect(project.run("resolve"), 0)

    from qmtl_lock import Lock

    Lock.open(project.lock).load("crypto", "BTCUSDT")
    # nothing of the store is cached (the cache folder may hold a files source's index)
    assert not [p for p in (tmp_path / "cache").glob("*") if p.name != "files-index"]
    assert "nothing to pull" in expect(project.run("pull"), 0).stdout


def test_cache_false_reads_the_store_every_time(team: Team) -> None:
    from qmtl_lock import Lock

    team.project.edit_manifest("datasets:", "cache: false\ndatasets:")
    team.run("resolve", code=0)
    Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    team.s3.proxy.reset()
    Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    assert team.s3.proxy.counts["GET"] >= 3  # the manifest and both objects
    assert cached_files("objects") == []


def test_cache_in_seamless_yaml_is_a_folder_beside_it(team: Team) -> None:
    from qmtl_lock import Lock

    team.project.edit_manifest("datasets:", "cache: .cache/data\ndatasets:")
    team.run("resolve", code=0)
    Lock.open(team.project.lock).load("crypto", "BTCUSDT")
    folder = team.project.root / ".cache" / "data"
    assert len(list((folder / "objects").rglob("*.parquet"))) == 2
    assert cached_files("objects") == []


def test_the_readme_store_block_is_a_valid_manifest(tmp_path: Path) -> None:
    import re

    import yaml

    from qmtl_lock.manifest import manifest_store_setting, parse_manifest

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Team store on S3\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"^```yaml\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    manifest, _ = parse_manifest(f"version: 1\n{block}", "seamless.yaml")
    setting = manifest_store_setting(manifest, tmp_path)
    assert setting.url == yaml.safe_load(block)["store"]["url"]
    assert setting.options["secret_env"] == "TEAM_S3_SECRET"
    assert setting.cache == str(tmp_path / ".seamless" / "cache")
