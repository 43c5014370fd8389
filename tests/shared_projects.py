"""Two real git repositories (two projects) sharing one store, for test_gc_shared and test_pins.

The store is a local folder or a bucket on the loopback S3 endpoint (``tests/s3_server.py``; the
``s3`` fixture puts its endpoint and credentials in the environment, so ``s3://`` stores open
as a user's would). Time: ``QMTL_LOCK_NOW`` at today's midnight, as in ``gc_repo``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from gc_repo import at, manifest
from qmtl_engine import Store

from qmtl_lock.cli import cli
from qmtl_lock.lockfile import read_lock
from qmtl_lock.resolve import resolve
from qmtl_lock.verify import verify


@dataclass
class Project:
    """One project: a git repository with a seamless.yaml naming the shared store."""

    root: Path
    store_url: str

    @property
    def manifest(self) -> Path:
        return self.root / "seamless.yaml"

    @property
    def store(self) -> Store:
        return Store(self.store_url)

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.root, check=True, capture_output=True,
                              text=True).stdout

    def write(self, **kwargs: str) -> None:
        text = manifest(**kwargs).replace("store: .seamless/store", f"store: {self.store_url}")
        self.manifest.write_text(text, encoding="utf-8")

    def resolve(self, **kwargs: str) -> dict[str, str]:
        """Write the manifest, resolve it, return {dataset: fingerprint}."""
        self.write(**kwargs)
        resolve(self.manifest)
        return self.pins()

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def pins(self) -> dict[str, str]:
        lock = read_lock(self.root / "seamless.lock")
        return {name: next(iter(ds.symbols.values())).dataset_fingerprint
                for name, ds in lock.datasets.items()}

    def run(self, *args: str, code: int = 0, days: float = 0,
            env: dict[str, str] | None = None) -> Result:
        """``qmtl-lock <args> -m <this manifest>`` at T0 + ``days``; asserts the exit code."""
        result = CliRunner().invoke(cli, [*args, "-m", str(self.manifest)],
                                    env={"QMTL_LOCK_NOW": at(days), **(env or {})},
                                    catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    def gc(self, *args: str, days: float) -> dict[str, Any]:
        """``gc --json`` at T0 + days: the plan, with ``deleted`` (files) added."""
        before = store_paths(self.store)
        data: dict[str, Any] = json.loads(self.run("gc", "--json", *args, days=days).stdout)
        gone = {a["path"] for a in data["delete"]}
        data["deleted"] = {f for f in before if f in gone}
        if not data["dry_run"]:
            assert store_paths(self.store) == before - data["deleted"]
        return data

    def verify_ok(self) -> None:
        result = verify(self.manifest)
        assert not result.problems, result.problems
        assert result.checked == 2


def store_paths(store: Store) -> set[str]:
    """Every file in the store, relative to its root (listed afresh)."""
    store.forget_listings()
    if not store.fs.exists(store.root):
        return set()
    prefix = store.root.rstrip("/") + "/"
    return {p[len(prefix):] for p in store.fs.find(store.root)}


def files_of(store: Store, *fingerprints: str) -> set[str]:
    """Store paths of these snapshots and of every object they name."""
    out = set()
    for fp in fingerprints:
        hexd = fp.removeprefix("sha256:")
        out.add(f"snapshots/{hexd[:2]}/{hexd}.json")
        for p in store.get_snapshot(fp).partitions:
            d = p.digest.removeprefix("sha256:")
            out.add(f"objects/{d[:2]}/{d}.parquet")
    return out


@pytest.fixture(params=["local", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The shared store of a test: a local folder, or a prefix of a bucket on the S3 endpoint
    (a fixture of every test module, through conftest.py)."""
    if request.param == "local":
        return str(tmp_path / "shared-store")
    return str(request.getfixturevalue("s3").url("team-store"))


def make_project(folder: Path, store_url: str, *, remote: str | None = None) -> Project:
    """A git repository (branch main, a user, no commits) whose manifest names ``store_url``."""
    folder.mkdir(parents=True)
    project = Project(folder, store_url)
    project.git("init", "-q", "-b", "main")
    project.git("config", "user.name", "Quant Tester")
    project.git("config", "user.email", "quant@example.com")
    project.git("config", "commit.gpgsign", "false")
    if remote:
        project.git("remote", "add", "origin", remote)
    (folder / ".gitignore").write_text(".seamless/\n", encoding="utf-8")
    return project


def two_projects(tmp_path: Path, store_url: str,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Project]:
    """Projects ``alpha`` and ``beta`` on one store, the clock at T0, git config isolated."""
    config = tmp_path / "gitconfig"
    config.write_text("", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("QMTL_LOCK_NOW", at(0))
    for variable in ("CI", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return (make_project(tmp_path / "alpha", store_url),
            make_project(tmp_path / "beta", store_url))


def alpha_moves_on(alpha: Project) -> dict[str, str]:
    """alpha pins, commits, then extends dataset ``a`` and commits: its first ``a`` snapshot is
    then named only by alpha's history (research-short: expired by day 40). Returns the first
    pins."""
    first = alpha.resolve()
    alpha.commit("pin")
    alpha.resolve(a_end="2024-01-05")
    alpha.commit("longer")
    return first
