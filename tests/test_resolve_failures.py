"""A resolve where several requests fail reports every one of them, and changes no lock; a
``--frozen`` rebuild restores what it can before it reports what it could not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from vendor_catalog import vendor_catalog

from qmtl_lock.cli import cli
from qmtl_lock.errors import RequestsFailed
from qmtl_lock.lockfile import read_lock
from qmtl_lock.resolve import resolve

CATALOG = vendor_catalog(None)

MANIFEST = """\
version: 1
presets: [vendor.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [AAA, BBB, CCC]
    start: 2024-01-01
    end: 2024-03-01
    contract_version: v1
"""


def write_csv(folder: Path, symbol: str, *, duplicate: bool = False, bump: float = 0.0) -> None:
    import datetime as dt

    lines = ["ts,open,high,low,close,volume"]
    day = dt.date(2024, 1, 1)
    i = 0
    while day < dt.date(2024, 3, 1):
        close = 100 + i * 0.5 + bump
        row = f"{day.isoformat()},{100 + i * 0.5},{close + 2},{99 + i * 0.5},{close},{1000 + i}"
        lines.append(row)
        if duplicate and i == 10:
            lines.append(row.replace(f",{1000 + i}", f",{2000 + i}"))  # same ts, other volume
        day += dt.timedelta(days=1)
        i += 1
    (folder / f"{symbol}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    (tmp_path / "vendor.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    for symbol in ("AAA", "BBB", "CCC"):
        write_csv(tmp_path, symbol)
    return tmp_path


@pytest.mark.parametrize("jobs", [1, 3])
def test_every_refused_symbol_is_listed_and_the_lock_is_untouched(project: Path,
                                                                  jobs: int) -> None:
    resolve(project / "seamless.yaml")
    before = (project / "seamless.lock").read_bytes()
    (project / "seamless.yaml").write_text(MANIFEST.replace("2024-03-01", "2024-02-20"),
                                           encoding="utf-8")
    write_csv(project, "AAA", duplicate=True)
    write_csv(project, "CCC", duplicate=True)
    result = CliRunner().invoke(cli, ["resolve", "--jobs", str(jobs), "-m",
                                      str(project / "seamless.yaml")])
    assert result.exit_code == 3, result.output
    assert "2 of 3 requests failed; seamless.lock was not changed" in result.output
    assert "daily/AAA: conformance refused the data: duplicate_ts=1" in result.output
    assert "daily/CCC: conformance refused the data: duplicate_ts=1" in result.output
    assert "daily/BBB" not in result.output
    assert "Traceback" not in result.output
    assert (project / "seamless.lock").read_bytes() == before


def test_json_lists_each_failure(project: Path) -> None:
    write_csv(project, "AAA", duplicate=True)
    write_csv(project, "BBB", duplicate=True)
    result = CliRunner().invoke(cli, ["resolve", "--json", "-m",
                                      str(project / "seamless.yaml")])
    assert result.exit_code == 3
    import json

    data = json.loads(result.output)
    failures = data.get("failures") or data["error"]["failures"]
    assert [(f["dataset"], f["symbol"], f["error"]) for f in failures] == [
        ("daily", "AAA", "ConformanceError"), ("daily", "BBB", "ConformanceError")]
    assert not (project / "seamless.lock").exists()


def test_a_single_failure_keeps_its_own_error(project: Path) -> None:
    write_csv(project, "BBB", duplicate=True)
    with pytest.raises(Exception) as info:
        resolve(project / "seamless.yaml")
    assert not isinstance(info.value, RequestsFailed)
    assert type(info.value).__name__ == "ConformanceError"


def test_frozen_restores_what_it_can_then_reports_the_rest(project: Path) -> None:
    resolve(project / "seamless.yaml")
    lock = read_lock(project / "seamless.lock")
    shutil.rmtree(project / ".seamless")
    write_csv(project, "AAA", bump=1.0)  # the vendor restated AAA and CCC; BBB is as pinned
    write_csv(project, "CCC", bump=1.0)
    with pytest.raises(RequestsFailed) as info:
        resolve(project / "seamless.yaml", frozen=True)
    assert [(d, s, type(e).__name__) for d, s, e in info.value.failures] == [
        ("daily", "AAA", "UpstreamChanged"), ("daily", "CCC", "UpstreamChanged")]
    assert info.value.exit_code == 3
    from qmtl_engine import Store

    store = Store(str(project / ".seamless" / "store"))
    assert store.has_snapshot(lock.datasets["daily"].symbols["BBB"].dataset_fingerprint)
    assert not store.has_snapshot(lock.datasets["daily"].symbols["AAA"].dataset_fingerprint)
