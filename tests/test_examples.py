"""The example strategy, the locked_data pytest fixture, and the materialize helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmtl_lock.errors import InputError, ObjectCorrupted, ObjectMissing
from qmtl_lock.lockfile import read_lock
from qmtl_lock.materialize_job import (
    MaterializeSeamlessJob,
    materialize_and_pin,
    require_materialized_snapshot,
)
from qmtl_lock.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
NOW = "2026-11-27T00:00:00Z"


@pytest.fixture
def strategy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    folder = tmp_path / "strategy"
    shutil.copytree(ROOT / "examples" / "strategy", folder,
                    ignore=shutil.ignore_patterns(".seamless", "__pycache__"))
    before = (folder / "seamless.lock").read_text()
    resolve(folder / "seamless.yaml")  # fills the empty store; the committed lock must hold
    assert (folder / "seamless.lock").read_text() == before
    return folder


def run_pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def flip_one_close(folder: Path, symbol: str = "AAPL") -> None:
    """Change one close price in the first (2010) partition of ``symbol``, keeping its name."""
    from qmtl_engine.store import Store

    fp = read_lock(folder / "seamless.lock").datasets["us_equities_daily"] \
        .symbols[symbol].dataset_fingerprint
    store = Store(str(folder / ".seamless" / "store"))
    path = store.object_path(store.get_snapshot(fp).partitions[0].digest)
    table = pq.read_table(path)
    close = table["close"].to_pylist()
    close[10] += 0.01
    pq.write_table(table.set_column(4, "close", pa.array(close)), path)


def test_example_strategy_passes_on_locked_data(strategy: Path) -> None:
    result = run_pytest(strategy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_example_strategy_fails_when_the_data_behind_the_lock_changes(strategy: Path) -> None:
    flip_one_close(strategy)
    result = run_pytest(strategy)
    assert result.returncode == 1
    assert "locked data changed: fingerprint mismatch" in result.stdout
    assert "partition 2010" in result.stdout


def test_require_materialized_snapshot(strategy: Path) -> None:
    lock = read_lock(strategy / "seamless.lock")
    fp = lock.datasets["us_equities_daily"].symbols["AAPL"].dataset_fingerprint
    store = strategy / ".seamless" / "store"
    snap = require_materialized_snapshot(fingerprint=fp, store=store)
    assert snap["fingerprint"] == fp and snap["header"]["symbol"] == "AAPL"
    with pytest.raises(ObjectMissing):
        require_materialized_snapshot(fingerprint="sha256:" + "0" * 64, store=store)
    flip_one_close(strategy)
    with pytest.raises(ObjectCorrupted) as info:
        require_materialized_snapshot(fingerprint=fp, store=store)
    assert info.value.partition == "2010"


def test_materialize_job_matches_the_lock(strategy: Path) -> None:
    lock = read_lock(strategy / "seamless.lock")
    report = MaterializeSeamlessJob(
        preset="ohlcv.quandl_wiki.us_equity.1d", symbol="MSFT", start="2010-01-01",
        end="2013-01-01", contract_version="v1", retention_class="research-long",
        artifact_dir=strategy / "other-store").run()
    assert report.dataset_fingerprint == \
        lock.datasets["us_equities_daily"].symbols["MSFT"].dataset_fingerprint
    assert report.coverage_bounds == ("2010-01-01T00:00:00Z", "2013-01-01T00:00:00Z")
    assert report.retention_class == "research-long" and report.fetched_partitions == 3


def test_materialize_and_pin_declares_and_locks(strategy: Path) -> None:
    manifest = strategy / "seamless.yaml"
    reports = materialize_and_pin("ibm", preset="ohlcv.quandl_wiki.us_equity.1d",
                                  symbols=["IBM"], start="2012-01-01", end="2013-01-01",
                                  contract_version="v1", manifest=manifest)
    assert [r["symbol"] for r in reports] == ["IBM"]
    text = manifest.read_text()
    assert text.startswith("# yaml-language-server")  # comments kept
    assert "  ibm:\n" in text
    lock = read_lock(strategy / "seamless.lock")
    assert lock.datasets["ibm"].symbols["IBM"].rows == 250
    from qmtl_lock.check import check

    assert not check(manifest)
    # pinning the same thing again is a no-op; asking for something else is refused
    assert materialize_and_pin("ibm", preset="ohlcv.quandl_wiki.us_equity.1d",
                               symbols=["IBM"], start="2012-01-01", end="2013-01-01",
                               contract_version="v1", manifest=manifest) == []
    with pytest.raises(InputError, match="already declared with other start"):
        materialize_and_pin("ibm", preset="ohlcv.quandl_wiki.us_equity.1d", symbols=["IBM"],
                            start="2011-01-01", end="2013-01-01", contract_version="v1",
                            manifest=manifest)


def test_to_polars_needs_polars(strategy: Path) -> None:
    from qmtl_lock import Lock

    lock = Lock.open(strategy / "seamless.lock")
    try:
        import polars  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"qmtl-lock\[polars\]"):
            lock.to_polars("us_equities_daily", "AAPL")
    else:
        frame = lock.to_polars("us_equities_daily", "AAPL")
        assert frame.height == lock.entry("us_equities_daily", "AAPL").rows
