"""The files source on JSON REST dumps (``format: json``), on real files in each vendor's shape.

A dump's records are found by a dotted path, read as arrays (columns by position) or objects
(columns by field name), with prices as text or numbers; bars the dump marks as still open
(``complete_until``, ``complete_column``) are never delivered; every way a dump can disagree with
its options is one message that says what the document holds and which option to fix.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qmtl_engine.calendars import get_calendar
from qmtl_engine.conformance import RawBatch, conform
from qmtl_engine.contracts import OHLCV_V1
from qmtl_engine.errors import PresetError, SourceError
from qmtl_engine.ranges import HOUR_MS, TimeRange, to_ms
from qmtl_engine.sources import make_source
from qmtl_engine.sources.files import FilesSource

T0 = to_ms("2023-07-05")
ALL = TimeRange(T0 - 10 * HOUR_MS, T0 + 100 * HOUR_MS)
KRAKEN_COLUMNS = {"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 6}


def kraken_rows(n: int, start: int = T0, price: float = 30000.0) -> list[list[Any]]:
    """Kraken OHLC records: [time s, "open", "high", "low", "close", "vwap", "volume", count]."""
    rows = []
    for i in range(n):
        o = price + i
        rows.append([(start + i * HOUR_MS) // 1000, f"{o:.1f}", f"{o + 5:.1f}", f"{o - 5:.1f}",
                     f"{o + 1:.1f}", f"{o:.1f}", f"{1 + i / 10:.8f}", 10 + i])
    return rows


def write(tmp_path: Path, name: str, document: object) -> Path:
    path = tmp_path / name
    text = json.dumps(document)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def source(tmp_path: Path, **options: Any) -> FilesSource:
    src = make_source("files", {"format": "json", **options}, base_dir=str(tmp_path))
    assert isinstance(src, FilesSource)
    return src


def times(batch: RawBatch) -> list[int]:
    out, _, _ = conform(batch, window=ALL, interval_ms=HOUR_MS, contract=OHLCV_V1,
                        calendar=get_calendar("24x7"))
    return [int(v) for v in out["ts"].cast("int64").to_pylist()]


def fails(src: FilesSource, symbol: str = "XXBTZUSD") -> str:
    with pytest.raises(SourceError) as info:
        src.fetch(symbol, ALL, HOUR_MS)
    return str(info.value)


# -- reading records ---------------------------------------------------------------------------
def test_arrays_of_text_prices_by_position(tmp_path: Path) -> None:
    write(tmp_path, "XXBTZUSD.json", {"error": [], "result": {"XXBTZUSD": kraken_rows(3),
                                                             "last": 0}})
    src = source(tmp_path, url="{symbol}.json", records="result.{symbol}", columns=KRAKEN_COLUMNS)
    batch = src.fetch("XXBTZUSD", ALL, HOUR_MS)
    assert batch.table.column_names == ["ts", "open", "high", "low", "close", "volume"]
    assert batch.table["open"].to_pylist() == ["30000.0", "30001.0", "30002.0"]  # as written
    out, report, _ = conform(batch, window=ALL, interval_ms=HOUR_MS, contract=OHLCV_V1,
                             calendar=get_calendar("24x7"))
    assert out["close"].to_pylist() == [30001.0, 30002.0, 30003.0]
    assert out["volume"].to_pylist() == [1.0, 1.1, 1.2]
    assert report.counts["ts_unit_inferred"] == 3 and report.counts["dtype_cast"] == 3 * 5


def test_objects_by_field_name_and_by_their_own_names(tmp_path: Path) -> None:
    bars = [{"t": T0 + i * HOUR_MS, "o": 10.0 + i, "h": 12.0 + i, "l": 9.0 + i, "c": 11.0 + i,
             "v": 100 + i, "n": 7} for i in range(4)]
    write(tmp_path, "polygon.json", {"status": "OK", "results": bars})
    src = source(tmp_path, url="polygon.json", records="results", ts_unit="ms",
                 columns={"ts": "t", "open": "o", "high": "h", "low": "l", "close": "c",
                          "volume": "v", "trades": "n"})
    table = src.fetch("X", ALL, HOUR_MS).table
    assert table.column_names == ["ts", "open", "high", "low", "close", "volume", "trades"]
    assert table["close"].to_pylist() == [11.0, 12.0, 13.0, 14.0]
    named = [{"ts": b["t"], "open": b["o"], "high": b["h"], "low": b["l"], "close": b["c"],
              "volume": b["v"]} for b in bars]
    write(tmp_path, "named.json", named)
    assert times(source(tmp_path, url="named.json").fetch("X", ALL, HOUR_MS)) == [
        T0 + i * HOUR_MS for i in range(4)]


def test_a_field_no_record_has_is_a_missing_column(tmp_path: Path) -> None:
    write(tmp_path, "d.json", [{"t": T0, "o": 1, "h": 1, "l": 1, "c": 1}])
    batch = source(tmp_path, url="d.json", columns={"ts": "t", "open": "o", "high": "h",
                                                    "low": "l", "close": "c"}).fetch(
        "X", ALL, HOUR_MS)
    _, report, _ = conform(batch, window=ALL, interval_ms=HOUR_MS, contract=OHLCV_V1,
                           calendar=get_calendar("24x7"))
    assert report.counts["missing_column"] == 1  # volume


def test_newest_first_with_text_epochs_and_mixed_values(tmp_path: Path) -> None:
    rows = [[str(T0 + i * HOUR_MS), "1.5", "2", "1", "1.5" if i else 1.5, "3", "0"]
            for i in range(3)]
    write(tmp_path, "okx.json.gz", {"code": "0", "data": rows[::-1]})
    batch = source(tmp_path, url="okx.json.gz", records="data",
                   columns={"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}
                   ).fetch("X", ALL, HOUR_MS)
    assert batch.table["close"].to_pylist() == ["1.5", "1.5", "1.5"]  # text and a number: text
    out, report, _ = conform(batch, window=ALL, interval_ms=HOUR_MS, contract=OHLCV_V1,
                             calendar=get_calendar("24x7"))
    assert out["ts"].cast("int64").to_pylist() == [T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS]
    assert report.counts["unsorted_ts"] == 2 and report.counts["ts_unit_inferred"] == 3


def test_the_document_itself_may_be_the_list(tmp_path: Path) -> None:
    candles = [[(T0 + i * HOUR_MS) // 1000, 9.0, 12.0, 10.0, 11.0, 5.5] for i in range(3)][::-1]
    write(tmp_path, "BTC-USD.json", candles)
    src = source(tmp_path, url="{symbol}.json", ts_unit="s",
                 columns={"ts": 0, "low": 1, "high": 2, "open": 3, "close": 4, "volume": 5})
    table = src.fetch("BTC-USD", ALL, HOUR_MS).table
    assert table["low"].to_pylist() == [9.0] * 3 and table["open"].to_pylist() == [10.0] * 3


def test_records_with_symbol_tell_symbols_apart() -> None:
    assert FilesSource.distinguishes_symbols({"url": "all.json", "format": "json",
                                              "records": "result.{symbol}"})
    assert not FilesSource.distinguishes_symbols({"url": "all.json", "format": "json",
                                                  "records": "data"})


# -- bars still open are never delivered -------------------------------------------------------
def test_complete_until_leaves_out_the_open_bar(tmp_path: Path) -> None:
    rows = kraken_rows(5)
    last = rows[-1][0]
    write(tmp_path, "XXBTZUSD.json", {"error": [], "result": {"XXBTZUSD": rows, "last": last}})
    opts = {"url": "{symbol}.json", "records": "result.{symbol}", "columns": KRAKEN_COLUMNS}
    kept = times(source(tmp_path, complete_until="result.last", **opts).fetch(
        "XXBTZUSD", ALL, HOUR_MS))
    assert kept == [T0 + i * HOUR_MS for i in range(4)]
    everything = times(source(tmp_path, **opts).fetch("XXBTZUSD", ALL, HOUR_MS))
    assert everything == [*kept, last * 1000]


def test_each_dump_of_a_glob_has_its_own_complete_until(tmp_path: Path) -> None:
    first, second = kraken_rows(4), kraken_rows(4, start=T0 + 3 * HOUR_MS, price=30003.0)
    first[-1][4] = "30000.5"  # the open bar of the first dump: its close changed since
    write(tmp_path, "K_60_1.json", {"error": [], "result": {"K": first, "last": first[-1][0]}})
    write(tmp_path, "K_60_2.json", {"error": [], "result": {"K": second, "last": second[-1][0]}})
    batch = source(tmp_path, url="{symbol}_60_*.json", records="result.{symbol}",
                   complete_until="result.last", columns=KRAKEN_COLUMNS).fetch("K", ALL, HOUR_MS)
    out, report, _ = conform(batch, window=ALL, interval_ms=HOUR_MS, contract=OHLCV_V1,
                             calendar=get_calendar("24x7"))
    assert out["ts"].cast("int64").to_pylist() == [T0 + i * HOUR_MS for i in range(6)]
    assert out["close"].to_pylist()[3] == 30004.0  # the final version, from the second dump
    assert report.counts["duplicate_ts"] == 0


@pytest.mark.parametrize("flags", [["1", "1", "0"], [1, 1, 0], [True, True, False],
                                   ["1", "true", None]])
def test_complete_column_keeps_only_final_bars(tmp_path: Path, flags: list[object]) -> None:
    rows = [[str(T0 + i * HOUR_MS), "1", "2", "1", "1.5", "3", flag]
            for i, flag in enumerate(flags)]
    write(tmp_path, "okx.json", {"code": "0", "data": rows})
    src = source(tmp_path, url="okx.json", records="data", complete_column=6, ts_unit="ms",
                 columns={"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5})
    assert times(src.fetch("X", ALL, HOUR_MS)) == [T0, T0 + HOUR_MS]


def test_complete_column_works_for_csv_too(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("ts,open,high,low,close,volume,final\n"
                                    f"{T0},1,2,1,1.5,3,1\n{T0 + HOUR_MS},1,2,1,1.5,4,0\n")
    src = make_source("files", {"url": "c.csv", "complete_column": "final"},
                      base_dir=str(tmp_path))
    assert times(src.fetch("X", ALL, HOUR_MS)) == [T0]


# -- one message per way a dump disagrees with its options --------------------------------------
KRAKEN = {"error": [], "result": {"XXBTZUSD": kraken_rows(2), "last": 1688515200}}


@pytest.mark.parametrize(("document", "options", "words"), [
    (KRAKEN, {"records": "result.XBTUSD"},
     ["no 'result.XBTUSD': at result it holds an object with keys 'XXBTZUSD', 'last'",
      "fix `records`"]),
    (KRAKEN, {}, ["the records at the top of the document are an object with keys 'error', "
                  "'result'", "set `records` to the dotted path of the list of bars"]),
    (KRAKEN, {"records": "result.last"}, ["are the value 1688515200, not a list"]),
    (KRAKEN, {"records": "result.{symbol}", "columns": {"ts": "time"}},
     ["the records are arrays, but `columns` names fields ['time']", "as positions"]),
    (KRAKEN, {"records": "result.{symbol}", "columns": {**KRAKEN_COLUMNS, "volume": 9}},
     ["position 9 is past the end of each record (8 fields)"]),
    ({"data": [{"t": 1, "o": 2}]}, {"records": "data", "columns": {"ts": 0}},
     ["the records are objects, but `columns` gives positions [0]", "field names"]),
    ({"data": [[1, 2, 3], [1, 2]]}, {"records": "data", "columns": {"ts": 0}},
     ["the records are not arrays of one length (lengths [2, 3])"]),
    ({"data": ["a", "b"]}, {"records": "data"},
     ["each record must be an array or an object, the first is the value 'a'"]),
    (KRAKEN, {"records": "result.{symbol}", "columns": KRAKEN_COLUMNS,
              "complete_until": "result.next"},
     ["no 'result.next'", "fix `complete_until`"]),
    (KRAKEN, {"records": "result.{symbol}", "columns": KRAKEN_COLUMNS,
              "complete_until": "result"},
     ["'result' holds {", "not a time"]),
    ({"data": [[1688515200, 1, 1, 1, 1, 1]], "last": "soon"},
     {"records": "data", "columns": {"ts": 0}, "complete_until": "last"},
     ["cannot read 'last' ('soon') as a time"]),
    ({"data": []}, {"records": "data", "columns": {"ts": 0}}, ["the file has no rows"]),
], ids=["no-such-key", "object-not-list", "value-not-list", "names-for-arrays",
        "position-past-end", "positions-for-objects", "ragged", "scalars", "no-until",
        "until-object", "until-text", "empty"])
def test_a_dump_that_does_not_fit_says_what_it_holds(
        tmp_path: Path, document: object, options: dict[str, Any], words: list[str]) -> None:
    write(tmp_path, "XXBTZUSD.json", document)
    text = fails(source(tmp_path, url="{symbol}.json", **options))
    for w in words:
        assert w in text, text
    assert "XXBTZUSD.json" in text


def test_a_file_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "X.json").write_text("Date,Open\n2024-01-01,1\n")
    text = fails(source(tmp_path, url="{symbol}.json"), "X")
    assert "cannot read X.json: not a JSON document" in text and "check `format`" in text


@pytest.mark.parametrize("key", ["records", "complete_until"])
def test_json_options_need_format_json(key: str) -> None:
    with pytest.raises(PresetError) as info:
        make_source("files", {"url": "x.csv", key: "data"}, base_dir=".")
    assert f"invalid option {key!r} for the files source" in str(info.value)
    assert "applies to `format: json` only" in str(info.value)


def test_columns_are_cut_out_whole() -> None:
    """Positions are read by slicing one object grid, not record by record (a guard on cost)."""
    from qmtl_engine.sources.json_records import records_table

    rows = [[i, f"{i}.5", i * 2] for i in range(50_000)]
    table = records_table({"d": rows}, "d", [0, 1, 2])
    assert table.num_rows == 50_000
    assert np.array_equal(table["f2"].to_numpy(), np.arange(50_000) * 2)
    assert table["f1"][49_999].as_py() == "49999.5"


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.lists(st.one_of(st.none(), st.booleans()), min_size=1, max_size=20),
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=20),
    st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40),
                       st.floats(allow_nan=False, allow_infinity=False)), min_size=1,
             max_size=20),
    st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=1, max_size=20)))
def test_json_columns_are_typed_as_pyarrow_types_them(values: list[object]) -> None:
    import numpy as np
    import pyarrow as pa
    from qmtl_engine.sources.json_records import _array

    got = _array(np.array([*values, None], dtype=object)[:-1])  # stays a 1-d object array
    want = pa.array(values)
    assert got.type == want.type and got.equals(want)
