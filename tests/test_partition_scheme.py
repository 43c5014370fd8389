"""The partition scheme is recorded in the snapshot manifest where the engine cuts the windows,
and read back from there: never guessed from the windows' spans (a clipped year is not a month).

It is metadata outside the fingerprint (the windows themselves are hashed), checked against the
windows on read. Manifests from before it was recorded (``snapshot_version`` 1) stay readable;
their partitions are named by their exact windows.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import Project
from qmtl_engine.errors import ObjectCorrupted
from qmtl_engine.fingerprint import SnapshotHeader, dataset_fingerprint
from qmtl_engine.ranges import DAY_MS, to_ms
from qmtl_engine.store import Snapshot, SnapshotPartition, Store
from vendor_catalog import vendor_catalog

from qmtl_lock import Lock
from qmtl_lock.cli import cli
from qmtl_lock.lockfile import read_lock
from qmtl_lock.resolve import resolve
from qmtl_lock.verify import verify

CATALOG = vendor_catalog("year")

MANIFEST = """\
version: 1
presets: [vendor.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [XYZ]
    start: 2024-01-01
    end: 2024-01-15
    contract_version: v1
"""
CLIPPED_YEAR = "2024 [2024-01-01T00:00:00Z, 2024-01-15T00:00:00Z)"


def _write_csv(folder: Path, bump_day: str | None = None) -> None:
    lines = ["ts,open,high,low,close,volume"]
    day = dt.date(2024, 1, 1)
    for i in range(14):
        close = 100 + i + (1.0 if day.isoformat() == bump_day else 0.0)
        lines.append(f"{day.isoformat()},{100 + i},{close + 2},{99 + i},{close},{1000 + i}")
        day += dt.timedelta(days=1)
    (folder / "XYZ.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def fortnight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A year-partitioned daily preset whose coverage is only 14 days: one clipped year."""
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "vendor.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    _write_csv(tmp_path)
    resolve(tmp_path / "seamless.yaml")
    return tmp_path


def _snapshot_of(lock_path: Path, store: Path, dataset: str, symbol: str) -> tuple[Store, str]:
    fp = read_lock(lock_path).datasets[dataset].symbols[symbol].dataset_fingerprint
    return Store(str(store)), fp


def _flip_close(path: Path) -> None:
    table = pq.read_table(path)
    close = np.array(table["close"].to_numpy(), copy=True)
    close[3] = np.nextafter(close[3], np.inf)
    pq.write_table(table.set_column(table.column_names.index("close"), "close",
                                    pa.array(close)), path)


def test_a_clipped_year_is_named_as_a_year(fortnight: Path) -> None:
    store, fp = _snapshot_of(fortnight / "seamless.lock", fortnight / ".seamless" / "store",
                             "daily", "XYZ")
    snap = store.get_snapshot(fp)
    assert snap.partition == "year"
    [part] = snap.partitions
    assert part.end - part.start == 14 * DAY_MS  # a span a guess would call a month
    assert snap.partition_name(part) == CLIPPED_YEAR

    _flip_close(Path(store.object_path(part.digest)))
    [problem] = verify(fortnight / "seamless.yaml").problems
    assert problem.partition == CLIPPED_YEAR
    with pytest.raises(ObjectCorrupted) as info:
        Lock.open(fortnight / "seamless.lock").load("daily", "XYZ")
    assert info.value.partition == CLIPPED_YEAR
    assert "2024-01 " not in str(info.value)


def test_restated_partitions_of_a_clipped_year_are_named_as_a_year(fortnight: Path) -> None:
    _write_csv(fortnight, bump_day="2024-01-09")  # the vendor corrects one bar
    result = CliRunner().invoke(cli, ["resolve", "--refresh", "-m",
                                      str(fortnight / "seamless.yaml")])
    assert result.exit_code == 0, result.output
    assert f"restated  daily/XYZ: the source now gives other data for partitions {CLIPPED_YEAR}" \
        in result.output


@pytest.mark.parametrize(("dataset", "symbol", "scheme"), [
    ("crypto", "BTCUSDT", "month"), ("equities", "AAPL", "year")])
def test_the_manifest_records_the_scheme_the_engine_cut(resolved: Project, dataset: str,
                                                        symbol: str, scheme: str) -> None:
    store, fp = _snapshot_of(resolved.lock, resolved.store, dataset, symbol)
    data = json.loads(Path(store.snapshot_path(fp)).read_text())
    assert (data["snapshot_version"], data["partition"]) == (2, scheme)
    assert "partition" not in data["header"]  # the hashed part stays as it was
    assert store.get_snapshot(fp).partition == scheme


def _fortnight_snapshot(scheme: Any) -> Snapshot:
    t0 = to_ms("2024-01-01")
    header = SnapshotHeader("ohlcv@v1", "p", "S", DAY_MS, t0, t0 + 14 * DAY_MS)
    parts = [SnapshotPartition(t0, t0 + 14 * DAY_MS, 14, "sha256:" + "ab" * 32)]
    fp = dataset_fingerprint(header, [p.ref() for p in parts]).value
    return Snapshot(fp, header, parts, partition=scheme)


def test_the_scheme_is_not_part_of_the_fingerprint() -> None:
    """Month and year cut 14 days of January alike: same windows, same fingerprint; only the
    recorded scheme (and so the partition's name) differs."""
    month, year = _fortnight_snapshot("month"), _fortnight_snapshot("year")
    assert month.fingerprint == year.fingerprint
    a, b = month.to_dict(), year.to_dict()
    assert (a.pop("partition"), b.pop("partition")) == ("month", "year")
    assert a == b
    assert month.partition_name(month.partitions[0]).startswith("2024-01 [")
    assert year.partition_name(year.partitions[0]).startswith("2024 [")


def test_the_scheme_is_checked_against_the_windows(resolved: Project) -> None:
    store, fp = _snapshot_of(resolved.lock, resolved.store, "crypto", "BTCUSDT")
    path = Path(store.snapshot_path(fp))
    data = json.loads(path.read_text())
    for wrong in ("day", "year"):  # month windows: [01-30, 02-01) and [02-01, 02-02)
        path.write_text(json.dumps({**data, "partition": wrong}))
        with pytest.raises(ObjectCorrupted) as info:
            store.get_snapshot(fp)
        assert info.value.actual == (f"<malformed: its partitions are not the {wrong} windows "
                                     "of its coverage>")


# -- manifests written before the scheme was recorded -------------------------------------------

def _as_version_1(store: Store, fp: str) -> dict[str, Any]:
    """Rewrite a manifest as qmtl-lock wrote it before version 2: no ``partition`` field."""
    path = Path(store.snapshot_path(fp))
    data = json.loads(path.read_text())
    del data["partition"]
    data["snapshot_version"] = 1
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def test_a_version_1_manifest_is_still_read(resolved: Project) -> None:
    before = Lock.open(resolved.lock).load("crypto", "BTCUSDT")
    store, fp = _snapshot_of(resolved.lock, resolved.store, "crypto", "BTCUSDT")
    old = _as_version_1(store, fp)
    snap = store.get_snapshot(fp)
    assert (snap.fingerprint, snap.partition) == (fp, None)
    assert snap.to_dict() == old  # written back as it was read, never upgraded by a guess
    assert Lock.open(resolved.lock).load("crypto", "BTCUSDT").equals(before)
    assert not verify(resolved.manifest).problems
    lock_bytes = resolved.lock.read_bytes()
    assert {c.action for c in resolve(resolved.manifest).changes} == {"unchanged"}
    assert resolved.lock.read_bytes() == lock_bytes


def test_a_version_1_partition_is_named_by_its_exact_window(resolved: Project) -> None:
    store, fp = _snapshot_of(resolved.lock, resolved.store, "crypto", "BTCUSDT")
    _as_version_1(store, fp)
    _flip_close(Path(store.object_path(store.get_snapshot(fp).partitions[0].digest)))
    exact = "[2024-01-30T00:00:00Z, 2024-02-01T00:00:00Z)"
    problems = [p for p in verify(resolved.manifest).problems if p.symbol == "BTCUSDT"]
    assert [p.partition for p in problems] == [exact]
    with pytest.raises(ObjectCorrupted) as info:
        Lock.open(resolved.lock).load("crypto", "BTCUSDT")
    assert info.value.partition == exact


@pytest.mark.parametrize("version", [0, 3, "2", True, None])
def test_other_manifest_versions_are_refused_by_name(resolved: Project, version: object) -> None:
    from qmtl_engine.errors import InputError

    store, fp = _snapshot_of(resolved.lock, resolved.store, "crypto", "BTCUSDT")
    path = Path(store.snapshot_path(fp))
    path.write_text(json.dumps({**json.loads(path.read_text()), "snapshot_version": version}))
    with pytest.raises(InputError) as info:
        store.get_snapshot(fp)
    assert info.value.what == (f"snapshot manifest has snapshot_version {version!r}; this "
                               "qmtl-lock reads version 1 or 2")
