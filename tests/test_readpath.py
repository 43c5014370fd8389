"""The strategy read path (engine/read.py): ``Lock.load`` and ``verify`` run the same checks.

Every way the store can differ from the lock is found by both, as the same error class, naming
the dataset, symbol and partition; a rewrite that only changes the Parquet encoding is accepted
by both, because an object's name is the digest of its content, not of its bytes (DESIGN §6).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CRYPTO_ROWS, Project
from qmtl_engine.errors import FingerprintMismatch, IntegrityError, ObjectCorrupted, ObjectMissing
from qmtl_engine.fingerprint import SnapshotHeader, dataset_fingerprint, partition_digest
from qmtl_engine.ranges import DAY_MS, MINUTE_MS, to_ms
from qmtl_engine.read import PinnedReader, check_partition, pin_mismatch
from qmtl_engine.store import Snapshot, SnapshotPartition, Store

from qmtl_lock import Lock
from qmtl_lock.lockfile import read_lock
from qmtl_lock.verify import verify

DATASET, SYMBOL = "crypto", "BTCUSDT"
WINDOW_JAN = "2024-01 [2024-01-30T00:00:00Z, 2024-02-01T00:00:00Z)"
_KIND = {ObjectCorrupted: "object-corrupted", ObjectMissing: "object-missing",
         FingerprintMismatch: "fingerprint-mismatch"}


def _store(project: Project) -> Store:
    return Store(str(project.store))


def _fingerprint(project: Project, symbol: str = SYMBOL) -> str:
    return read_lock(project.lock).datasets[DATASET].symbols[symbol].dataset_fingerprint


def _first_object(project: Project) -> Path:
    store = _store(project)
    return Path(store.object_path(store.get_snapshot(_fingerprint(project)).partitions[0].digest))


def _manifest(project: Project) -> Path:
    return Path(_store(project).snapshot_path(_fingerprint(project)))


def _rewrite(path: Path, change: Callable[[pa.Table], pa.Table], **options: Any) -> None:
    pq.write_table(change(pq.read_table(path)), path, **options)


def _edit_manifest(project: Project, edit: Callable[[dict[str, Any]], object]) -> None:
    path = _manifest(project)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _flip(table: pa.Table) -> pa.Table:
    close = np.array(table["close"].to_numpy(), copy=True)
    close[5] = np.nextafter(close[5], np.inf)  # one ulp
    return table.set_column(table.column_names.index("close"), "close", pa.array(close))


OBJECT_TAMPERING: dict[str, Callable[[Path], None]] = {
    "string ts column": lambda p: _rewrite(
        p, lambda t: t.set_column(0, "ts", t["ts"].cast(pa.string()))),
    "one flipped value": lambda p: _rewrite(p, _flip),
    "dropped row": lambda p: _rewrite(p, lambda t: t.slice(1)),
    "extra column": lambda p: _rewrite(
        p, lambda t: t.append_column("trades", pa.array(np.ones(t.num_rows)))),
    "renamed column": lambda p: _rewrite(
        p, lambda t: t.rename_columns([*t.column_names[:4], "Close", *t.column_names[5:]])),
    "truncated file": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "non-Parquet bytes": lambda p: p.write_bytes(b"PAR1 these are not Parquet bytes PAR1"),
    "deleted object": lambda p: p.unlink(),
    "one ts moved by a millisecond": lambda p: _rewrite(p, _nudge_ts),
    "a NaN close": lambda p: _rewrite(p, lambda t: _set(t, "close", 3, float("nan"))),
    "a null volume": lambda p: _rewrite(p, lambda t: _set(t, "volume", 3, None)),
    "volume as float32": lambda p: _rewrite(p, lambda t: t.set_column(
        5, "volume", t["volume"].cast(pa.float32()))),
    # (ts cast to seconds is not here: Parquet stores it in milliseconds again, the same data)
    "high below low in a row": lambda p: _rewrite(p, lambda t: _set(t, "high", 4, 0.5)),
    "ts without its time zone": lambda p: _rewrite(p, lambda t: t.set_column(
        0, "ts", t["ts"].cast(pa.timestamp("ms")))),
    "a duplicated row": lambda p: _rewrite(p, lambda t: pa.concat_tables([t, t.slice(0, 1)])),
    "open and close swapped in a row": lambda p: _rewrite(p, _swap_open_close),
    "no rows left": lambda p: _rewrite(p, lambda t: t.slice(0, 0)),
    "zero-byte file": lambda p: p.write_bytes(b""),
    "another partition's object": lambda p: p.write_bytes(_other_object(p)),
}


def _set(table: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    i = table.column_names.index(column)
    return table.set_column(i, column, pa.array(values, type=table[column].type))


def _nudge_ts(table: pa.Table) -> pa.Table:
    ts = np.array(table["ts"].cast(pa.int64()).to_numpy(), copy=True)
    ts[7] += 1
    return table.set_column(0, "ts", pa.array(ts).cast(pa.timestamp("ms", tz="UTC")))


def _swap_open_close(table: pa.Table) -> pa.Table:
    opened, closed = table["open"].to_pylist(), table["close"].to_pylist()
    opened[2], closed[2] = closed[2], opened[2] + 1.0  # surely another value
    return table.set_column(1, "open", pa.array(opened)).set_column(4, "close", pa.array(closed))


def _other_object(path: Path) -> bytes:
    """The bytes of another object of the store (another partition's data)."""
    objects = sorted(p for p in path.parents[1].rglob("*.parquet") if p != path)
    return objects[0].read_bytes()


def _both(project: Project) -> tuple[list[IntegrityError], list[Any], IntegrityError]:
    """What the engine's verify, ``qmtl-lock verify`` and ``Lock.load`` make of the store."""
    lock = Lock.open(project.lock)
    engine = lock.engine.verify(_fingerprint(project), dataset=DATASET, symbol=SYMBOL)
    surface = [p for p in verify(project.manifest).problems if p.symbol == SYMBOL]
    with pytest.raises(IntegrityError) as info:
        lock.load(DATASET, SYMBOL)
    lock.load(DATASET, "ETHUSDT")  # other data stays loadable
    return [e for e in engine.problems if isinstance(e, IntegrityError)], surface, info.value


@pytest.mark.parametrize("tamper", list(OBJECT_TAMPERING))
def test_object_tampering_is_found_alike_by_verify_and_load(resolved: Project,
                                                            tamper: str) -> None:
    OBJECT_TAMPERING[tamper](_first_object(resolved))
    engine, surface, loaded = _both(resolved)
    expected = ObjectMissing if tamper == "deleted object" else ObjectCorrupted
    assert type(loaded) is expected  # never a bare TypeError, never another class
    assert [type(e) for e in engine] == [expected]
    [problem] = surface
    assert (problem.dataset, problem.symbol, problem.partition) == (DATASET, SYMBOL, WINDOW_JAN)
    assert problem.kind == _KIND[expected]
    assert problem.detail.startswith(engine[0].what)
    for exc in (loaded, engine[0]):
        assert (exc.dataset, exc.symbol) == (DATASET, SYMBOL)
        assert getattr(exc, "partition", None) == WINDOW_JAN
        assert f"{DATASET}/{SYMBOL}" in str(exc) and WINDOW_JAN in str(exc)
        assert "qmtl-lock repair" in str(exc)  # the command that repairs it (issue 9)
    if expected is ObjectCorrupted:
        assert isinstance(loaded, FingerprintMismatch)
        assert str(loaded).startswith("fingerprint mismatch: store object is corrupted: ")


MANIFEST_TAMPERING: dict[str, Callable[[dict[str, Any]], object]] = {
    "partition rows": lambda d: d["partitions"][0].update(rows=d["partitions"][0]["rows"] - 1),
    "partition digest": lambda d: d["partitions"][0].update(digest=d["partitions"][1]["digest"]),
    "partition window": lambda d: d["partitions"][0].update(start=d["partitions"][0]["start"]
                                                            + MINUTE_MS),
    "dropped partition": lambda d: d["partitions"].pop(),
    "coverage": lambda d: d["header"].update(coverage=[d["header"]["coverage"][0],
                                                       d["header"]["coverage"][1] - DAY_MS]),
    "symbol": lambda d: d["header"].update(symbol="ETHUSDT"),
    "preset": lambda d: d["header"].update(preset="ohlcv.binance.spot.1m"),
    "contract": lambda d: d["header"].update(contract="ohlcv@v2"),
    "fingerprint field": lambda d: d.update(fingerprint="sha256:" + "1" * 64),
    "scheme against its windows": lambda d: d.update(partition="day"),
    "unknown scheme": lambda d: d.update(partition="week"),
    "no scheme in version 2": lambda d: d.pop("partition"),
}


@pytest.mark.parametrize("tamper", list(MANIFEST_TAMPERING))
def test_manifest_tampering_is_found_alike_by_verify_and_load(resolved: Project,
                                                              tamper: str) -> None:
    _edit_manifest(resolved, MANIFEST_TAMPERING[tamper])
    engine, surface, loaded = _both(resolved)
    assert type(loaded) is ObjectCorrupted
    assert [type(e) for e in engine] == [ObjectCorrupted]
    [problem] = surface
    assert (problem.dataset, problem.symbol, problem.partition) == (DATASET, SYMBOL, None)
    assert problem.kind == "object-corrupted"
    for exc in (loaded, engine[0]):
        assert isinstance(exc, ObjectCorrupted) and exc.kind == "snapshot"
        assert (exc.dataset, exc.symbol, exc.partition) == (DATASET, SYMBOL, None)
        assert exc.expected == _fingerprint(resolved)
        assert f"{DATASET}/{SYMBOL}" in str(exc) and "snapshot manifest is corrupted" in str(exc)


def test_deleted_manifest_is_missing_for_both(resolved: Project) -> None:
    _manifest(resolved).unlink()
    engine, surface, loaded = _both(resolved)
    assert type(loaded) is ObjectMissing and [type(e) for e in engine] == [ObjectMissing]
    assert [p.kind for p in surface] == ["snapshot-missing"]
    assert (loaded.dataset, loaded.symbol) == (DATASET, SYMBOL)
    assert str(loaded).splitlines()[1].startswith(f"  where: {DATASET}/{SYMBOL}, ")


ENCODINGS = [
    {"compression": "zstd"},
    {"compression": "none", "use_dictionary": True},
    {"row_group_size": 7, "compression": "gzip"},
    {"use_dictionary": True, "data_page_size": 512, "write_statistics": False},
]


@pytest.mark.parametrize("options", ENCODINGS, ids=lambda o: ",".join(f"{k}={v}"
                                                                      for k, v in o.items()))
def test_an_encoding_only_rewrite_is_accepted_by_both(resolved: Project,
                                                       options: dict[str, Any]) -> None:
    lock = Lock.open(resolved.lock)
    before = lock.load(DATASET, SYMBOL)
    path = _first_object(resolved)
    raw = path.read_bytes()
    _rewrite(path, lambda t: t, **options)
    assert path.read_bytes() != raw  # really other bytes
    assert not verify(resolved.manifest).problems
    after = Lock.open(resolved.lock).load(DATASET, SYMBOL)
    assert after.num_rows == CRYPTO_ROWS and after.equals(before)


# -- the lock entry against its snapshot ------------------------------------------------------

def _snapshot(project: Project) -> Snapshot:
    return _store(project).get_snapshot(_fingerprint(project))


def _pin(project: Project) -> dict[str, Any]:
    lock = read_lock(project.lock)
    entry = lock.datasets[DATASET].symbols[SYMBOL]
    return {"symbol": SYMBOL, "preset": lock.datasets[DATASET].request["preset"],
            "coverage": entry.coverage_bounds, "rows": entry.rows,
            "partitions": entry.partitions}


PIN_CHANGES = {
    "coverage_bounds": {"coverage": (to_ms("2024-01-30"), to_ms("2024-02-03"))},
    "rows": {"rows": CRYPTO_ROWS + 1},
    "partitions": {"partitions": 3},
    "symbol": {"symbol": "ETHUSDT"},
    "preset": {"preset": "ohlcv.binance.spot.1m"},
}


def test_pin_mismatch_is_empty_for_the_pin_the_resolve_wrote(resolved: Project) -> None:
    assert pin_mismatch(_snapshot(resolved), **_pin(resolved)) == []


@pytest.mark.parametrize("field", list(PIN_CHANGES))
def test_pin_mismatch_names_each_field(resolved: Project, field: str) -> None:
    assert pin_mismatch(_snapshot(resolved), **{**_pin(resolved), **PIN_CHANGES[field]}) == [
        field]


def test_pin_mismatch_names_every_field_that_differs(resolved: Project) -> None:
    changed = {k: v for change in PIN_CHANGES.values() for k, v in change.items()}
    assert pin_mismatch(_snapshot(resolved), **{**_pin(resolved), **changed}) == list(
        PIN_CHANGES)


def _swap_fingerprints(project: Project) -> None:
    btc, eth = _fingerprint(project), _fingerprint(project, "ETHUSDT")
    text = project.lock.read_text()
    project.lock.write_text(text.replace(btc, "@").replace(eth, btc).replace("@", eth))


LOCK_EDITS: dict[str, Callable[[Project], None]] = {
    "coverage_bounds": lambda p: p.edit_lock(
        "coverage_bounds: [2024-01-30T00:00:00Z, 2024-02-02T00:00:00Z]",
        "coverage_bounds: [2024-01-30T00:00:00Z, 2024-02-03T00:00:00Z]"),
    "rows": lambda p: p.edit_lock(f"rows: {CRYPTO_ROWS}", f"rows: {CRYPTO_ROWS + 1}"),
    "partitions": lambda p: p.edit_lock("partitions: 2", "partitions: 3"),
    "symbol": _swap_fingerprints,
    "preset": lambda p: p.edit_lock("preset: ohlcv.synthetic.crypto.1m",
                                    "preset: ohlcv.binance.spot.1m"),
}


@pytest.mark.parametrize("field", list(LOCK_EDITS))
def test_a_hand_edited_lock_entry_is_refused_alike_by_verify_and_load(resolved: Project,
                                                                      field: str) -> None:
    LOCK_EDITS[field](resolved)
    problems = [p for p in verify(resolved.manifest).problems if p.symbol == SYMBOL]
    assert [(p.kind, p.detail) for p in problems] == [
        ("lock-mismatch", f"the lock's {field} differ from the pinned snapshot "
                          "(was the lock edited by hand?)")]
    with pytest.raises(FingerprintMismatch) as info:
        Lock.open(resolved.lock).load(DATASET, SYMBOL)
    exc = info.value
    assert type(exc) is FingerprintMismatch
    assert (exc.dataset, exc.symbol, exc.partition) == (DATASET, SYMBOL, "snapshot manifest")
    assert exc.actual == f"(a snapshot whose {field} differ from the lock entry)"


# -- the read path's own guards ---------------------------------------------------------------

def test_a_snapshot_of_another_fingerprint_is_refused_not_asserted(resolved: Project) -> None:
    reader = PinnedReader(_store(resolved))
    other = reader.snapshot(_fingerprint(resolved, "ETHUSDT"))
    with pytest.raises(FingerprintMismatch) as info:
        reader.load(_fingerprint(resolved), dataset=DATASET, symbol=SYMBOL, snapshot=other)
    assert (info.value.expected, info.value.actual) == (_fingerprint(resolved), other.fingerprint)
    assert info.value.partition == "snapshot manifest"


def test_check_partition_refuses_rows_the_manifest_does_not_state(tmp_path: Path) -> None:
    """A manifest that hashes to its name but states other rows than its object holds."""
    store = Store(str(tmp_path / "store"))
    t0 = to_ms("2024-01-01")
    table = pa.table({"ts": pa.array(np.arange(3, dtype=np.int64) * MINUTE_MS + t0)
                      .cast(pa.timestamp("ms", tz="UTC")),
                      **{c: pa.array(np.ones(3)) for c in ("open", "high", "low", "close",
                                                           "volume")}})
    digest = store.put_object(table).value
    header = SnapshotHeader("ohlcv@v1", "p", "S", MINUTE_MS, t0, t0 + DAY_MS)
    part = SnapshotPartition(t0, t0 + DAY_MS, 4, digest)
    fp = dataset_fingerprint(header, [part.ref()]).value
    snap = Snapshot(fp, header, [part], partition="day")
    store.put_snapshot(snap)
    with pytest.raises(FingerprintMismatch) as info:
        check_partition(store, store.get_snapshot(fp), part, dataset="d", symbol="S")
    assert info.value.actual == "<3 rows where the snapshot manifest says 4>"
    assert (info.value.dataset, info.value.symbol, info.value.partition) == ("d", "S",
                                                                             "2024-01-01")
    assert [type(e) for e in PinnedReader(store).verify(fp).problems] == [FingerprintMismatch]


@pytest.mark.parametrize("typ", [pa.int8(), pa.int32(), pa.uint64(), pa.float32(),
                                 pa.float64(), pa.timestamp("ms", tz="UTC")])
def test_digest_reads_buffers_at_their_offset(typ: pa.DataType) -> None:
    """Hashing reads column buffers directly (no pandas): slices with nulls hash as copies."""
    values = pa.array(list(range(40)), type=pa.int64(), mask=np.arange(40) % 7 == 3).cast(typ)
    table = pa.table({"x": values})
    for start, length in [(0, 40), (3, 20), (9, 1), (13, 0), (33, 7)]:
        piece = table.slice(start, length)
        copy = pa.Table.from_pylist(piece.to_pylist(), schema=piece.schema)
        assert piece["x"].chunk(0).offset == start or length == 0
        assert partition_digest(piece) == partition_digest(copy)


def test_a_load_decodes_into_the_system_pool_and_puts_the_default_pool_back(
        resolved: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """mimalloc keeps the freed buffers of every decoded partition (596 MB peak for a 252 MB
    table of ten years, against 370 MB): a load reads into the system allocator, and leaves the
    process's default pool as it found it."""
    from qmtl_engine.read import reading_pool

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.chdir(resolved.root)
    start = pa.default_memory_pool()
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    try:
        with reading_pool():
            inside = pa.default_memory_pool().backend_name
        table = Lock.open("seamless.lock").load("crypto", "BTCUSDT")
        assert pa.default_memory_pool().backend_name == "mimalloc"  # put back
        assert inside == "system"
        assert table.num_rows > 0 and table.validate(full=True) is None
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")  # the user's choice holds
        with reading_pool():
            assert pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(start)
