"""``qmtl-lock materialize`` knows the presets of the project it runs in (issue 12): the catalogs
under ``presets:`` of the nearest seamless.yaml, as ``resolve`` does, plus each ``--presets FILE``.
The snapshot it reports for a user preset is the one ``resolve`` pins.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import Project, expect
from vendor_catalog import vendor_catalog

from qmtl_lock.lockfile import read_lock

MANIFEST = """\
version: 1
presets: [catalogs/vendor.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [XYZ]
    start: 2024-01-01
    end: 2024-01-15
    contract_version: v1
"""
ARGS = ("materialize", "ohlcv.vendor.crypto.1d", "--symbol", "XYZ", "--start", "2024-01-01",
        "--end", "2024-01-15")


def _catalog(folder: Path) -> Path:
    """The vendor catalog in ``folder`` with its CSV beside it (the files source reads
    ``{symbol}.csv`` relative to the catalog)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["ts,open,high,low,close,volume"]
    for i in range(14):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=i)
        lines.append(f"{day.isoformat()},{100 + i},{102 + i},{99 + i},{101 + i},{1000 + i}")
    (folder / "XYZ.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / "vendor.yaml"
    path.write_text(vendor_catalog("month"), encoding="utf-8")
    return path


def test_materialize_uses_the_catalogs_of_the_nearest_seamless_yaml(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    _catalog(project.root / "catalogs")
    project.write_manifest(MANIFEST)
    expect(project.run("resolve"), 0)
    locked = read_lock(project.lock).datasets["daily"].symbols["XYZ"]

    below = project.root / "notebooks"
    below.mkdir()
    monkeypatch.chdir(below)  # a parent folder's seamless.yaml is the project's, as for resolve
    report = json.loads(expect(project.run(*ARGS, "--store", str(below / "store")), 0).output)
    assert report["dataset_fingerprint"] == locked.dataset_fingerprint
    assert report["rows"] == 14


def test_materialize_takes_presets_files_outside_a_project(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from qmtl_lock.cli import cli

    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    catalog = _catalog(tmp_path / "shared")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = CliRunner()
    unknown = runner.invoke(cli, list(ARGS))
    assert unknown.exit_code == 2, unknown.output
    assert "unknown preset 'ohlcv.vendor.crypto.1d'" in unknown.output
    done = runner.invoke(cli, [*ARGS, "--presets", str(catalog)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["rows"] == 14
    missing = runner.invoke(cli, [*ARGS, "--presets", str(catalog), "--presets", "nope.yaml"])
    assert missing.exit_code == 2, missing.output
    assert "preset catalog 'nope.yaml' does not exist" in missing.output
    assert "--presets" in missing.output


def test_materialize_asks_the_source_for_the_source_symbol(project: Project) -> None:
    """`--source-symbol` is a dataset's `source_symbol`: the file is the vendor's name, the
    snapshot names our symbol, and it is the one resolve pins for the same mapping."""
    catalogs = project.root / "catalogs"
    _catalog(catalogs)
    (catalogs / "XYZ.csv").rename(catalogs / "XBTXYZ.csv")
    project.write_manifest(MANIFEST.replace(
        "symbols: [XYZ]", "symbols: [{symbol: XYZ, source_symbol: XBTXYZ}]"))
    expect(project.run("resolve"), 0)
    locked = read_lock(project.lock).datasets["daily"].symbols["XYZ"]
    store = str(project.root / "elsewhere")
    report = json.loads(expect(project.run(*ARGS, "--source-symbol", "XBTXYZ",
                                           "--store", store), 0).output)
    assert report["dataset_fingerprint"] == locked.dataset_fingerprint
    missing = project.run(*ARGS, "--store", store + "-2")  # XYZ.csv is not there
    assert missing.exit_code == 3 and "XYZ" in missing.output
    bad = project.run(*ARGS, "--source-symbol", "../x", "--store", store)
    assert bad.exit_code == 2 and "--source-symbol" in bad.output
