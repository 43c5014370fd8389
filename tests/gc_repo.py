"""A real git repository with a project in it, for the gc tests (test_gc, test_gc_safety).

Time: ``QMTL_LOCK_NOW`` starts at today's midnight (UTC), so that file times, which gc compares
with the grace period, are real; each gc run moves the clock forward by whole days.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from qmtl_engine.ranges import DAY_MS, iso
from qmtl_engine.store import Store

from qmtl_lock.cli.gc import gc_command
from qmtl_lock.lockfile import read_lock
from qmtl_lock.resolve import resolve
from qmtl_lock.verify import verify

T0 = time.time_ns() // 1_000_000 // DAY_MS * DAY_MS  # today, 00:00 UTC: resolves happen "now"


def at(days: float) -> str:
    return iso(T0 + int(days * DAY_MS))


def manifest(a_end: str = "2024-01-03", b_end: str = "2024-02-03",
             cls: str = "research-short", extra: str = "") -> str:
    return f"""\
version: 1
store: .seamless/store
{extra}datasets:
  a:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [BTCUSDT]
    start: 2024-01-01
    end: {a_end}
    contract_version: v1
    retention_class: {cls}
  b:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [ETHUSDT]
    start: 2024-02-01
    end: {b_end}
    contract_version: v1
    retention_class: {cls}
"""


@dataclass
class Repo:
    root: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def store(self) -> Store:
        return Store(str(self.root / ".seamless" / "store"))

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.root, check=True, capture_output=True,
                              text=True).stdout

    def resolve(self, **kwargs: str) -> dict[str, str]:
        """Write the manifest, resolve it at T0, return {dataset: fingerprint}."""
        (self.root / "seamless.yaml").write_text(manifest(**kwargs), encoding="utf-8")
        resolve(self.root / "seamless.yaml")
        return self.pins()

    def commit(self, message: str, *extra: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, *extra)

    def pins(self) -> dict[str, str]:
        lock = read_lock(self.root / "seamless.lock")
        return {name: next(iter(ds.symbols.values())).dataset_fingerprint
                for name, ds in lock.datasets.items()}

    def files_of(self, *fingerprints: str) -> set[str]:
        """Store paths of these snapshots and of every object they name."""
        out = set()
        for fp in fingerprints:
            hexd = fp.removeprefix("sha256:")
            out.add(f"snapshots/{hexd[:2]}/{hexd}.json")
            for p in self.store.get_snapshot(fp).partitions:
                d = p.digest.removeprefix("sha256:")
                out.add(f"objects/{d[:2]}/{d}.parquet")
        return out

    def store_files(self) -> dict[str, bytes]:
        base = self.root / ".seamless" / "store"
        return {p.relative_to(base).as_posix(): p.read_bytes()
                for p in sorted(base.rglob("*")) if p.is_file()}

    def run_gc(self, *args: str, days: float, code: int = 0) -> Result:
        result = CliRunner().invoke(gc_command, list(args), env={"QMTL_LOCK_NOW": at(days)},
                                    catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    def gc(self, *args: str, days: float) -> dict[str, Any]:
        """Run ``gc --json`` at T0 + days; the plan, with ``deleted`` (files) added."""
        before = set(self.store_files())
        data: dict[str, Any] = json.loads(self.run_gc("--json", *args, days=days).stdout)
        paths = {a["path"] for a in data["delete"]}
        data["deleted"] = {f for f in before if f in paths or any(
            f.startswith(p + "/") for p in paths)}
        data["reasons"] = {k["path"]: k["reason"] for k in data["kept"]}
        if not data["dry_run"] and not data["archive"]:
            assert set(self.store_files()) == before - data["deleted"]
        return data

    def verify_ok(self) -> None:
        result = verify(self.root / "seamless.yaml")
        assert not result.problems, result.problems
        assert result.checked == 2


def make_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """A git repository with a user and no commits, the store git-ignored, the clock at T0."""
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.setenv("QMTL_LOCK_NOW", at(0))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.chdir(root)
    r = Repo(root, monkeypatch)
    r.git("init", "-q", "-b", "main")
    r.git("config", "user.name", "Quant Tester")
    r.git("config", "user.email", "quant@example.com")
    r.git("config", "commit.gpgsign", "false")
    (root / ".gitignore").write_text(".seamless/\n", encoding="utf-8")
    return r


def snapshot_path(fp: str) -> str:
    hexd = fp.removeprefix("sha256:")
    return f"snapshots/{hexd[:2]}/{hexd}.json"


def leftovers(repo: Repo) -> set[str]:
    """A snapshot no lock names (qmtl-lock materialize), a stale job and a torn temporary."""
    from qmtl_lock.materialize_job import MaterializeSeamlessJob

    report = MaterializeSeamlessJob(preset="ohlcv.synthetic.crypto.1h", symbol="SOLUSDT",
                                    start="2024-03-01", end="2024-03-02", contract_version="v1",
                                    artifact_dir=str(repo.root / ".seamless" / "store")).run()
    base = repo.root / ".seamless" / "store"
    for rel in ("jobs/0123abcd.json", "jobs/0123abcd.staged/ab" + "0" * 62 + ".parquet",
                "jobs/feedbeef.staged/cd" + "0" * 62 + ".parquet",
                "objects/ab/.tmp-0a1b-ab" + "1" * 62 + ".parquet"):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(b"partial")
    return repo.files_of(report.dataset_fingerprint) | {
        "jobs/0123abcd.json", "jobs/0123abcd.staged/ab" + "0" * 62 + ".parquet",
        "jobs/feedbeef.staged/cd" + "0" * 62 + ".parquet",
        "objects/ab/.tmp-0a1b-ab" + "1" * 62 + ".parquet"}
