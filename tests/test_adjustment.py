"""Adjustment is part of the contract: raw, split-adjusted or split-and-dividend-adjusted bars.

Real files in their vendor's exact layout: Yahoo's history CSV (``Date,Open,High,Low,Close,Adj
Close,Volume``, tests/fixtures/vendors/yahoo) and a Quandl WIKI CSV with its ``Ex-Dividend`` and
``Split Ratio`` columns, newest first (tests/fixtures/vendors/quandl-wiki/XYZ.csv: a 4-for-1
split on 2024-01-08 and a 0.50 dividend going ex on 2024-01-04, expected values worked out by hand
below).
Polygon runs against the real HTTP server of tests/http_server.py. Every run goes through the
command line in a temporary project; error texts users read are syrupy snapshots.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import Project, expect
from http_server import Server, serve
from qmtl_engine.adjust import Method, apply, plan_adjustment
from qmtl_engine.fingerprint import SnapshotHeader, canonical_json

from qmtl_lock import Lock
from qmtl_lock.lockfile import read_lock

FIXTURES = Path(__file__).resolve().parent / "fixtures"
YAHOO = FIXTURES / "vendors" / "yahoo"
WIKI = FIXTURES / "vendors" / "quandl-wiki"

PRESETS = """\
version: 1
data_presets:
  ohlcv.yahoo.us_equity.1d:
    kind: ohlcv
    interval_ms: 86400000
    contract: {name: ohlcv, version: v1}
    calendar: XNYS
    partition: year
    adjustment: splits_dividends
    source:
      name: files
      options:
        url: "data/yahoo/{symbol}.csv"
        columns: {ts: Date, open: Open, high: High, low: Low, close: Close, volume: Volume}
        ts_format: "%Y-%m-%d"
        file_adjustment: splits
        adj_close_column: Adj Close
    sla_preset: baseline
    conformance_preset: strict-blocking
  ohlcv.wiki.us_equity.1d:
    kind: ohlcv
    interval_ms: 86400000
    contract: {name: ohlcv, version: v1}
    calendar: XNYS
    partition: year
    source:
      name: files
      options:
        url: "data/wiki/{symbol}.csv"
        columns: {ts: Date, open: Open, high: High, low: Low, close: Close, volume: Volume}
        ts_format: "%Y-%m-%d"
        split_column: Split Ratio
        dividend_column: Ex-Dividend
    sla_preset: baseline
    conformance_preset: strict-blocking
"""

MANIFEST = """\
version: 1
presets: [presets.yaml]
datasets:
  yahoo:
    preset: ohlcv.yahoo.us_equity.1d
    symbols: [AAPL]
    start: 2024-01-01
    end: 2024-01-13
    contract_version: v1
  wiki:
    preset: ohlcv.wiki.us_equity.1d
    symbols: [XYZ]
    start: 2024-01-03
    end: 2024-01-10
    contract_version: v1
"""


@pytest.fixture
def adj_project(project: Project) -> Project:
    shutil.copytree(YAHOO, project.root / "data" / "yahoo")
    shutil.copytree(WIKI, project.root / "data" / "wiki")
    (project.root / "presets.yaml").write_text(PRESETS, encoding="utf-8")
    project.write_manifest(MANIFEST)
    return project


def rows_of(project: Project, dataset: str, symbol: str) -> list[dict[str, Any]]:
    table = Lock.open(project.lock).load(dataset, symbol)
    return [{**r, "ts": r["ts"].date().isoformat()} for r in table.to_pylist()]


def prices(row: dict[str, Any]) -> tuple[float, ...]:
    return (row["open"], row["high"], row["low"], row["close"], row["volume"])


def set_wiki_adjustment(project: Project, adjustment: str) -> None:
    project.edit_manifest("    symbols: [XYZ]\n",
                          f"    symbols: [XYZ]\n    adjustment: {adjustment}\n")


# -- the math, on columns -----------------------------------------------------------------------
def test_a_split_and_a_dividend_scale_every_bar_before_them() -> None:
    # newest first, as Quandl writes: 01-09, 01-08 (4:1 split), 01-05, 01-04 (ex 0.50), 01-03
    days = np.array([9, 8, 5, 4, 3], dtype=np.int64) * 86_400_000
    table = pa.table({"open": [26.5, 25.5, 103.0, 101.0, 99.0],
                      "close": [27.0, 26.0, 104.0, 102.0, 100.0],
                      "volume": [4400.0, 4000.0, 1000.0, 1100.0, 1200.0],
                      "__split": [1.0, 4.0, 1.0, 1.0, 1.0],
                      "__dividend": [0.0, 0.0, 0.0, 0.5, 0.0]})
    method = plan_adjustment("raw", "splits_dividends", adj_close=False, split=True,
                             dividend=True)
    assert method == Method(price_splits=1, volume_splits=1, dividends=True)
    out = apply(table, days, method).to_pydict()
    assert sorted(out) == ["close", "open", "volume"]  # the adjustment columns are dropped
    dividend = 1 - 0.5 / 100.0  # the close before the ex-date (01-03) is 100
    assert out["close"] == [27.0, 26.0, 104.0 / 4, 102.0 / 4, 100.0 / 4 * dividend]
    assert out["open"] == [26.5, 25.5, 103.0 / 4, 101.0 / 4, 99.0 / 4 * dividend]
    assert out["volume"] == [4400.0, 4000.0, 4000.0, 4400.0, 4800.0]  # shares: × 4 before


def test_split_ratios_written_as_text() -> None:
    days = np.arange(3, dtype=np.int64)
    table = pa.table({"close": [40.0, 40.0, 10.0], "__split": ["", "", "4:1"]})
    method = plan_adjustment("raw", "splits", adj_close=False, split=True, dividend=False)
    assert isinstance(method, Method)
    assert apply(table, days, method)["close"].to_pylist() == [10.0, 10.0, 10.0]


def test_undoing_a_split_adjustment_gives_the_traded_prices() -> None:
    days = np.arange(3, dtype=np.int64)
    table = pa.table({"close": [10.0, 10.0, 10.0], "volume": [400.0, 400.0, 100.0],
                      "__split": [0.0, 0.0, 4.0]})  # Yahoo writes 0 where there is no split
    method = plan_adjustment("splits", "raw", adj_close=False, split=True, dividend=False)
    assert method == Method(price_splits=-1, volume_splits=-1)
    out = apply(table, days, method).to_pydict()
    assert out["close"] == [40.0, 40.0, 10.0]
    assert out["volume"] == [100.0, 100.0, 100.0]


# -- Yahoo's CSV with Adj Close ------------------------------------------------------------------
def test_yahoo_adj_close_gives_what_yfinance_auto_adjust_gives(adj_project: Project) -> None:
    expect(adj_project.run("resolve"), 0)
    with (YAHOO / "AAPL.csv").open(newline="") as f:
        vendor = list(csv.DictReader(f))
    got = rows_of(adj_project, "yahoo", "AAPL")
    assert [r["ts"] for r in got] == [v["Date"] for v in vendor]
    for row, v in zip(got, vendor, strict=True):
        ratio = float(v["Adj Close"]) / float(v["Close"])
        assert prices(row) == (float(v["Open"]) * ratio, float(v["High"]) * ratio,
                               float(v["Low"]) * ratio, float(v["Adj Close"]),
                               float(v["Volume"]))  # volume as Yahoo wrote it, like yfinance
    # 2024-01-02 by hand: 187.150000 × 187.302855 / 187.796761
    assert got[0]["open"] == pytest.approx(186.657795, abs=1e-6)
    entry = read_lock(adj_project.lock).datasets["yahoo"]
    assert entry.request["adjustment"] == "splits_dividends"
    flags = {k: v for k, v in entry.symbols["AAPL"].conformance_flags.items() if v}
    assert "ohlc_inconsistent" not in flags


# -- split and dividend columns (Quandl WIKI layout) ---------------------------------------------
WIKI_RAW = {  # the file's own rows, by date
    "2024-01-03": (99.0, 101.0, 98.0, 100.0, 1200.0),
    "2024-01-04": (101.0, 103.0, 100.0, 102.0, 1100.0),
    "2024-01-05": (103.0, 105.0, 102.0, 104.0, 1000.0),
    "2024-01-08": (25.5, 26.5, 25.0, 26.0, 4000.0),
    "2024-01-09": (26.5, 27.5, 26.0, 27.0, 4400.0),
}


def by_hand(adjustment: str) -> dict[str, tuple[float, ...]]:
    """Backward adjustment worked out by hand: bars before the 4:1 split on 01-08 are divided by
    4 (volume × 4); bars before the 0.50 dividend going ex on 01-04 (only 01-03) are also
    multiplied by 1 - 0.50 / 100.00, 100.00 being the close of 01-03."""
    out = {}
    for day, (o, h, low, c, v) in WIKI_RAW.items():
        split = 0.25 if day < "2024-01-08" and adjustment != "raw" else 1.0
        dividend = (1 - 0.5 / 100.0) if day < "2024-01-04" and adjustment == \
            "splits_dividends" else 1.0
        f = split * dividend
        out[day] = (o * f, h * f, low * f, c * f, v / split)
    return out


@pytest.mark.parametrize("adjustment", ["raw", "splits", "splits_dividends"])
def test_split_and_dividend_columns_adjust_backward(adj_project: Project,
                                                    adjustment: str) -> None:
    set_wiki_adjustment(adj_project, adjustment)
    expect(adj_project.run("resolve", "wiki"), 0)
    got = {r["ts"]: prices(r) for r in rows_of(adj_project, "wiki", "XYZ")}
    want = by_hand(adjustment)
    assert got.keys() == want.keys()
    for day in want:
        assert got[day] == pytest.approx(want[day], rel=1e-15), day
    if adjustment == "splits_dividends":  # 01-03 worked out to the cent: 100 / 4 × 0.995
        assert got["2024-01-03"][3] == pytest.approx(24.875, rel=1e-15)


def test_the_ratio_method_and_the_columns_agree(adj_project: Project) -> None:
    """The same WIKI file adjusted from its `Adj. Close` column (ratio method) and from its
    split and dividend columns gives the same prices."""
    text = PRESETS.replace("        dividend_column: Ex-Dividend\n",
                           "        dividend_column: Ex-Dividend\n"
                           "        adj_close_column: Adj. Close\n")
    (adj_project.root / "presets.yaml").write_text(text, encoding="utf-8")
    set_wiki_adjustment(adj_project, "splits_dividends")
    expect(adj_project.run("resolve", "wiki"), 0)
    got = {r["ts"]: prices(r) for r in rows_of(adj_project, "wiki", "XYZ")}
    want = by_hand("splits_dividends")
    for day in want:  # volume: divided by the split factor (split_column given too)
        assert got[day] == pytest.approx(want[day], rel=1e-12), day


# -- the adjustment is an input: request, fingerprint, show, check, resolve -----------------------
def test_changing_the_adjustment_is_drift_and_refetches(adj_project: Project) -> None:
    expect(adj_project.run("resolve"), 0)
    raw_lock = adj_project.lock.read_bytes()
    raw_entry = read_lock(adj_project.lock).datasets["wiki"]
    assert "adjustment" not in raw_entry.request  # raw: the request reads as before
    set_wiki_adjustment(adj_project, "splits")
    out = expect(adj_project.run("check"), 1).output
    assert "adjustment changed: lock has 'raw', seamless.yaml has 'splits'" in out
    out = expect(adj_project.run("resolve"), 0).output
    assert "wiki/XYZ" in out and "adjustment" in out
    entry = read_lock(adj_project.lock).datasets["wiki"]
    assert entry.request["adjustment"] == "splits"
    assert entry.preset_digest != raw_entry.preset_digest
    assert (entry.symbols["XYZ"].dataset_fingerprint
            != raw_entry.symbols["XYZ"].dataset_fingerprint)
    assert rows_of(adj_project, "wiki", "XYZ")[0]["close"] == 25.0  # fetched again: 100 / 4
    expect(adj_project.run("check"), 0)
    expect(adj_project.run("verify"), 0)
    # back to raw: the very same lock as before, byte for byte
    adj_project.edit_manifest("    adjustment: splits\n", "")
    expect(adj_project.run("resolve"), 0)
    assert adj_project.lock.read_bytes() == raw_lock


def test_a_catalog_change_of_adjustment_is_drift(adj_project: Project) -> None:
    expect(adj_project.run("resolve"), 0)
    text = PRESETS.replace("    adjustment: splits_dividends\n", "    adjustment: splits\n")
    (adj_project.root / "presets.yaml").write_text(text, encoding="utf-8")
    out = expect(adj_project.run("check"), 1).output
    assert "adjustment changed: lock has 'splits_dividends', seamless.yaml has 'splits'" in out


def test_show_says_which_prices_are_pinned(adj_project: Project) -> None:
    expect(adj_project.run("resolve"), 0)
    table = expect(adj_project.run("show"), 0).output.splitlines()
    assert table[0].split() == ["DATASET", "SYMBOL", "COVERAGE", "ROWS", "FINGERPRINT",
                                "ADJUSTMENT", "FLAGS", "EXPIRES"]
    assert table[1].split()[:2] == ["wiki", "XYZ"] and "raw" in table[1].split()
    assert table[2].split()[:2] == ["yahoo", "AAPL"]
    assert "splits_dividends" in table[2].split()
    rows = json.loads(expect(adj_project.run("show", "--json"), 0).output)
    assert {r["dataset"]: r["adjustment"] for r in rows} == {"wiki": "raw",
                                                            "yahoo": "splits_dividends"}


def test_the_header_names_the_adjustment_only_when_adjusted() -> None:
    raw = SnapshotHeader("ohlcv@v1", "ohlcv.x.y.1d", "AAPL", 86_400_000, 0, 86_400_000)
    assert raw == SnapshotHeader("ohlcv@v1", "ohlcv.x.y.1d", "AAPL", 86_400_000, 0,
                                 86_400_000, adjustment="raw")
    assert canonical_json(raw.canonical()) == (
        b'{"algorithm":"qmtl-fp-1","contract":"ohlcv@v1","coverage":[0,86400000],'
        b'"interval_ms":86400000,"preset":"ohlcv.x.y.1d","symbol":"AAPL"}')
    adjusted = SnapshotHeader("ohlcv@v1", "ohlcv.x.y.1d", "AAPL", 86_400_000, 0, 86_400_000,
                              adjustment="splits")
    assert canonical_json(adjusted.canonical()) == (  # docs/fingerprint.md §3
        b'{"adjustment":"splits","algorithm":"qmtl-fp-1","contract":"ohlcv@v1",'
        b'"coverage":[0,86400000],"interval_ms":86400000,"preset":"ohlcv.x.y.1d",'
        b'"symbol":"AAPL"}')


# -- what cannot be made is bad input (exit 2), with the fix --------------------------------------
def scrubbed(project: Project, *args: str) -> str:
    return project.scrub(expect(project.run(*args), 2).output)


def test_splits_dividends_without_columns_is_refused(adj_project: Project,
                                                     snapshot: object) -> None:
    text = PRESETS.replace("        adj_close_column: Adj Close\n", "")
    (adj_project.root / "presets.yaml").write_text(text, encoding="utf-8")
    assert scrubbed(adj_project, "resolve") == snapshot
    assert scrubbed(adj_project, "check") == snapshot


def test_a_dataset_cannot_ask_what_its_source_cannot_give(adj_project: Project,
                                                         snapshot: object) -> None:
    adj_project.write_manifest(MANIFEST + """\
  demo:
    preset: ohlcv.quandl_wiki.us_equity.1d
    symbols: [AAPL]
    start: 2011-01-01
    end: 2012-01-01
    contract_version: v1
    adjustment: splits
""")
    assert scrubbed(adj_project, "resolve") == snapshot


def test_a_split_adjusted_file_cannot_be_pinned_raw_without_splits(
        adj_project: Project, snapshot: object) -> None:
    text = PRESETS.replace("    adjustment: splits_dividends\n", "    adjustment: raw\n")
    (adj_project.root / "presets.yaml").write_text(text, encoding="utf-8")
    assert scrubbed(adj_project, "presets") == snapshot


def test_a_source_without_corporate_actions_gives_raw_only(project: Project,
                                                          snapshot: object) -> None:
    project.edit_manifest("    retention_class: research-short\n",
                          "    retention_class: research-short\n    adjustment: splits\n")
    assert scrubbed(project, "resolve") == snapshot


# -- Polygon: adjusted= follows the preset ------------------------------------------------------
POLYGON_PRESETS = """\
version: 1
data_presets:
  ohlcv.polygon_test.us_equity.1d:
    kind: ohlcv
    interval_ms: 86400000
    stabilization_bars: 1
    contract: {name: ohlcv, version: v1}
    calendar: XNYS
    partition: year
    ADJUSTMENT
    source:
      name: polygon
      options:
        base_url: URL
        rate_limit: {requests_per_second: 1000, burst: 100}
        OPTIONS
    sla_preset: baseline
    conformance_preset: strict-blocking
"""

POLYGON_MANIFEST = """\
version: 1
presets: [presets.yaml]
datasets:
  aapl:
    preset: ohlcv.polygon_test.us_equity.1d
    symbols: [AAPL]
    start: 2024-01-01
    end: 2024-01-13
    contract_version: v1
"""


@pytest.fixture
def polygon(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    from test_cookbook import serve_polygon
    from test_polygon import KEY

    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    project.write_manifest(POLYGON_MANIFEST)
    for server in serve():
        serve_polygon(server)
        yield server


def polygon_catalog(project: Project, server: Server, adjustment: str = "",
                    options: str = "") -> None:
    text = (POLYGON_PRESETS.replace("URL", server.url)
            .replace("    ADJUSTMENT\n", f"    adjustment: {adjustment}\n" if adjustment else "")
            .replace("        OPTIONS\n", f"        {options}\n" if options else ""))
    (project.root / "presets.yaml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(("adjustment", "options", "query"), [
    ("", "", "adjusted=false"),
    ("raw", "", "adjusted=false"),
    ("splits", "", "adjusted=true"),
    ("", "adjusted: false", "adjusted=false"),  # what older catalogs (the built-in one) say
    ("splits", "adjusted: true", "adjusted=true"),
])
def test_polygon_asks_for_what_the_preset_pins(project: Project, polygon: Server,
                                               adjustment: str, options: str,
                                               query: str) -> None:
    polygon_catalog(project, polygon, adjustment, options)
    expect(project.run("resolve"), 0)
    assert polygon.requests
    assert all(f"?{query}&" in path for path in polygon.requests), polygon.requests
    entry = read_lock(project.lock).datasets["aapl"]
    assert entry.request.get("adjustment", "raw") == (adjustment or "raw")


@pytest.mark.parametrize(("adjustment", "options"), [
    ("splits_dividends", ""),
    ("", "adjusted: true"),  # the old way of asking for split-adjusted prices
    ("splits", "adjusted: false"),
])
def test_polygon_refuses_what_it_cannot_give(project: Project, polygon: Server,
                                             adjustment: str, options: str,
                                             snapshot: object) -> None:
    polygon_catalog(project, polygon, adjustment, options)
    out = scrubbed(project, "resolve")
    assert out.replace(polygon.url, "<server>") == snapshot
    assert polygon.requests == []  # refused before anything is fetched


# -- the recipes of docs/sources.md#adjustment, as written ---------------------------------------
SOURCES_MD = Path(__file__).resolve().parents[1] / "docs" / "sources.md"
SECTION = SOURCES_MD.read_text(encoding="utf-8").split("\n## Adjustment\n", 1)[1].split(
    "\n## ", 1)[0]
RECIPE = re.compile(r"^<!-- adjustment-recipe: (\w+) -->$", re.MULTILINE)
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def recipe(name: str) -> tuple[dict[str, str], list[str]]:
    """The recipe's files (by the name its first comment line gives) and its sample lines."""
    parts = RECIPE.split(SECTION)
    body = dict(zip(parts[1::2], parts[2::2], strict=True))[name].split("\n#### ", 1)[0]
    files, samples = {}, []
    for lang, text in FENCE.findall(body.split("\n### ", 1)[0]):
        if lang == "yaml":
            files[text.splitlines()[0].removeprefix("# ").strip()] = text
        else:
            samples += text.splitlines()
    return files, samples


def install(project: Project, name: str, folder: Path) -> list[str]:
    files, samples = recipe(name)
    assert sorted(files) == ["presets.yaml", "seamless.yaml"]
    shutil.copytree(folder, project.root / "data" / name)
    for file, text in files.items():
        (project.root / file).write_text(text, encoding="utf-8")
    return samples


@pytest.mark.parametrize(("name", "folder"), [("yahoo", YAHOO), ("wiki", WIKI)])
def test_the_recipes_show_their_fixtures_own_lines(name: str, folder: Path) -> None:
    _, samples = recipe(name)
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.csv")))
    assert samples and all(line in text for line in samples)


def test_the_yahoo_recipe_pins_what_it_says(project: Project) -> None:
    install(project, "yahoo", YAHOO)
    expect(project.run("resolve"), 0)
    adjusted = rows_of(project, "us_daily_adjusted", "AAPL")
    assert adjusted[0]["open"] == pytest.approx(186.657795, abs=1e-6)
    assert adjusted[0]["close"] == 187.302855
    split_only = rows_of(project, "us_daily_split_adjusted", "AAPL")
    assert (split_only[0]["open"], split_only[0]["close"]) == (187.15, 187.796761)
    lock = read_lock(project.lock)
    assert lock.datasets["us_daily_split_adjusted"].request["adjustment"] == "splits"
    assert (lock.datasets["us_daily_adjusted"].symbols["AAPL"].dataset_fingerprint
            != lock.datasets["us_daily_split_adjusted"].symbols["AAPL"].dataset_fingerprint)


def test_the_wiki_recipe_pins_what_it_says(project: Project) -> None:
    install(project, "wiki", WIKI)
    expect(project.run("resolve"), 0)
    got = {r["ts"]: prices(r) for r in rows_of(project, "wiki", "XYZ")}
    assert got["2024-01-03"][3] == pytest.approx(24.875, rel=1e-15)
    assert got == pytest.approx(by_hand("splits_dividends"), rel=1e-15)


def test_the_refusal_shown_is_the_one_users_get(project: Project) -> None:
    install(project, "yahoo", YAHOO)
    catalog = project.root / "presets.yaml"
    text = catalog.read_text(encoding="utf-8")
    catalog.write_text(text.replace("        adj_close_column: Adj Close\n", ""),
                       encoding="utf-8")
    shown = SECTION.split("```text\nerror: ", 1)[1].split("```", 1)[0]
    assert "error: " + shown.strip() == scrubbed(project, "resolve").strip()


def test_a_polygon_source_built_from_old_options_keeps_asking_what_they_said() -> None:
    from qmtl_engine.errors import PresetError
    from qmtl_engine.ranges import DAY_MS, TimeRange, to_ms
    from qmtl_engine.sources.polygon import PolygonOptions, PolygonSource

    week = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-08"))
    old = PolygonSource(PolygonOptions(adjusted=True))
    assert "?adjusted=true&" in (old.url_for("AAPL", week, DAY_MS) or "")
    old.use_adjustment("splits")
    with pytest.raises(PresetError, match="`adjusted: true` says otherwise"):
        old.use_adjustment("raw")
    new = PolygonSource(PolygonOptions())
    new.use_adjustment("splits")
    assert "?adjusted=true&" in (new.url_for("AAPL", week, DAY_MS) or "")
    with pytest.raises(PresetError, match="splits only, never for dividends"):
        new.use_adjustment("splits_dividends")


WIKI_CLOSE = 'close: Close, volume: Volume}\n        ts_format: "%Y-%m-%d"\n        split_column'


@pytest.mark.parametrize(("old", "new", "cell"), [
    pytest.param("split_column: Split Ratio", "split_column: Splits", None, id="no-column"),
    pytest.param(WIKI_CLOSE, WIKI_CLOSE.replace("Close", "Last"), None, id="no-close"),
    pytest.param("", "", ("0.5,1.0", "$0.50,1.0"), id="not-a-number"),
])
def test_files_that_do_not_hold_what_the_options_say_fail_with_the_fix(
        adj_project: Project, old: str, new: str, cell: tuple[str, str] | None,
        snapshot: object) -> None:
    (adj_project.root / "presets.yaml").write_text(PRESETS.replace(old, new), encoding="utf-8")
    if cell is not None:
        path = adj_project.root / "data" / "wiki" / "XYZ.csv"
        text = path.read_text(encoding="utf-8")
        assert cell[0] in text
        path.write_text(text.replace(*cell), encoding="utf-8")
    set_wiki_adjustment(adj_project, "splits_dividends")
    out = adj_project.scrub(expect(adj_project.run("resolve", "wiki"), 3).output)
    assert out == snapshot


def test_an_adjustment_column_cannot_also_be_a_price(adj_project: Project,
                                                     snapshot: object) -> None:
    text = PRESETS.replace("close: Close,", "close: Adj Close,", 1)
    (adj_project.root / "presets.yaml").write_text(text, encoding="utf-8")
    assert scrubbed(adj_project, "check") == snapshot


def test_presets_lists_the_adjustment(adj_project: Project) -> None:
    listed = expect(adj_project.run("presets"), 0).output.splitlines()
    line = next(x for x in listed if x.startswith("ohlcv.yahoo.us_equity.1d"))
    assert "[splits_dividends]" in line
    assert "[raw]" not in "\n".join(listed)
    data = {p["id"]: p for p in json.loads(expect(adj_project.run("presets", "--json"), 0).output)
            if p["kind"] == "data_preset"}
    assert data["ohlcv.yahoo.us_equity.1d"]["adjustment"] == "splits_dividends"
    assert data["ohlcv.yahoo.us_equity.1d"]["preset"]["adjustment"] == "splits_dividends"
    assert data["ohlcv.wiki.us_equity.1d"]["adjustment"] == "raw"
    assert "adjustment" not in data["ohlcv.wiki.us_equity.1d"]["preset"]  # as hashed


def test_the_manifest_offers_the_engines_adjustments() -> None:
    from typing import get_args

    from qmtl_engine.adjust import ADJUSTMENTS

    from qmtl_lock.manifest import DatasetSpec

    offered = get_args(DatasetSpec.model_fields["adjustment"].annotation)
    assert set(get_args(offered[0])) == set(ADJUSTMENTS) and offered[1] is type(None)


SPLIT_CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.adjusted.1d:
    kind: ohlcv
    interval_ms: 86400000
    contract: {name: ohlcv, version: v1}
    calendar: 24x7
    partition: month
    adjustment: splits
    source:
      name: files
      options:
        url: "{symbol}.csv"
        ts_format: "%Y-%m-%d"
        split_column: split
    sla_preset: baseline
    conformance_preset: strict-blocking
"""
SPLIT_MANIFEST = """\
version: 1
presets: [catalog.yaml]
datasets:
  adjusted:
    preset: ohlcv.vendor.adjusted.1d
    symbols: [XYZ]
    start: 2024-01-01
    end: {end}
    contract_version: v1
"""


def _daily_with_split(last_day: int) -> str:
    """Raw daily bars from 2024-01-01 for ``last_day`` days; a 2-for-1 split on 15 March."""
    from qmtl_engine import iso, to_ms

    lines = ["ts,open,high,low,close,volume,split"]
    for i in range(last_day):
        day = iso(to_ms("2024-01-01") + i * 86_400_000)[:10]
        price = (100.0 + i) / (2 if day >= "2024-03-15" else 1)
        split = "2:1" if day == "2024-03-15" else ""
        lines.append(f"{day},{price},{price + 1},{price - 1},{price + 0.5},{1000 + i},{split}")
    return "\n".join(lines) + "\n"


def test_an_extension_with_a_new_split_refetches_the_adjusted_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adjusted prices move with every split: extending into a split must not reuse the old,
    unscaled windows, or the lock would pin a series that halves in the middle."""
    from qmtl_lock.resolve import resolve

    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    roots = {}
    for name in ("extended", "fresh"):
        root = tmp_path / name
        root.mkdir()
        (root / "catalog.yaml").write_text(SPLIT_CATALOG, encoding="utf-8")
        roots[name] = root
    extended, fresh = roots["extended"], roots["fresh"]
    (extended / "XYZ.csv").write_text(_daily_with_split(60), encoding="utf-8")  # to 29 Feb
    (extended / "seamless.yaml").write_text(SPLIT_MANIFEST.format(end="2024-03-01"),
                                            encoding="utf-8")
    resolve(extended / "seamless.yaml")
    (extended / "XYZ.csv").write_text(_daily_with_split(91), encoding="utf-8")  # to 31 March
    (extended / "seamless.yaml").write_text(SPLIT_MANIFEST.format(end="2024-04-01"),
                                            encoding="utf-8")
    result = resolve(extended / "seamless.yaml")
    assert [(c.action, c.detail.split(";")[0]) for c in result.changes] == [
        ("restated", "the source now gives other data for partitions 2024-01, 2024-02")]
    (fresh / "XYZ.csv").write_text(_daily_with_split(91), encoding="utf-8")
    (fresh / "seamless.yaml").write_text(SPLIT_MANIFEST.format(end="2024-04-01"),
                                         encoding="utf-8")
    resolve(fresh / "seamless.yaml")
    got, want = (read_lock(r / "seamless.lock").datasets["adjusted"].symbols["XYZ"]
                 for r in (extended, fresh))
    assert got.dataset_fingerprint == want.dataset_fingerprint
    january = Lock.open(extended / "seamless.lock").load("adjusted", "XYZ")["close"][0].as_py()
    assert january == 50.25  # (100 + 0.5) / 2: scaled by the split of 15 March
