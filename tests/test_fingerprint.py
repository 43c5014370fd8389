"""Partition digests and dataset fingerprints (DESIGN §5, docs/fingerprint.md).

Golden vectors pin the algorithm: if one of them changes, the change is breaking and must bump
``FINGERPRINT_ALGORITHM`` and ``lock_version``. A small reference implementation written from
``docs/fingerprint.md`` alone checks that the document is precise enough to reproduce the bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import struct
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qmtl_engine.calendars import AlwaysOpen
from qmtl_engine.conformance import RawBatch, conform
from qmtl_engine.contracts import OHLCV_V1
from qmtl_engine.fingerprint import (
    FINGERPRINT_ALGORITHM,
    Fingerprint,
    PartitionRef,
    SnapshotHeader,
    canonical_json,
    dataset_fingerprint,
    is_fingerprint,
    partition_digest,
)
from qmtl_engine.ranges import DAY_MS, HOUR_MS, MINUTE_MS, TimeRange, partition_windows, to_ms

TS = pa.timestamp("ms", tz="UTC")
OHLCV = ("open", "high", "low", "close", "volume")
T0 = to_ms("2024-01-01T00:00:00Z")
FEW = settings(max_examples=50, deadline=None)
CANONICAL_NAN = 0x7FF8000000000000
NEGATIVE_ZERO = 0x8000000000000000


def canonical_word(v: float) -> int:
    """docs/fingerprint.md §2.3 on the bit pattern: every NaN one pattern, -0.0 as +0.0."""
    if math.isnan(v):
        return CANONICAL_NAN
    word = int.from_bytes(struct.pack("<d", v), "little")
    return 0 if word == NEGATIVE_ZERO else word


# -- fixtures ---------------------------------------------------------------------------------

def ohlcv_table(ts: list[int], **cols: list[float | None]) -> pa.Table:
    arrays = {"ts": pa.array(ts, TS)}
    arrays.update({name: pa.array(cols[name], pa.float64()) for name in OHLCV})
    return pa.table(arrays)


def golden_three_bars() -> pa.Table:
    """Three ordinary 1-minute bars."""
    return ohlcv_table(
        [T0, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS],
        open=[100.0, 101.5, 102.25],
        high=[101.0, 102.0, 103.0],
        low=[99.5, 101.0, 102.0],
        close=[100.5, 101.75, 102.5],
        volume=[10.0, 0.0, 3.25],
    )


def golden_special_values() -> pa.Table:
    """Two daily bars holding every special case: NaN, ±inf, -0.0, subnormal, nulls."""
    return ohlcv_table(
        [T0, T0 + DAY_MS],
        open=[math.nan, -0.0],
        high=[math.inf, 1e-300],
        low=[-math.inf, 5e-324],
        close=[None, 1.0],
        volume=[0.0, None],
    )


def golden_empty() -> pa.Table:
    return ohlcv_table([], **{name: [] for name in OHLCV})


GOLDEN_HEADER = SnapshotHeader(
    contract="ohlcv@v1", preset="ohlcv.binance.spot.1m", symbol="BTC/USDT",
    interval_ms=MINUTE_MS, coverage_start=T0, coverage_end=T0 + 3 * MINUTE_MS,
)

GOLDEN_THREE_BARS = "sha256:d699f1f70a890d46aa1a34bb084436761fe9313c89fd2d5aa1cd9dfe98dca61c"
GOLDEN_SPECIAL_VALUES = "sha256:3515ae60d3d8e346dcb32b0cc2959d82e41c89d3932b01e3d229cdfd389846d5"
GOLDEN_EMPTY = "sha256:40614260f2cd4d385623c8eb83c620e12158b372f645c77bff06bf0ccbf2ab4c"
GOLDEN_DATASET = "sha256:dd66c8398493d5e483431fc659919cf7bdcfede72789fe5079bbe956c5fbfb6e"
# The worked example of docs/fingerprint.md.
DOC_EXAMPLE_DIGEST = "sha256:b987ab9110f8394f13f593a26c71cc7f8e99b8638b082e638ceb57d566f72918"
DOC_EXAMPLE_FINGERPRINT = "sha256:67ff5e63ec8d4c37f7f3e1bc5a91535c36d7caf3eb99390aa8f96719ea721c95"


def random_ohlcv(rows: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(rows, dtype=np.int64) * MINUTE_MS
    return ohlcv_table(ts.tolist(), **{n: rng.normal(100, 5, rows).tolist() for n in OHLCV})


def header(**changes: Any) -> SnapshotHeader:
    fields = {
        "contract": "ohlcv@v1", "preset": "ohlcv.binance.spot.1m", "symbol": "BTC/USDT",
        "interval_ms": MINUTE_MS, "coverage_start": T0, "coverage_end": T0 + DAY_MS,
    }
    fields.update(changes)
    return SnapshotHeader(**fields)


def digest(table: pa.Table) -> str:
    return partition_digest(table).value


def parquet_roundtrip(table: pa.Table, **options: Any) -> pa.Table:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return pq.read_table(pa.BufferReader(sink.getvalue()))


def rechunk(table: pa.Table, cuts: list[int]) -> pa.Table:
    """The same rows cut into Arrow chunks at ``cuts`` (sorted row offsets)."""
    bounds = [0, *sorted(c for c in cuts if 0 < c < table.num_rows), table.num_rows]
    pieces = [table.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    return pa.concat_tables(pieces) if pieces else table


def float_table(values: list[float | None]) -> pa.Table:
    return pa.table({"x": pa.array(values, pa.float64())})


# -- reference implementation of docs/fingerprint.md ------------------------------------------

def reference_partition_digest(table: pa.Table) -> str:
    """docs/fingerprint.md §2, written with struct and hashlib only (no numpy, row by row)."""
    out = [b"qmtl-fp-1/partition\n"]
    for name in table.column_names:
        typ = table.schema.field(name).type
        values = table[name].to_pylist()
        if pa.types.is_timestamp(typ):
            tag = f"timestamp[{typ.unit}, tz={typ.tz}]" if typ.tz else f"timestamp[{typ.unit}]"
            values = table[name].cast(pa.int64()).to_pylist()
        else:
            tag = str(typ)
        nulls = sum(v is None for v in values)
        out.append(json.dumps([name, tag, len(values), nulls], separators=(",", ":")).encode())
        out.append(b"\n")
        if nulls:
            out.append(bytes(0 if v is None else 1 for v in values))
        for v in values:
            if v is None:
                out.append(bytes(8))
            elif isinstance(v, float):
                out.append(canonical_word(v).to_bytes(8, "little"))
            else:
                out.append((v % 2**64).to_bytes(8, "little"))
    return "sha256:" + hashlib.sha256(b"".join(out)).hexdigest()


def reference_dataset_fingerprint(h: SnapshotHeader, parts: list[PartitionRef]) -> str:
    doc = {
        "algorithm": "qmtl-fp-1", "contract": h.contract, "preset": h.preset,
        "symbol": h.symbol, "interval_ms": h.interval_ms,
        "coverage": [h.coverage_start, h.coverage_end],
        "partitions": [[p.start, p.end, p.rows, p.digest.value] for p in parts],
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def doc_example() -> tuple[pa.Table, SnapshotHeader]:
    t0 = to_ms("2024-03-01T00:00:00Z")
    table = ohlcv_table(
        [t0, t0 + MINUTE_MS],
        open=[100.0, 100.5], high=[101.0, 100.5], low=[-0.0, math.nan],
        close=[100.5, 100.25], volume=[2.5, None],
    )
    h = SnapshotHeader("ohlcv@v1", "ohlcv.binance.spot.1m", "BTC/USDT", MINUTE_MS,
                       t0, t0 + 2 * MINUTE_MS)
    return table, h


# -- golden vectors ---------------------------------------------------------------------------

def test_algorithm_tag_is_pinned() -> None:
    assert FINGERPRINT_ALGORITHM == "qmtl-fp-1"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (golden_three_bars, GOLDEN_THREE_BARS),
        (golden_special_values, GOLDEN_SPECIAL_VALUES),
        (golden_empty, GOLDEN_EMPTY),
    ],
    ids=["three_bars", "special_values", "empty"],
)
def test_golden_partition_digest(make: Any, expected: str) -> None:
    assert digest(make()) == expected


def test_golden_dataset_fingerprint() -> None:
    ref = PartitionRef(T0, T0 + 3 * MINUTE_MS, 3, Fingerprint(GOLDEN_THREE_BARS))
    assert dataset_fingerprint(GOLDEN_HEADER, [ref]).value == GOLDEN_DATASET


def test_doc_worked_example() -> None:
    table, h = doc_example()
    d = partition_digest(table)
    assert d.value == DOC_EXAMPLE_DIGEST
    ref = PartitionRef(h.coverage_start, h.coverage_end, 2, d)
    assert dataset_fingerprint(h, [ref]).value == DOC_EXAMPLE_FINGERPRINT


@pytest.mark.parametrize(
    "make", [golden_three_bars, golden_special_values, golden_empty, lambda: doc_example()[0],
             lambda: random_ohlcv(500)],
    ids=["three_bars", "special_values", "empty", "doc_example", "random"],
)
def test_reference_implementation_of_the_doc_agrees(make: Any) -> None:
    table = make()
    assert reference_partition_digest(table) == digest(table)


def test_reference_dataset_fingerprint_agrees() -> None:
    parts = [PartitionRef(T0, T0 + HOUR_MS, 60, Fingerprint(GOLDEN_THREE_BARS)),
             PartitionRef(T0 + HOUR_MS, T0 + DAY_MS, 1380, Fingerprint(GOLDEN_EMPTY))]
    h = header()
    assert dataset_fingerprint(h, parts).value == reference_dataset_fingerprint(h, parts)


def test_reference_covers_other_column_types() -> None:
    table = pa.table({
        "i": pa.array([1, None, -3], pa.int64()),
        "i8": pa.array([-1, 0, 127], pa.int8()),
        "u64": pa.array([2**64 - 1, 0, 2**63], pa.uint64()),
        "f32": pa.array([1.5, None, -0.0], pa.float32()),
        "f16": pa.array(np.array([0.5, -0.0, np.nan], dtype=np.float16)),
        "naive": pa.array([0, 1, 2], pa.timestamp("ms")),
        "prix_€": pa.array([1.0, 2.0, 3.0]),  # the header JSON escapes it: prix_\u20ac
    })
    assert reference_partition_digest(table) == digest(table)


# -- the Fingerprint value type ---------------------------------------------------------------

def test_fingerprint_type() -> None:
    fp = Fingerprint(GOLDEN_THREE_BARS)
    assert str(fp) == GOLDEN_THREE_BARS
    assert fp.hex == GOLDEN_THREE_BARS.removeprefix("sha256:")
    assert is_fingerprint(GOLDEN_THREE_BARS)
    for bad in ["", "sha256:", "sha256:" + "A" * 64, "md5:" + "0" * 64, "sha256:" + "0" * 63]:
        assert not is_fingerprint(bad)
        with pytest.raises(ValueError):
            Fingerprint(bad)
    assert not is_fingerprint(None)


def test_unsupported_column_type_is_refused() -> None:
    with pytest.raises(TypeError):
        partition_digest(pa.table({"s": pa.array(["a"])}))


# -- property 1: same logical rows, same digest -----------------------------------------------

@pytest.mark.parametrize("use_dictionary", [True, False])
@pytest.mark.parametrize("compression", ["snappy", "zstd", "none"])
@pytest.mark.parametrize("row_group_size", [1, 7, 1000])
def test_parquet_encoding_does_not_matter(use_dictionary: bool, compression: str,
                                          row_group_size: int) -> None:
    table = random_ohlcv(100)
    back = parquet_roundtrip(table, use_dictionary=use_dictionary, compression=compression,
                             row_group_size=row_group_size)
    assert digest(back) == digest(table)


@pytest.mark.parametrize("version", ["1.0", "2.4", "2.6"])
def test_parquet_format_version_does_not_matter(version: str) -> None:
    table = golden_special_values()
    back = parquet_roundtrip(table, version=version)
    assert digest(back) == GOLDEN_SPECIAL_VALUES


def test_file_split_does_not_matter(tmp_path: Path) -> None:
    table = random_ohlcv(250)
    folder = tmp_path / "split"
    folder.mkdir()
    for i, (a, b) in enumerate([(0, 40), (40, 41), (41, 250)]):
        pq.write_table(table.slice(a, b - a), folder / f"part-{i}.parquet",
                       compression=["zstd", "none", "snappy"][i])
    joined = pq.read_table(folder)
    assert joined[0].num_chunks > 1
    assert digest(joined) == digest(table)
    pieces = [pq.read_table(folder / f"part-{i}.parquet") for i in range(3)]
    assert digest(pa.concat_tables(pieces)) == digest(table)


def test_schema_metadata_and_nullability_do_not_matter() -> None:
    table = golden_three_bars()
    fields = [f.with_nullable(False).with_metadata({"unit": "USD"}) for f in table.schema]
    decorated = table.cast(pa.schema(fields, metadata={"pandas": "{}"}))
    assert digest(decorated) == GOLDEN_THREE_BARS


def test_source_row_order_does_not_matter_after_conformance() -> None:
    table = random_ohlcv(120)
    window = TimeRange(T0, T0 + 120 * MINUTE_MS)
    order = list(range(table.num_rows))
    random.Random(3).shuffle(order)
    shuffled = table.take(pa.array(order))
    digests = set()
    for raw in (table, shuffled):
        out, _, _ = conform(RawBatch(raw), window=window, interval_ms=MINUTE_MS,
                            contract=OHLCV_V1, calendar=AlwaysOpen())
        digests.add(digest(out))
    assert digests == {digest(table)}


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
float_lists = st.lists(st.one_of(st.none(), floats), min_size=1, max_size=60)


@FEW
@given(values=float_lists, cuts=st.lists(st.integers(0, 60), max_size=5))
def test_arrow_chunking_does_not_matter(values: list[float | None], cuts: list[int]) -> None:
    table = float_table(values)
    assert digest(rechunk(table, cuts)) == digest(table)


@FEW
@given(
    values=float_lists,
    use_dictionary=st.booleans(),
    compression=st.sampled_from(["snappy", "zstd", "gzip", "none"]),
    row_group_size=st.integers(1, 64),
)
def test_parquet_roundtrip_does_not_matter(values: list[float | None], use_dictionary: bool,
                                           compression: str, row_group_size: int) -> None:
    table = float_table(values)
    back = parquet_roundtrip(table, use_dictionary=use_dictionary, compression=compression,
                             row_group_size=row_group_size)
    assert digest(back) == digest(table)


# -- canonical forms: NaN, -0.0, nulls --------------------------------------------------------

NAN_PATTERNS = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000001,
                0x7FF0000000000001, 0xFFFFFFFFFFFFFFFF, 0x7FF4000000000000]


def bits_to_floats(patterns: list[int]) -> np.ndarray:
    return np.array(patterns, dtype=np.uint64).view(np.float64)


def test_every_nan_payload_hashes_alike() -> None:
    weird = bits_to_floats(NAN_PATTERNS)
    assert len({int(b) for b in weird.view(np.uint64)}) == len(NAN_PATTERNS)  # payloads kept
    table = pa.table({"x": pa.array(weird)})
    assert digest(table) == digest(float_table([math.nan] * len(NAN_PATTERNS)))


@pytest.mark.parametrize("mode", ["raise", "warn", "ignore"])
def test_signalling_nan_and_negative_zero_hash_whatever_numpy_error_state(
        mode: Literal["raise", "warn", "ignore"]) -> None:
    # Canonicalisation works on the bit patterns: no float arithmetic, so no FP exception (trap,
    # warning or silent) can make the digest depend on numpy's global error state.
    weird = bits_to_floats([0x7FF0000000000001, 0x7FF4000000000000, 0xFFF0000000000001,
                            NEGATIVE_ZERO, 0x0000000000000001])
    table = pa.table({"x": pa.array(weird)})
    expected = digest(float_table([math.nan, math.nan, math.nan, 0.0, 5e-324]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all=mode):
            assert digest(table) == expected
    assert weird.view(np.uint64)[3] == NEGATIVE_ZERO  # the caller's buffer is not touched


def test_float32_signalling_nan_hashes_under_strict_numpy_error_state() -> None:
    snan = np.array([0x7F800001, 0x00000000], dtype=np.uint32).view(np.float32)
    table = pa.table({"x": pa.array(snan)})
    expected = pa.table({"x": pa.array([math.nan, 0.0], pa.float32())})
    with np.errstate(all="raise"):
        assert digest(table) == digest(expected)


def test_nan_payload_survives_parquet_and_still_hashes_alike() -> None:
    table = pa.table({"x": pa.array(bits_to_floats(NAN_PATTERNS))})
    assert digest(parquet_roundtrip(table)) == digest(table)


def test_negative_zero_hashes_as_zero() -> None:
    assert digest(float_table([-0.0, 1.0])) == digest(float_table([0.0, 1.0]))


@FEW
@given(st.lists(floats, min_size=1, max_size=30))
def test_canonicalisation_is_what_the_doc_says(values: list[float]) -> None:
    canon = [math.nan if math.isnan(v) else abs(v) if v == 0 else v for v in values]
    flipped = [-v if v == 0 or math.isnan(v) else v for v in values]
    assert digest(float_table(values)) == digest(float_table(canon))
    assert digest(float_table(flipped)) == digest(float_table(values))


def test_nulls_differ_from_zeros_and_from_nan() -> None:
    distinct = {
        digest(float_table([None, 1.0])),
        digest(float_table([0.0, 1.0])),
        digest(float_table([math.nan, 1.0])),
    }
    assert len(distinct) == 3


def test_null_position_matters() -> None:
    assert digest(float_table([None, 0.0])) != digest(float_table([0.0, None]))


def test_null_in_timestamp_and_integer_columns() -> None:
    ts = pa.table({"ts": pa.array([T0, None], TS)})
    zero = pa.table({"ts": pa.array([T0, 0], TS)})
    assert digest(ts) != digest(zero)
    ints = pa.table({"i": pa.array([None, 5], pa.int64())})
    assert digest(ints) != digest(pa.table({"i": pa.array([0, 5], pa.int64())}))


# -- property 2: any change, a different digest -----------------------------------------------

@pytest.mark.parametrize("column", OHLCV)
@pytest.mark.parametrize("row", [0, 1, 2])
@pytest.mark.parametrize("direction", [math.inf, -math.inf])
def test_one_ulp_changes_the_digest(column: str, row: int, direction: float) -> None:
    table = golden_three_bars()
    values = table[column].to_numpy().copy()
    values[row] = np.nextafter(values[row], direction)
    changed = table.set_column(table.column_names.index(column), column, pa.array(values))
    assert digest(changed) != GOLDEN_THREE_BARS


def test_one_millisecond_changes_the_digest() -> None:
    table = golden_three_bars()
    ts = table["ts"].cast(pa.int64()).to_numpy().copy()
    ts[1] += 1
    changed = table.set_column(0, "ts", pa.array(ts).cast(TS))
    assert digest(changed) != GOLDEN_THREE_BARS


def test_rows_matter() -> None:
    table = golden_three_bars()
    variants = [
        table.slice(0, 2),                                  # row dropped
        table.slice(1),                                     # first row dropped
        pa.concat_tables([table, table.slice(2)]),          # row repeated
        table.take(pa.array([1, 0, 2])),                    # rows swapped
    ]
    assert len({digest(v) for v in variants} | {GOLDEN_THREE_BARS}) == len(variants) + 1


def test_column_names_and_order_matter() -> None:
    table = golden_three_bars()
    renamed = table.rename_columns(["ts", "open", "high", "low", "close", "Volume"])
    reordered = table.select(["ts", "open", "low", "high", "close", "volume"])
    dropped = table.drop_columns(["volume"])
    extra = table.append_column("trades", pa.array([1.0, 2.0, 3.0]))
    variants = [renamed, reordered, dropped, extra]
    assert len({digest(v) for v in variants} | {GOLDEN_THREE_BARS}) == len(variants) + 1


@pytest.mark.parametrize(
    ("column", "new_type"),
    [
        ("volume", pa.float32()),            # 10.0, 0.0 and 3.25 are exact in float32
        ("ts", pa.timestamp("ms")),          # same instants, no time zone
        ("ts", pa.timestamp("ms", tz="+00:00")),
        ("ts", pa.int64()),
    ],
)
def test_column_type_matters_even_when_value_bytes_agree(column: str,
                                                         new_type: pa.DataType) -> None:
    table = golden_three_bars()
    i = table.column_names.index(column)
    changed = table.set_column(i, column, table[column].cast(new_type))
    assert digest(changed) != GOLDEN_THREE_BARS


@FEW
@given(values=st.lists(floats, min_size=1, max_size=40), data=st.data())
def test_a_single_changed_value_changes_the_digest(values: list[float], data: Any) -> None:
    i = data.draw(st.integers(0, len(values) - 1), label="row")
    new = data.draw(floats, label="new value")

    changed = list(values)
    changed[i] = new
    same = canonical_word(new) == canonical_word(values[i])
    assert (digest(float_table(changed)) == digest(float_table(values))) == same


@FEW
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1,
                       max_size=40), data=st.data())
def test_one_ulp_anywhere_changes_the_digest(values: list[float], data: Any) -> None:
    i = data.draw(st.integers(0, len(values) - 1), label="row")
    changed = np.array(values)
    with np.errstate(over="ignore"):  # nextafter(max, inf) is inf: still a change
        changed[i] = np.nextafter(changed[i], data.draw(st.sampled_from([math.inf, -math.inf])))
    assert digest(pa.table({"x": pa.array(changed)})) != digest(float_table(values))


@pytest.mark.parametrize(
    "change",
    [
        {"contract": "ohlcv@v2"},
        {"preset": "ohlcv.binance.spot.5m"},
        {"symbol": "ETH/USDT"},
        {"symbol": "btc/usdt"},
        {"interval_ms": 5 * MINUTE_MS},
        {"coverage_start": T0 - 1},
        {"coverage_start": T0 + MINUTE_MS},
        {"coverage_end": T0 + DAY_MS - MINUTE_MS},
        {"coverage_end": T0 + DAY_MS + 1},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_every_header_field_matters(change: dict[str, Any]) -> None:
    parts = [PartitionRef(T0, T0 + DAY_MS, 3, Fingerprint(GOLDEN_THREE_BARS))]
    assert dataset_fingerprint(header(**change), parts) != dataset_fingerprint(header(), parts)


# -- property 3: composition ------------------------------------------------------------------

def test_dataset_fingerprint_depends_only_on_header_and_ordered_refs() -> None:
    a = PartitionRef(T0, T0 + HOUR_MS, 60, Fingerprint(GOLDEN_THREE_BARS))
    b = PartitionRef(T0 + HOUR_MS, T0 + DAY_MS, 1380, Fingerprint(GOLDEN_SPECIAL_VALUES))
    base = dataset_fingerprint(header(), [a, b])
    # equal values built anew, and any iterable, give the same fingerprint
    a2 = PartitionRef(a.start, a.end, a.rows, Fingerprint(a.digest.value))
    assert dataset_fingerprint(header(), iter([a2, b])) == base
    others = [
        [b, a],                                                              # order
        [a],                                                                 # one dropped
        [a, b, b],                                                           # one repeated
        [PartitionRef(a.start, a.end, a.rows + 1, a.digest), b],             # row count
        [PartitionRef(a.start, a.end - 1, a.rows, a.digest), b],             # window end
        [PartitionRef(a.start + 1, a.end, a.rows, a.digest), b],             # window start
        [PartitionRef(a.start, a.end, a.rows, b.digest), b],                 # digest
    ]
    fps = {dataset_fingerprint(header(), parts) for parts in others}
    assert len(fps) == len(others)
    assert base not in fps


def test_dataset_fingerprint_is_sha256_of_canonical_json() -> None:
    parts = [PartitionRef(T0, T0 + 3 * MINUTE_MS, 3, Fingerprint(GOLDEN_THREE_BARS))]
    doc = {**GOLDEN_HEADER.canonical(),
           "partitions": [[T0, T0 + 3 * MINUTE_MS, 3, GOLDEN_THREE_BARS]]}
    text = canonical_json(doc)
    assert b" " not in text
    assert text.startswith(b'{"algorithm":"qmtl-fp-1","contract":"ohlcv@v1","coverage":[')
    expected = "sha256:" + hashlib.sha256(text).hexdigest()
    assert dataset_fingerprint(GOLDEN_HEADER, parts).value == expected


def hourly_bars(span: TimeRange) -> pa.Table:
    ts = np.arange(span.start, span.end, HOUR_MS, dtype=np.int64)
    price = 100.0 + (ts - T0) / HOUR_MS * 0.01  # a pure function of the bar time
    return ohlcv_table(ts.tolist(), **{n: price.tolist() for n in OHLCV})


def snapshot_refs(coverage: TimeRange) -> list[PartitionRef]:
    table = hourly_bars(coverage)
    ts = table["ts"].cast(pa.int64()).to_numpy()
    refs = []
    for w in partition_windows(coverage, "month"):
        lo, hi = np.searchsorted(ts, [w.start, w.end])
        part = table.slice(int(lo), int(hi - lo))
        refs.append(PartitionRef(w.start, w.end, part.num_rows, partition_digest(part)))
    return refs


def test_extending_coverage_keeps_closed_partition_digests() -> None:
    start = to_ms("2024-01-01")
    short = TimeRange(start, to_ms("2024-02-15"))
    long = TimeRange(start, to_ms("2024-03-10"))
    old, new = snapshot_refs(short), snapshot_refs(long)
    assert [r.start for r in old] == [start, to_ms("2024-02-01")]
    assert new[0] == old[0]                        # January: closed, untouched
    assert new[1].digest != old[1].digest          # February was partial, now complete
    assert new[1].rows == 29 * 24 and old[1].rows == 14 * 24
    assert len(new) == 3                           # March is new
    h_old = header(interval_ms=HOUR_MS, coverage_start=short.start, coverage_end=short.end)
    h_new = header(interval_ms=HOUR_MS, coverage_start=long.start, coverage_end=long.end)
    assert dataset_fingerprint(h_old, old) != dataset_fingerprint(h_new, new)


def test_partition_digest_of_a_slice_equals_digest_of_a_copy() -> None:
    table = random_ohlcv(300)
    piece = table.slice(37, 100)
    copy = pa.Table.from_pylist(piece.to_pylist(), schema=piece.schema)
    assert digest(piece) == digest(copy)
