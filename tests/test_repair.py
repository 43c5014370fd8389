"""``qmtl-lock repair``: what verify finds corrupted or missing is put back, fetching only that.

The store, the sources and the command line are real: a ``files`` source reading CSV files in the
temp project (so a test can make the source give other data by editing a CSV, or fail by removing
one) and the synthetic source of the shared fixture project. What a repair fetched is read from
its report, and cross-checked against the source: a partition whose CSV rows were changed would
rebuild another fingerprint if it had been fetched again.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import Project, expect
from qmtl_engine import ObjectMissing, Store
from vendor_catalog import vendor_catalog

from qmtl_lock.lockfile import read_lock
from qmtl_lock.repair import repair, repair_command

CATALOG = vendor_catalog("month")

# `again` asks for exactly what `daily` asks for XYZ, so the two share one snapshot and its objects.
MANIFEST = """\
version: 1
presets: [vendor.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [ABC, XYZ]
    start: 2024-01-01
    end: 2024-04-01
    contract_version: v1
  again:
    preset: ohlcv.vendor.crypto.1d
    symbols: [XYZ]
    start: 2024-01-01
    end: 2024-04-01
    contract_version: v1
"""

JAN, FEB, MAR = "2024-01", "2024-02", "2024-03"


def write_csv(root: Path, symbol: str, *, bump: tuple[str, ...] = ()) -> None:
    """Daily bars for January to March 2024; each month in ``bump`` gets other closes."""
    base = {"ABC": 50.0, "XYZ": 100.0}[symbol]
    lines = ["ts,open,high,low,close,volume"]
    day, i = dt.date(2024, 1, 1), 0
    while day < dt.date(2024, 4, 1):
        close = base + i * 0.5 + (0.25 if day.isoformat()[:7] in bump else 0.0)
        lines.append(f"{day},{base + i * 0.5},{close + 2},{base - 1 + i * 0.5},{close},"
                     f"{1000 + i}")
        day += dt.timedelta(days=1)
        i += 1
    (root / f"{symbol}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project on CSV files, resolved; the cwd is the project."""
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    root = tmp_path / "proj"
    root.mkdir()
    (root / "vendor.yaml").write_text(CATALOG, encoding="utf-8")
    (root / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    for symbol in ("ABC", "XYZ"):
        write_csv(root, symbol)
    monkeypatch.chdir(root)
    project = Project(root, CliRunner())
    expect(project.run("resolve"), 0)
    return project


def store(project: Project) -> Store:
    return Store(str(project.store))


def fingerprint(project: Project, symbol: str, dataset: str = "daily") -> str:
    return read_lock(project.lock).datasets[dataset].symbols[symbol].dataset_fingerprint


def manifest_file(project: Project, symbol: str) -> Path:
    return Path(store(project).snapshot_path(fingerprint(project, symbol)))


def object_file(project: Project, symbol: str, month: str) -> Path:
    snap = store(project).get_snapshot(fingerprint(project, symbol))
    [part] = [p for p in snap.partitions if snap.partition_name(p) == month]
    return Path(store(project).object_path(part.digest))


def flip_one_value(path: Path) -> None:
    """Rewrite an object with one close moved by one ulp, under its old name."""
    table = pq.read_table(path)
    close = table["close"].to_numpy().copy()
    close[3] = np.nextafter(close[3], np.inf)
    pq.write_table(table.set_column(table.column_names.index("close"), "close",
                                    pa.array(close)), path)


def repaired(project: Project, *args: str, code: int = 0) -> dict[tuple[str, str], Any]:
    """``qmtl-lock repair --json ARGS``: each symbol's report, by (dataset, symbol)."""
    data = json.loads(expect(project.run("repair", "--json", *args), code).output)
    assert data["ok"] is (code == 0)
    return {(r["dataset"], r["symbol"]): r for r in data["repairs"]}


def stored_files(project: Project) -> dict[str, bytes]:
    return {str(p.relative_to(project.store)): p.read_bytes()
            for p in sorted(project.store.rglob("*")) if p.is_file()}


# -- each kind of damage -------------------------------------------------------------------------
def test_a_corrupted_object_is_set_aside_and_only_its_partition_fetched(vendor: Project) -> None:
    lock_before = vendor.lock.read_bytes()
    feb = object_file(vendor, "ABC", FEB)
    flip_one_value(feb)
    corrupted = feb.read_bytes()
    # The source now gives other data for January and March: had repair fetched them again, the
    # rebuilt fingerprint would differ from the lock.
    write_csv(vendor.root, "ABC", bump=(JAN, MAR))
    reports = repaired(vendor)
    assert list(reports) == [("daily", "ABC")]
    report = reports["daily", "ABC"]
    assert (report["outcome"], report["fetched"], report["partitions"]) == ("repaired", [FEB], 3)
    [moved] = report["quarantined"]
    assert moved["from"] == str(feb)
    assert moved["to"] == str(vendor.store / "quarantine" / "20240601T000000Z" /
                              feb.relative_to(vendor.store))
    assert Path(moved["to"]).read_bytes() == corrupted  # kept as found, for a post-mortem
    store(vendor).check_object("sha256:" + feb.stem)  # the object is good again
    expect(vendor.run("verify"), 0)
    assert vendor.lock.read_bytes() == lock_before


def test_a_missing_object_is_fetched_alone(vendor: Project) -> None:
    mar = object_file(vendor, "ABC", MAR)
    mar.unlink()
    write_csv(vendor.root, "ABC", bump=(JAN, FEB))
    report = repaired(vendor)["daily", "ABC"]
    assert (report["outcome"], report["fetched"], report["quarantined"]) == ("repaired", [MAR], [])
    assert mar.exists()
    expect(vendor.run("verify"), 0)


def test_a_corrupted_manifest_is_set_aside_and_rebuilt(vendor: Project) -> None:
    path = manifest_file(vendor, "ABC")
    data = json.loads(path.read_text())
    data["partitions"][1]["rows"] += 1
    path.write_text(json.dumps(data))
    report = repaired(vendor)["daily", "ABC"]
    assert report["outcome"] == "repaired"
    assert report["fetched"] == [JAN, FEB, MAR]  # nothing else says which object is which month
    assert "every partition was fetched" in report["detail"]
    [moved] = report["quarantined"]
    assert moved["from"] == str(path)
    assert json.loads(Path(moved["to"]).read_text()) == data
    assert [p["stored"] for p in report["problems"]] == ["snapshot"]
    expect(vendor.run("verify"), 0)


def test_a_missing_manifest_is_rebuilt(vendor: Project) -> None:
    manifest_file(vendor, "ABC").unlink()
    report = repaired(vendor)["daily", "ABC"]
    assert (report["outcome"], report["fetched"], report["quarantined"]) == (
        "repaired", [JAN, FEB, MAR], [])
    assert [p["kind"] for p in report["problems"]] == ["snapshot-missing"]
    expect(vendor.run("verify"), 0)


def test_a_corrupted_object_behind_a_corrupted_manifest_is_found_and_fetched_again(
        vendor: Project) -> None:
    """verify cannot look at the objects of a manifest it cannot read; a partition written
    again proves what already holds its name, so an object that was already there, and
    corrupted, does not survive the repair (it is set aside, never deleted)."""
    feb = object_file(vendor, "ABC", FEB)
    flip_one_value(feb)
    manifest_file(vendor, "ABC").write_text("{ not json")
    report = repaired(vendor)["daily", "ABC"]
    assert report["outcome"] == "repaired"
    assert [Path(m["from"]).suffix for m in report["quarantined"]] == [".json"]
    assert report["fetched"] == [JAN, FEB, MAR]
    # writing February again found the corrupted file under its name and set it aside
    [aside] = (vendor.store / "quarantine").rglob("*.parquet")
    assert aside.name == feb.name and aside.read_bytes() != feb.read_bytes()
    expect(vendor.run("verify"), 0)


def test_an_object_two_datasets_share_is_moved_once_and_fetched_once(vendor: Project) -> None:
    assert fingerprint(vendor, "XYZ") == fingerprint(vendor, "XYZ", "again")
    feb = object_file(vendor, "XYZ", FEB)
    flip_one_value(feb)
    reports = repaired(vendor)
    assert list(reports) == [("again", "XYZ"), ("daily", "XYZ")]
    first, second = reports["again", "XYZ"], reports["daily", "XYZ"]
    assert (first["outcome"], first["fetched"]) == ("repaired", [FEB])
    assert (second["outcome"], second["fetched"]) == ("repaired", [])  # already put back
    assert first["quarantined"] == second["quarantined"]
    assert len(list((vendor.store / "quarantine").rglob("*.parquet"))) == 1
    expect(vendor.run("verify"), 0)


def test_a_manifest_whose_rows_contradict_its_objects_is_set_aside(vendor: Project) -> None:
    """A manifest that hashes to its name but gives a partition other rows than its object holds
    (the lock pinning it, too): the manifest is what cannot be trusted, and no source can give
    the data it describes, so the pin is not replaced."""
    from dataclasses import replace

    from qmtl_engine.fingerprint import dataset_fingerprint

    st = store(vendor)
    good = st.get_snapshot(fingerprint(vendor, "ABC"))
    parts = [replace(good.partitions[0], rows=good.partitions[0].rows + 1),
             *good.partitions[1:]]
    forged = dataset_fingerprint(good.header, [p.ref() for p in parts]).value
    st.put_snapshot(replace(good, fingerprint=forged, partitions=parts))
    vendor.edit_lock(fingerprint(vendor, "ABC"), forged)
    report = repaired(vendor, "daily", code=1)["daily", "ABC"]
    assert [(p["kind"], p["stored"], p["digest"]) for p in report["problems"]] == [
        ("fingerprint-mismatch", "snapshot", forged)]
    assert [m["from"] for m in report["quarantined"]] == [st.display(st.snapshot_path(forged))]
    assert report["outcome"] == "source-changed"
    assert f"fetched {good.fingerprint}" in report["detail"]  # what the source really gives


# -- what repair must not do ---------------------------------------------------------------------
def test_when_the_source_now_gives_other_data_nothing_is_replaced(vendor: Project) -> None:
    lock_before = vendor.lock.read_bytes()
    locked = fingerprint(vendor, "ABC")
    flip_one_value(object_file(vendor, "ABC", FEB))
    write_csv(vendor.root, "ABC", bump=(FEB,))  # the vendor restated February
    result = expect(vendor.run("repair"), 1)
    assert "daily/ABC: NOT repaired: the source now gives other data" in result.output
    assert f"the source no longer reproduces the locked data: locked {locked}" in result.output
    assert "the locked data was not replaced and seamless.lock is unchanged" in result.output
    assert "accept the new data with `qmtl-lock resolve --update daily`" in result.output
    assert "review the diff" in result.output
    assert vendor.lock.read_bytes() == lock_before
    assert store(vendor).has_snapshot(locked)  # the pin still names its own manifest
    assert "object-missing" in expect(vendor.run("verify", "--json"), 1).output
    # Following the fix: the new data is pinned and the restatement is named.
    updated = expect(vendor.run("resolve", "--update", "daily"), 0)
    assert "daily/ABC: the source now gives other data for partitions 2024-02" in updated.output
    assert fingerprint(vendor, "ABC") != locked
    expect(vendor.run("verify"), 0)


def test_a_failing_source_exits_3_and_running_again_finishes(vendor: Project) -> None:
    feb = object_file(vendor, "ABC", FEB)
    flip_one_value(feb)
    (vendor.root / "ABC.csv").unlink()
    result = expect(vendor.run("repair"), 3)
    assert "daily/ABC: NOT repaired: materialization failed" in result.output
    assert "to fetch:    2024-02 (1 of 3 partitions; stopped by the error below)" in result.output
    assert "source files" in result.output
    assert not feb.exists()  # set aside all the same: it is corrupted
    write_csv(vendor.root, "ABC")
    report = repaired(vendor)["daily", "ABC"]
    assert (report["outcome"], report["fetched"]) == ("repaired", [FEB])
    expect(vendor.run("verify"), 0)


def test_a_dry_run_moves_and_fetches_nothing_and_foretells_the_repair(vendor: Project) -> None:
    flip_one_value(object_file(vendor, "ABC", FEB))
    object_file(vendor, "ABC", MAR).unlink()
    before = stored_files(vendor)
    planned = repaired(vendor, "--dry-run")["daily", "ABC"]
    assert planned["outcome"] == "would-repair"
    assert planned["fetched"] == [FEB, MAR]
    assert [m["to"] for m in planned["quarantined"]] == [None]
    assert stored_files(vendor) == before
    text = expect(vendor.run("repair", "--dry-run"), 0).output
    assert "to fetch:    2024-02, 2024-03 (2 of 3 partitions)" in text
    assert "nothing was moved aside or fetched" in text
    done = repaired(vendor)["daily", "ABC"]
    assert (done["outcome"], done["fetched"]) == ("repaired", planned["fetched"])
    assert [m["from"] for m in done["quarantined"]] == [m["from"] for m in planned["quarantined"]]


def test_a_hand_edited_lock_is_not_repaired(vendor: Project) -> None:
    rows = read_lock(vendor.lock).datasets["again"].symbols["XYZ"].rows
    vendor.edit_lock(f"rows: {rows}", f"rows: {rows + 1}")  # the first entry: again/XYZ
    before = stored_files(vendor)
    result = expect(vendor.run("repair"), 1)
    assert "again/XYZ: NOT repaired\n" in result.output
    assert "daily" not in result.output
    assert "the lock entry does not describe its snapshot" in result.output
    assert "fix:         restore seamless.lock from git" in result.output
    assert stored_files(vendor) == before


def test_a_changed_preset_is_not_rebuilt_from(vendor: Project) -> None:
    """Rebuilding from another preset definition would not give the locked data: repair says
    that is the manifest's doing, and does not blame the source."""
    flip_one_value(object_file(vendor, "ABC", FEB))
    catalog = vendor.root / "vendor.yaml"
    catalog.write_text(catalog.read_text().replace("sla_preset: baseline",
                                                   "sla_preset: tolerant-partial"))
    before = stored_files(vendor)
    report = repaired(vendor, "daily", code=1)["daily", "ABC"]
    assert report["outcome"] == "not-repairable"
    assert "seamless.yaml changed since the lock was written (preset definition)" in \
        report["detail"]
    assert "`qmtl-lock repair daily`" in report["fix"]
    assert stored_files(vendor) == before


def test_only_the_datasets_asked_for_are_repaired(vendor: Project) -> None:
    abc = object_file(vendor, "ABC", FEB)
    flip_one_value(abc)
    result = expect(vendor.run("repair", "again"), 0)
    assert result.output.strip() == "verified 1 snapshot(s): nothing to repair"
    assert abc.exists()
    expect(vendor.run("verify", "daily"), 1)


def test_nothing_to_repair(vendor: Project) -> None:
    before = stored_files(vendor)
    result = expect(vendor.run("repair"), 0)
    assert result.output.strip() == "verified 3 snapshot(s): nothing to repair"
    assert stored_files(vendor) == before


def test_an_unknown_dataset_is_bad_input(vendor: Project) -> None:
    result = expect(vendor.run("repair", "nope"), 2)
    assert "dataset 'nope' is not in the lock" in result.output


def test_the_verb_reports_per_symbol_without_the_command_line(vendor: Project) -> None:
    object_file(vendor, "XYZ", JAN).unlink()
    result = repair(vendor.manifest, datasets=["daily"])
    assert [(r.dataset, r.symbol, r.outcome, r.fetched) for r in result.repairs] == [
        ("daily", "XYZ", "repaired", [JAN])]
    assert result.count("repaired") == 1 and result.checked == 2


# -- verify names the repair, and the repair it names works -----------------------------------
def _named_repair(output: str) -> list[str]:
    [command] = re.findall(r"fix: run `(qmtl-lock repair[^`]*)`", output)
    words = shlex.split(command)
    assert words[:2] == ["qmtl-lock", "repair"]
    return words[2:]


def test_verify_names_the_repair_and_running_it_repairs(resolved: Project) -> None:
    """Synthetic and embedded sources, two datasets: follow verify's advice word for word."""
    lock_before = resolved.lock.read_bytes()
    st = Store(str(resolved.store))
    btc = st.get_snapshot(fingerprint(resolved, "BTCUSDT", "crypto"))
    flip_one_value(Path(st.object_path(btc.partitions[0].digest)))
    msft = st.get_snapshot(fingerprint(resolved, "MSFT", "equities"))
    Path(st.object_path(msft.partitions[1].digest)).unlink()
    failed = expect(resolved.run("verify"), 1)
    args = _named_repair(failed.output)
    assert args == ["crypto", "equities"]
    assert "qmtl-lock resolve" not in failed.output  # the advice that repaired nothing is gone
    fixed = expect(resolved.run("repair", *args), 0)
    assert "crypto/BTCUSDT: repaired" in fixed.output
    assert ("  fetched:     2024-01 [2024-01-30T00:00:00Z, 2024-02-01T00:00:00Z) "
            "(1 of 2 partitions)") in fixed.output
    assert "equities/MSFT: repaired" in fixed.output
    assert "  fetched:     2012 (1 of 2 partitions)" in fixed.output
    assert "ETHUSDT" not in fixed.output and "AAPL" not in fixed.output
    assert "repaired 2 snapshot(s): `qmtl-lock verify` passes for them" in fixed.output
    expect(resolved.run("verify"), 0)
    assert resolved.lock.read_bytes() == lock_before


def test_verify_names_the_manifest_it_was_given(resolved: Project,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    st = Store(str(resolved.store))
    Path(st.snapshot_path(fingerprint(resolved, "ETHUSDT", "crypto"))).unlink()
    monkeypatch.chdir(resolved.root.parent)
    failed = expect(resolved.run("verify", "-m", "proj/seamless.yaml"), 1)
    args = _named_repair(failed.output)
    assert args == ["--manifest", "proj/seamless.yaml", "crypto"]
    data = json.loads(expect(resolved.run("verify", "-m", "proj/seamless.yaml", "--json"),
                             1).output)
    assert f"`{shlex.join(['qmtl-lock', 'repair', *args])}`" in data["fix"][0]
    expect(resolved.run("repair", *args), 0)
    expect(resolved.run("verify", "-m", "proj/seamless.yaml"), 0)


def test_repair_command_quotes_what_a_shell_would_split() -> None:
    assert repair_command() == "qmtl-lock repair"
    assert repair_command(["b", "a", "b"], "my data/seamless.yaml") == \
        "qmtl-lock repair --manifest 'my data/seamless.yaml' a b"


# -- the store's quarantine ----------------------------------------------------------------------
@pytest.mark.parametrize("url", ["memory://repair-quarantine", "file"])
def test_quarantine_moves_a_file_under_its_own_path(url: str, tmp_path: Path) -> None:
    from qmtl_engine.fingerprint import partition_digest

    st = Store(str(tmp_path / "store") if url == "file" else url)
    table = pa.table({"ts": pa.array([0], pa.timestamp("ms", tz="UTC")),
                      **{c: pa.array([1.0]) for c in ("open", "high", "low", "close", "volume")}})
    digest = st.put_object(table).value
    hexd = partition_digest(table).hex
    at = 1_717_200_000_000  # 2024-06-01T00:00:00Z
    moved = st.quarantine(digest, kind="object", at_ms=at)
    assert moved.endswith(f"/quarantine/20240601T000000Z/objects/{hexd[:2]}/{hexd}.parquet")
    assert not st.has_object(digest)
    assert digest not in st.inventory().objects and digest not in set(st.iter_objects())
    st.put_object(table)
    again = st.quarantine(digest, kind="object", at_ms=at)  # same second, same path: no clash
    assert again.endswith(f"/quarantine/20240601T000000Z-2/objects/{hexd[:2]}/{hexd}.parquet")
    with pytest.raises(ObjectMissing) as info:
        st.quarantine(digest, kind="object", at_ms=at)
    assert "no object" in info.value.what
    if url.startswith("memory"):
        st.fs.rm(st.root, recursive=True)
