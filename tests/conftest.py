"""Shared fixtures: a small temp project, a pinned clock and a CLI runner that runs inside it.

The project asks for two built-in presets: a few days of synthetic 1-minute crypto bars (two
symbols, two month partitions each) and two years of daily Quandl WIKI equities (embedded data),
so everything runs offline in about a second.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from s3_server import s3, s3_endpoint  # noqa: F401  (fixtures: a real S3 endpoint on loopback)
from shared_projects import store_url  # noqa: F401  (fixture: a local or S3 shared store)

NOW = "2024-06-01T00:00:00Z"
LATER = "2024-06-03T00:00:00Z"

MANIFEST = """\
version: 1
store: .seamless/store
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BTCUSDT, ETHUSDT]
    start: 2024-01-30
    end: 2024-02-02
    contract_version: v1
    retention_class: research-short
  equities:
    preset: ohlcv.quandl_wiki.us_equity.1d
    symbols: [AAPL, MSFT]
    start: 2011-01-01
    end: 2013-01-01
    contract_version: v1
"""

# rows per locked symbol of MANIFEST
CRYPTO_ROWS = 3 * 24 * 60
EQUITY_ROWS = 502


@dataclass
class Project:
    """A project directory plus helpers to run the command line inside it."""

    root: Path
    runner: CliRunner

    @property
    def manifest(self) -> Path:
        return self.root / "seamless.yaml"

    @property
    def lock(self) -> Path:
        return self.root / "seamless.lock"

    @property
    def store(self) -> Path:
        return self.root / ".seamless" / "store"

    @property
    def objects(self) -> Path:
        return self.store / "objects"

    @property
    def snapshots(self) -> Path:
        return self.store / "snapshots"

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """``qmtl-lock ARGS`` through click's CliRunner (cwd is the project)."""
        from qmtl_lock.cli import cli

        return self.runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    def write_manifest(self, text: str) -> None:
        self.manifest.write_text(text, encoding="utf-8")

    def edit_manifest(self, old: str, new: str) -> None:
        text = self.manifest.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in the manifest"
        self.write_manifest(text.replace(old, new, 1))

    def edit_lock(self, old: str, new: str) -> None:
        text = self.lock.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in the lock"
        self.lock.write_text(text.replace(old, new, 1), encoding="utf-8")

    def object_files(self) -> list[Path]:
        return sorted(p for p in self.objects.rglob("*.parquet") if not p.name.startswith("."))

    def scrub(self, text: str) -> str:
        """Output with the temp path replaced by a stable placeholder, for snapshots."""
        return text.replace(str(self.root.resolve()), "<project>").replace(
            str(self.root), "<project>")


def expect(result: Result, code: int) -> Result:
    """Assert the exit code, showing the output when it differs."""
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}\n--- output:\n{result.output}"
    )
    return result


@pytest.fixture
def pinned_now(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    monkeypatch.delenv("CI", raising=False)
    return NOW


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned_now: str) -> Project:
    """A fresh, unresolved project with MANIFEST; the cwd is the project."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    monkeypatch.chdir(root)
    return Project(root, CliRunner())


@pytest.fixture(scope="session")
def resolved_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MANIFEST resolved once per session (at NOW); copied by :func:`resolved`."""
    from qmtl_engine.ranges import to_ms

    from qmtl_lock.resolve import PinnedNowClock, resolve

    root = tmp_path_factory.mktemp("template") / "proj"
    root.mkdir()
    (root / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    resolve(root / "seamless.yaml", clock=PinnedNowClock(to_ms(NOW)))
    return root


@pytest.fixture
def resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned_now: str,
             resolved_template: Path) -> Iterator[Project]:
    """A resolved copy of MANIFEST (lock plus store); the cwd is the project."""
    root = tmp_path / "proj"
    shutil.copytree(resolved_template, root)
    monkeypatch.chdir(root)
    yield Project(root, CliRunner())
