"""The content-addressed store (DESIGN §6), run alike on ``memory://`` and ``file://``."""

from __future__ import annotations

import base64
import json
import posixpath
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qmtl_engine.errors import InputError, ObjectCorrupted, ObjectMissing
from qmtl_engine.fingerprint import (
    Fingerprint,
    SnapshotHeader,
    dataset_fingerprint,
    partition_digest,
)
from qmtl_engine.ranges import DAY_MS, MINUTE_MS, to_ms
from qmtl_engine.store import Snapshot, SnapshotPartition, Store

TS = pa.timestamp("ms", tz="UTC")
T0 = to_ms("2024-01-01")
OHLCV = ("open", "high", "low", "close", "volume")


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        s = Store(f"memory://t-{uuid.uuid4().hex}")
        yield s
        if s.fs.exists(s.root):
            s.fs.rm(s.root, recursive=True)
    else:
        yield Store(f"file://{tmp_path / 'store'}")


def bars(start: int, rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = start + np.arange(rows, dtype=np.int64) * MINUTE_MS
    cols = {"ts": pa.array(ts).cast(TS)}
    cols.update({n: pa.array(rng.normal(100, 3, rows)) for n in OHLCV})
    return pa.table(cols)


def every_file(store: Store) -> list[str]:
    return sorted(store.fs.find(store.root)) if store.fs.exists(store.root) else []


def rewrite_object(store: Store, digest: str, table: pa.Table) -> None:
    """Replace an object's bytes in place, bypassing the store (what bit rot or a user does)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.fs.pipe_file(store.object_path(digest), sink.getvalue().to_pybytes())


def make_snapshot(store: Store, tables: list[pa.Table], symbol: str = "BTC/USDT") -> Snapshot:
    parts = []
    for i, table in enumerate(tables):
        digest = store.put_object(table)
        start = T0 + i * DAY_MS
        parts.append(SnapshotPartition(start, start + DAY_MS, table.num_rows, digest.value,
                                       {"gap_bars": i}))
    header = SnapshotHeader("ohlcv@v1", "ohlcv.binance.spot.1m", symbol, MINUTE_MS,
                            T0, T0 + len(tables) * DAY_MS)
    fp = dataset_fingerprint(header, [p.ref() for p in parts])
    return Snapshot(fp.value, header, parts, partition="day")


# -- objects ----------------------------------------------------------------------------------

def test_put_and_read_object(store: Store) -> None:
    table = bars(T0, 50)
    digest = store.put_object(table)
    assert digest == partition_digest(table)
    assert store.has_object(digest.value)
    back = store.read_object(digest.value)
    assert back.equals(table)
    assert back.schema.field("ts").type == TS
    assert store.check_object(digest.value).equals(table)


def test_object_layout_is_sharded_by_digest(store: Store) -> None:
    digest = store.put_object(bars(T0, 5)).value
    hexd = digest.removeprefix("sha256:")
    assert store.object_path(digest) == posixpath.join(store.root, "objects", hexd[:2],
                                                       f"{hexd}.parquet")
    assert every_file(store) == [store.object_path(digest)]


def test_objects_are_written_without_dictionary_encoding(store: Store) -> None:
    digest = store.put_object(bars(T0, 200)).value
    with store.fs.open(store.object_path(digest), "rb") as f:
        meta = pq.ParquetFile(f).metadata
    for rg in range(meta.num_row_groups):
        for col in range(meta.num_columns):
            encodings = meta.row_group(rg).column(col).encodings
            assert not any("DICTIONARY" in e for e in encodings), encodings


def test_identical_content_lands_on_the_same_name(store: Store) -> None:
    table = bars(T0, 30)
    first = store.put_object(table)
    before = every_file(store)
    bytes_before = store.fs.cat_file(store.object_path(first.value))
    rechunked = pa.concat_tables([table.slice(0, 10), table.slice(10)])
    again = Store(store.url).put_object(rechunked)  # another process, another chunking
    assert again == first
    assert every_file(store) == before
    assert store.fs.cat_file(store.object_path(first.value)) == bytes_before
    assert list(store.iter_objects()) == [first.value]


def test_put_object_trusts_a_given_digest(store: Store) -> None:
    table = bars(T0, 3)
    d = partition_digest(table)
    assert store.put_object(table, d) == d
    assert store.has_object(d.value)


def test_missing_object(store: Store) -> None:
    absent = "sha256:" + "ab" * 32
    assert not store.has_object(absent)
    with pytest.raises(ObjectMissing) as err:
        store.read_object(absent, partition="2024-01")
    assert err.value.partition == "2024-01"
    assert "ab" * 32 in err.value.path


def test_check_object_detects_a_changed_value(store: Store) -> None:
    table = bars(T0, 40)
    digest = store.put_object(table).value
    close = table["close"].to_numpy().copy()
    close[17] = np.nextafter(close[17], np.inf)  # one ulp
    changed = table.set_column(table.column_names.index("close"), "close", pa.array(close))
    rewrite_object(store, digest, changed)
    assert store.read_object(digest).equals(changed)  # still readable Parquet
    with pytest.raises(ObjectCorrupted) as err:
        store.check_object(digest, partition="2024-01-01")
    assert err.value.expected == digest
    assert err.value.actual == partition_digest(changed).value
    assert err.value.partition == "2024-01-01"


def test_check_object_accepts_a_re_encoded_object(store: Store) -> None:
    """The name is the digest of the content, not of the Parquet bytes."""
    table = bars(T0, 40)
    digest = store.put_object(table).value
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True, row_group_size=7)
    store.fs.pipe_file(store.object_path(digest), sink.getvalue().to_pybytes())
    assert store.check_object(digest).equals(table)


def test_check_object_detects_a_swapped_object(store: Store) -> None:
    a = store.put_object(bars(T0, 20, seed=1)).value
    b = store.put_object(bars(T0, 20, seed=2)).value
    assert a != b
    store.fs.pipe_file(store.object_path(a), store.fs.cat_file(store.object_path(b)))
    with pytest.raises(ObjectCorrupted) as err:
        store.check_object(a)
    assert (err.value.expected, err.value.actual) == (a, b)
    store.check_object(b)


def test_unreadable_object_is_reported_as_corrupted(store: Store) -> None:
    digest = store.put_object(bars(T0, 20)).value
    store.fs.pipe_file(store.object_path(digest), b"PAR1 this is not parquet PAR1")
    with pytest.raises(ObjectCorrupted, match="unreadable Parquet"):
        store.check_object(digest)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_object_is_reported_as_corrupted(store: Store, keep: float) -> None:
    digest = store.put_object(bars(T0, 20)).value
    path = store.object_path(digest)
    raw = store.fs.cat_file(path)
    store.fs.pipe_file(path, raw[: int(len(raw) * keep)])
    for read in (store.read_object, store.check_object):
        with pytest.raises(ObjectCorrupted) as err:
            read(digest, partition="2024-01-01")
        assert err.value.kind == "object"
        assert (err.value.expected, err.value.partition) == (digest, "2024-01-01")
        assert err.value.actual.startswith("<unreadable Parquet: ")


def test_object_that_is_not_canonical_data_is_reported_as_corrupted(store: Store) -> None:
    """Readable Parquet whose columns have no canonical byte form (here a text column)."""
    digest = store.put_object(bars(T0, 5)).value
    rewrite_object(store, digest, bars(T0, 5).append_column("note", pa.array(["x"] * 5)))
    with pytest.raises(ObjectCorrupted) as err:
        store.check_object(digest, partition="2024-01-01")
    assert err.value.kind == "object"
    assert (err.value.expected, err.value.partition) == (digest, "2024-01-01")
    assert err.value.actual == ("<not canonical data: no canonical byte form for column type "
                                "string>")
    assert err.value.path == store.display(store.object_path(digest))


def test_flipped_bit_in_the_values_is_detected(store: Store) -> None:
    """Flip each bit of one byte inside the data pages of an uncompressed object."""
    table = bars(T0, 8)
    digest = store.put_object(table).value
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none", use_dictionary=False,
                   write_statistics=False)
    raw = sink.getvalue().to_pybytes()
    needle = np.asarray(table["close"].to_numpy()[3], dtype="<f8").tobytes()
    at = raw.index(needle) + 6  # inside the exponent and high mantissa bits
    for bit in range(8):
        flipped = bytearray(raw)
        flipped[at] ^= 1 << bit
        store.fs.pipe_file(store.object_path(digest), bytes(flipped))
        with pytest.raises(ObjectCorrupted):
            store.check_object(digest)


def corrupt_time_zone(raw: bytes) -> bytes:
    """Make the time zone text in the Arrow schema stored in a Parquet footer invalid UTF-8.

    The base64 payload keeps its length, so every offset in the file stays right.
    """
    match = re.search(rb"ARROW:schema.{0,8}?([A-Za-z0-9+/=]{40,})", raw, re.S)
    assert match is not None
    schema = base64.b64decode(match.group(1))
    assert schema.count(b"UTC") == 1
    bad = base64.b64encode(schema.replace(b"UTC", b"\x83TC"))
    assert len(bad) == len(match.group(1))
    return raw[: match.start(1)] + bad + raw[match.end(1):]


def test_damaged_arrow_schema_is_reported_as_corrupted(store: Store) -> None:
    digest = store.put_object(bars(T0, 5)).value
    path = store.object_path(digest)
    store.fs.pipe_file(path, corrupt_time_zone(store.fs.cat_file(path)))
    with pytest.raises(ObjectCorrupted) as err:
        store.check_object(digest, partition="2024-01-01")
    assert err.value.kind == "object"
    assert (err.value.expected, err.value.partition) == (digest, "2024-01-01")
    assert err.value.actual.startswith("<not canonical data: ")
    assert "utf-8" in err.value.actual
    assert err.value.path == store.display(path)


# -- snapshots --------------------------------------------------------------------------------

def test_snapshot_round_trip(store: Store) -> None:
    snap = make_snapshot(store, [bars(T0, 10), bars(T0 + DAY_MS, 12, seed=1)])
    store.put_snapshot(snap)
    assert store.has_snapshot(snap.fingerprint)
    back = store.get_snapshot(snap.fingerprint)
    assert back.to_dict() == snap.to_dict()
    assert dataset_fingerprint(back.header, [p.ref() for p in back.partitions]).value == \
        snap.fingerprint
    hexd = snap.fingerprint.removeprefix("sha256:")
    assert store.snapshot_path(snap.fingerprint) == posixpath.join(
        store.root, "snapshots", hexd[:2], f"{hexd}.json")
    store.put_snapshot(snap)  # publishing again is harmless
    assert list(store.iter_snapshots()) == [snap.fingerprint]


def test_snapshot_publish_refuses_when_an_object_is_missing(store: Store) -> None:
    snap = make_snapshot(store, [bars(T0, 10), bars(T0 + DAY_MS, 12, seed=1)])
    store.delete(store.object_path(snap.partitions[1].digest))
    with pytest.raises(ObjectMissing, match="1 of its objects are missing") as err:
        store.put_snapshot(snap)
    assert snap.partitions[1].digest.removeprefix("sha256:") in err.value.path
    assert not store.has_snapshot(snap.fingerprint)
    assert list(store.iter_snapshots()) == []


def test_missing_snapshot(store: Store) -> None:
    with pytest.raises(ObjectMissing, match="not in the store"):
        store.get_snapshot("sha256:" + "0" * 64)


def published(store: Store, days: int = 1) -> tuple[Snapshot, str, dict]:
    snap = make_snapshot(store, [bars(T0 + i * DAY_MS, 10, seed=i) for i in range(days)])
    store.put_snapshot(snap)
    path = store.snapshot_path(snap.fingerprint)
    return snap, path, json.loads(store.fs.cat_file(path))


def rehash(data: dict) -> str:
    """The dataset fingerprint a manifest's header and partition list describe."""
    snap = Snapshot.from_dict(data, path="<test>")
    return dataset_fingerprint(snap.header, [p.ref() for p in snap.partitions]).value


def corrupted_snapshot(store: Store, fingerprint: str) -> ObjectCorrupted:
    with pytest.raises(ObjectCorrupted) as err:
        store.get_snapshot(fingerprint)
    assert err.value.kind == "snapshot"
    assert err.value.expected == fingerprint
    assert err.value.path == store.display(store.snapshot_path(fingerprint))
    assert err.value.partition is None
    assert str(err.value).startswith("snapshot manifest is corrupted: ")
    assert "`qmtl-lock repair`: it moves the manifest aside" in str(err.value)
    return err.value


def test_get_snapshot_detects_an_edited_fingerprint(store: Store) -> None:
    snap, path, data = published(store)
    data["fingerprint"] = "sha256:" + "1" * 64
    store.fs.pipe_file(path, json.dumps(data).encode())
    corrupted_snapshot(store, snap.fingerprint)


def test_edited_fingerprint_field_is_named_in_the_error(store: Store) -> None:
    snap, path, data = published(store)
    data["fingerprint"] = "sha256:" + "1" * 64
    store.fs.pipe_file(path, json.dumps(data).encode())
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual != err.expected
    assert "1" * 64 in str(err)


def test_get_snapshot_detects_another_manifest_under_this_name(store: Store) -> None:
    snap, path, _ = published(store)
    other = make_snapshot(store, [bars(T0, 11)], symbol="ETH/USDT")
    store.put_snapshot(other)
    store.fs.pipe_file(path, store.fs.cat_file(store.snapshot_path(other.fingerprint)))
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual == other.fingerprint


def test_get_snapshot_detects_torn_json(store: Store) -> None:
    snap, path, _ = published(store)
    text = store.fs.cat_file(path)
    store.fs.pipe_file(path, text[: len(text) // 2])
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual.startswith("<unreadable JSON: ")


@pytest.mark.parametrize("field", ["header", "partitions", "fingerprint", "coverage", "digest",
                                   "partition item"])
def test_get_snapshot_detects_a_malformed_manifest(store: Store, field: str) -> None:
    snap, path, data = published(store)
    edits = {
        "header": lambda d: d.pop("header"),
        "partitions": lambda d: d.update(partitions=None),
        "fingerprint": lambda d: d.pop("fingerprint"),
        "coverage": lambda d: d["header"].update(coverage=[T0]),
        "digest": lambda d: d["partitions"][0].update(digest="not a digest"),
        "partition item": lambda d: d.update(partitions=[1]),
    }
    edits[field](data)
    store.fs.pipe_file(path, json.dumps(data).encode())
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual.startswith("<malformed: ")


@pytest.mark.parametrize("algorithm", ["qmtl-fp-2", None])
def test_get_snapshot_refuses_an_unknown_algorithm(store: Store, algorithm: str | None) -> None:
    snap, path, data = published(store)
    data["header"]["algorithm"] = algorithm
    store.fs.pipe_file(path, json.dumps(data).encode())
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual == f"<unknown algorithm {algorithm}>"


@pytest.mark.parametrize("content", [b"[]", b"null", b'"manifest"', b"42"])
def test_get_snapshot_detects_json_that_is_not_an_object(store: Store, content: bytes) -> None:
    snap, path, _ = published(store)
    store.fs.pipe_file(path, content)
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual.startswith("<malformed: ")


def test_get_snapshot_refuses_a_newer_manifest_version(store: Store) -> None:
    snap, path, data = published(store)
    data["snapshot_version"] = 99
    data["partitions"] = "a layout this version cannot read"  # a newer layout, not damage
    store.fs.pipe_file(path, json.dumps(data).encode())
    with pytest.raises(InputError) as err:
        store.get_snapshot(snap.fingerprint)
    assert not isinstance(err.value, ObjectCorrupted)
    assert err.value.what == ("snapshot manifest has snapshot_version 99; this qmtl-lock reads "
                              "version 1 or 2")
    assert err.value.where == store.display(path)
    assert "upgrade qmtl-lock" in (err.value.fix or "")


@pytest.mark.parametrize("edit", ["rows", "drop", "duplicate", "swap"])
def test_get_snapshot_detects_a_tampered_partition_list(store: Store, edit: str) -> None:
    snap, path, data = published(store, days=2)
    parts = data["partitions"]
    edits = {
        "rows": lambda: parts[0].update(rows=parts[0]["rows"] + 1),
        "drop": lambda: parts.pop(),
        "duplicate": lambda: parts.append(dict(parts[-1])),
        "swap": lambda: parts.reverse(),
    }
    edits[edit]()
    store.fs.pipe_file(path, json.dumps(data).encode())
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual == rehash(data) != snap.fingerprint


@pytest.mark.parametrize("field", ["rows", "digest", "start", "end", "coverage", "symbol",
                                   "contract", "preset", "interval"])
def test_a_tampered_manifest_no_longer_hashes_to_its_name(store: Store, field: str) -> None:
    """get_snapshot re-hashes the header and the partition list and compares with the name."""
    snap, path, data = published(store)
    other = store.put_object(bars(T0, 3, seed=9)).value
    part, head = data["partitions"][0], data["header"]
    edits = {
        "rows": lambda: part.update(rows=part["rows"] + 1),
        "digest": lambda: part.update(digest=other),
        "start": lambda: part.update(start=part["start"] + 1),
        "end": lambda: part.update(end=part["end"] - MINUTE_MS),
        "coverage": lambda: head.update(coverage=[T0, T0 + 2 * DAY_MS]),
        "symbol": lambda: head.update(symbol="ETH/USDT"),
        "contract": lambda: head.update(contract="ohlcv@v2"),
        "preset": lambda: head.update(preset="ohlcv.other.1m"),
        "interval": lambda: head.update(interval_ms=2 * MINUTE_MS),
    }
    edits[field]()
    store.fs.pipe_file(path, json.dumps(data).encode())
    err = corrupted_snapshot(store, snap.fingerprint)
    assert err.actual == rehash(data) != snap.fingerprint
    assert f"it describes {err.actual}, its name says {snap.fingerprint}" in str(err)


def test_flags_are_kept_but_not_hashed(store: Store) -> None:
    snap = make_snapshot(store, [bars(T0, 10)])
    snap.partitions[0].flags = {"repeated_bars": 2, "gap_bars": 1}
    store.put_snapshot(snap)
    back = store.get_snapshot(snap.fingerprint)
    assert list(back.to_dict()["partitions"][0]["flags"]) == ["gap_bars", "repeated_bars"]
    assert dataset_fingerprint(back.header, [p.ref() for p in back.partitions]).value == \
        snap.fingerprint


# -- job checkpoints --------------------------------------------------------------------------

def test_job_checkpoints_are_one_object_per_window(store: Store) -> None:
    key = "a" * 32
    assert store.read_checkpoints(key) == {}
    store.write_checkpoint(key, 1, 2, {"rows": 3})
    store.write_checkpoint(key, 2, 5, {"rows": 4})
    assert store.read_checkpoints(key) == {
        "1-2": {"job_version": 2, "start": 1, "end": 2, "rows": 3},
        "2-5": {"job_version": 2, "start": 2, "end": 5, "rows": 4}}
    store.write_checkpoint(key, 1, 2, {"rows": 7})  # a window written again is replaced
    assert store.read_checkpoints(key)["1-2"]["rows"] == 7
    assert store.checkpoint_path(key, 1, 2) == posixpath.join(store.root, "jobs", key,
                                                              "1-2.json")
    store.discard_job(key)
    assert store.read_checkpoints(key) == {}
    store.discard_job(key)  # discarding twice is harmless


@pytest.mark.parametrize("content", [b'{"job_version": 2, "start": 1, "end', b"", b"\xff\xfe{"])
def test_a_torn_window_checkpoint_is_left_out(store: Store, content: bytes) -> None:
    key = "torn"
    store.write_checkpoint(key, 1, 2, {"rows": 3})
    store.write_checkpoint(key, 2, 3, {"rows": 1})
    store.fs.pipe_file(store.checkpoint_path(key, 1, 2), content)
    assert list(store.read_checkpoints(key)) == ["2-3"]


def test_a_window_checkpoint_of_another_version_or_window_is_left_out(store: Store) -> None:
    store.write_checkpoint("old", 1, 2, {})
    store.fs.pipe_file(store.checkpoint_path("old", 1, 2), json.dumps({"job_version": 1}).encode())
    store.write_checkpoint("old", 2, 3, {})
    store.fs.pipe_file(store.checkpoint_path("old", 2, 3),  # names another window than its own
                       json.dumps({"job_version": 2, "start": 5, "end": 6}).encode())
    assert store.read_checkpoints("old") == {}


# -- publishing and listing -------------------------------------------------------------------

def test_no_temporary_files_remain(store: Store) -> None:
    snap = make_snapshot(store, [bars(T0, 10), bars(T0 + DAY_MS, 10, seed=3)])
    store.put_snapshot(snap)
    store.put_object(bars(T0, 10))  # again: a no-op
    store.write_checkpoint("k", 1, 2, {"rows": 1})
    store.write_checkpoint("k", 1, 2, {"rows": 2})
    names = [posixpath.basename(p) for p in every_file(store)]
    assert not [n for n in names if n.startswith(".tmp-") or "tmp" in n], names
    assert len(names) == 2 + 1 + 1


def test_iter_objects_and_snapshots_list_what_was_written(store: Store) -> None:
    assert list(store.iter_objects()) == []
    assert list(store.iter_snapshots()) == []
    one = make_snapshot(store, [bars(T0, 10), bars(T0 + DAY_MS, 10, seed=1)])
    two = make_snapshot(store, [bars(T0, 10), bars(T0 + DAY_MS, 10, seed=2)], symbol="X")
    store.put_snapshot(one)
    store.put_snapshot(two)
    store.write_checkpoint("k", 1, 2, {})
    digests = {p.digest for s in (one, two) for p in s.partitions}
    assert len(digests) == 3  # the first partition is shared
    assert set(store.iter_objects()) == digests
    assert sorted(store.iter_objects()) == list(store.iter_objects())
    assert set(store.iter_snapshots()) == {one.fingerprint, two.fingerprint}
    for d in store.iter_objects():
        assert isinstance(store.check_object(d), pa.Table)
        Fingerprint(d)


def test_listing_ignores_temporary_files(store: Store) -> None:
    digest = store.put_object(bars(T0, 5)).value
    parent = posixpath.dirname(store.object_path(digest))
    store.fs.pipe_file(posixpath.join(parent, ".tmp-dead-" + digest[7:] + ".parquet"), b"x")
    assert list(store.iter_objects()) == [digest]


def test_display_path(store: Store) -> None:
    path = store.object_path("sha256:" + "cd" * 32)
    shown = store.display(path)
    if store.url.startswith("memory://"):
        assert shown.startswith("memory://")
    else:
        assert shown == path
