"""Upstream restatements: the same range fetched again gives other data."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from vendor_catalog import vendor_catalog

from qmtl_lock.cli import cli
from qmtl_lock.errors import UpstreamChanged
from qmtl_lock.lockfile import read_lock
from qmtl_lock.resolve import resolve

CATALOG = vendor_catalog("month")

MANIFEST = """\
version: 1
presets: [vendor.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [XYZ]
    start: 2024-01-01
    end: 2024-04-01
    contract_version: v1
"""


def write_csv(folder: Path, bump_day: str | None = None) -> None:
    import datetime as dt

    lines = ["ts,open,high,low,close,volume"]
    day = dt.date(2024, 1, 1)
    i = 0
    while day < dt.date(2024, 4, 1):
        close = 100 + i * 0.5 + (1.0 if day.isoformat() == bump_day else 0.0)
        lines.append(f"{day.isoformat()},{100 + i * 0.5},{close + 2},{99 + i * 0.5},{close},"
                     f"{1000 + i}")
        day += dt.timedelta(days=1)
        i += 1
    (folder / "XYZ.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    (tmp_path / "vendor.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    write_csv(tmp_path)
    resolve(tmp_path / "seamless.yaml")
    return tmp_path


def test_refresh_names_the_restated_partitions_and_repins(project: Path) -> None:
    before = read_lock(project / "seamless.lock").entry("daily", "XYZ")
    write_csv(project, bump_day="2024-02-14")  # the vendor corrects one February bar
    assert [c.action for c in resolve(project / "seamless.yaml").changes] == ["unchanged"]
    result = CliRunner().invoke(cli, ["resolve", "--refresh", "-m", str(project / "seamless.yaml")])
    assert result.exit_code == 0, result.output
    assert ("restated  daily/XYZ: the source now gives other data for partitions 2024-02"
            in result.output)
    after = read_lock(project / "seamless.lock").entry("daily", "XYZ")
    assert after is not None and before is not None
    assert after.dataset_fingerprint != before.dataset_fingerprint


def test_refresh_without_a_restatement_changes_nothing(project: Path) -> None:
    before = (project / "seamless.lock").read_bytes()
    changes = resolve(project / "seamless.yaml", refresh=True).changes
    assert [(c.action, c.detail) for c in changes] == [("unchanged", "same content")]
    assert (project / "seamless.lock").read_bytes() == before


def test_rebuilding_an_empty_store_refuses_restated_data(project: Path) -> None:
    import shutil

    shutil.rmtree(project / ".seamless")
    write_csv(project, bump_day="2024-03-01")
    before = (project / "seamless.lock").read_bytes()
    with pytest.raises(UpstreamChanged) as info:
        resolve(project / "seamless.yaml")
    assert "resolve --update daily" in str(info.value)
    assert (project / "seamless.lock").read_bytes() == before


def test_an_update_that_refetches_a_window_reports_the_restatement(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the store lost a partition, --update fetches it again: changed history shows."""
    from qmtl_engine.store import Store

    lock = read_lock(project / "seamless.lock")
    fp = lock.datasets["daily"].symbols["XYZ"].dataset_fingerprint
    store = Store(str(project / ".seamless" / "store"))
    march = store.get_snapshot(fp).partitions[2]
    Path(store.object_path(march.digest)).unlink()
    write_csv(project, bump_day="2024-03-05")
    changes = resolve(project / "seamless.yaml", update=True).changes
    assert [(c.action, c.detail) for c in changes] == [
        ("restated", "the source now gives other data for partitions 2024-03")]
