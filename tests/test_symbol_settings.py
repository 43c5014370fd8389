"""Per-symbol settings in a dataset (issue 12): a symbol of ``symbols:`` may be a mapping with
its own ``start`` (listing), ``end`` (delisting) and ``source_symbol`` (the name the source knows
it by: ``XBTUSDT`` in the vendor's file for our ``BTCUSD``).

What must hold: each symbol's range is the dataset's cut to its own start and end, so an
all-tickers dataset from 2000 resolves without a pre-listing gap refusal and a delisted ticker
stops at its delisting, also under ``end: now``; the lock and everything users read name our
symbol while the source is asked for the source symbol (a files ``{symbol}`` URL, a
``symbol_column``); a changed source symbol is drift that ``check`` names and resolve fetches
again; manifests without the new keys keep their locks byte for byte; and every mistake in a
symbol's mapping is one exit-2 message with file, line and fix (kept as syrupy snapshots).

Everything runs through the real ``files`` source on CSV files written in the test's folder.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import LATER, Project, expect
from qmtl_engine.ranges import DAY_MS, TimeRange, to_ms
from test_readme import section
from test_schemas import ROOT, _jsonable
from vendor_catalog import vendor_catalog

from qmtl_lock import Lock
from qmtl_lock.errors import ManifestError
from qmtl_lock.lockfile import (
    DatasetEntry,
    Lockfile,
    SymbolEntry,
    parse_lock,
    read_lock,
    render,
)
from qmtl_lock.manifest import load_manifest
from qmtl_lock.merge import merge

DAY = dt.timedelta(days=1)

MANIFEST = """\
version: 1
presets: [vendor.yaml]
datasets:
  stocks:
    preset: ohlcv.vendor.crypto.1d
    symbols:
{symbols}
    start: {start}
    end: {end}
    contract_version: v1
"""


def daily_csv(path: Path, first: str, last: str, seed: int = 0, *,
              symbol_column: str | None = None) -> int:
    """Daily bars from ``first`` to ``last`` (both included) at ``path``; returns the rows.
    ``seed`` moves the prices, so that two files hold different data."""
    day, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    head = "ts,open,high,low,close,volume"
    lines = [head if symbol_column is None else f"{head},{symbol_column}"]
    rows = 0
    while day <= end:
        p = 100 + seed * 10 + rows % 7
        line = f"{day.isoformat()},{p},{p + 2},{p - 1},{p + 1},{1000 + rows}"
        lines.append(line)
        rows += 1
        day += DAY
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def long_csv(path: Path, files: dict[str, Path]) -> None:
    """One long file holding each symbol's rows of ``files``, named in a ``Ticker`` column."""
    lines = ["ts,open,high,low,close,volume,Ticker"]
    for ticker, source in files.items():
        lines += [f"{row},{ticker}" for row in source.read_text().splitlines()[1:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def setup(project: Project, symbols: str, *, start: str = "2000-01-01",
          end: str = "2000-03-01", catalog: str | None = None) -> None:
    """The catalog (daily bars of ``<symbol>.csv`` beside seamless.yaml) and the manifest;
    ``symbols`` are the lines under ``symbols:``."""
    (project.root / "vendor.yaml").write_text(catalog or vendor_catalog("month"),
                                              encoding="utf-8")
    project.write_manifest(MANIFEST.format(symbols=symbols, start=start, end=end))


def entry(project: Project, symbol: str, dataset: str = "stocks") -> SymbolEntry:
    return read_lock(project.lock).datasets[dataset].symbols[symbol]


def bounds(project: Project, symbol: str) -> tuple[str, str]:
    from qmtl_engine.ranges import iso

    start, end = entry(project, symbol).coverage_bounds
    return iso(start), iso(end)


# -- listing and delisting -----------------------------------------------------------------------
def test_a_later_listing_resolves_without_a_pre_listing_gap(project: Project) -> None:
    daily_csv(project.root / "OLD.csv", "2000-01-01", "2000-02-29", seed=1)
    listed = daily_csv(project.root / "NEW.csv", "2000-02-01", "2000-02-29", seed=2)
    setup(project, "      - OLD\n      - NEW\n")
    refused = expect(project.run("resolve"), 3)  # today's refusal: January is a gap for NEW
    assert "gap_bars=31" in refused.output and "NEW" in refused.output

    setup(project, "      - OLD\n      - {symbol: NEW, start: 2000-02-01}\n")
    expect(project.run("resolve"), 0)
    assert bounds(project, "OLD") == ("2000-01-01T00:00:00Z", "2000-03-01T00:00:00Z")
    assert bounds(project, "NEW") == ("2000-02-01T00:00:00Z", "2000-03-01T00:00:00Z")
    assert entry(project, "NEW").rows == listed == 29
    assert entry(project, "NEW").conformance_flags["gap_bars"] == 0
    request = read_lock(project.lock).datasets["stocks"].request
    assert request["symbols"] == ["NEW", "OLD"]
    assert request["symbol_settings"] == [{"symbol": "NEW", "start": "2000-02-01"}]
    expect(project.run("check"), 0)
    expect(project.run("verify"), 0)
    # read back, the lock renders to its own bytes (an entry kept as locked keeps its text)
    text = project.lock.read_text(encoding="utf-8")
    assert render(parse_lock(text, "seamless.lock")) == text
    # and both files are what the checked-in JSON Schemas describe
    for name, path in (("seamless.schema.json", project.manifest),
                       ("seamless.lock.schema.json", project.lock)):
        schema = json.loads((ROOT / "schemas" / name).read_text(encoding="utf-8"))
        jsonschema.validate(_jsonable(yaml.safe_load(path.read_text(encoding="utf-8"))), schema)


def test_a_listing_before_the_dataset_start_is_the_dataset_start(project: Project) -> None:
    daily_csv(project.root / "A.csv", "2000-01-01", "2000-02-29")
    setup(project, "      - {symbol: A, start: 1990-05-01}\n")
    expect(project.run("resolve"), 0)
    assert bounds(project, "A") == ("2000-01-01T00:00:00Z", "2000-03-01T00:00:00Z")


def test_a_delisted_ticker_stops_at_its_delisting(project: Project) -> None:
    daily_csv(project.root / "LIVE.csv", "2000-01-01", "2000-02-29", seed=1)
    daily_csv(project.root / "GONE.csv", "2000-01-01", "2000-01-19", seed=2)
    setup(project, "      - LIVE\n      - {symbol: GONE, end: 2000-01-20}\n")
    expect(project.run("resolve"), 0)
    assert bounds(project, "GONE") == ("2000-01-01T00:00:00Z", "2000-01-20T00:00:00Z")
    assert entry(project, "GONE").rows == 19
    assert Lock.open(project.lock).load("stocks", "GONE").num_rows == 19


def test_a_delisting_under_end_now_is_fixed_while_the_others_move(project: Project) -> None:
    """``end: now`` stays the dataset's: the live ticker follows it, the delisted one keeps its
    own end, and ``--update`` later leaves it as it is."""
    daily_csv(project.root / "LIVE.csv", "2024-05-01", "2024-06-10", seed=1)
    daily_csv(project.root / "GONE.csv", "2024-05-01", "2024-05-14", seed=2)
    setup(project, "      - LIVE\n      - {symbol: GONE, end: 2024-05-15}\n",
          start="2024-05-01", end="now")
    expect(project.run("resolve"), 0)
    assert bounds(project, "LIVE")[1] == "2024-06-01T00:00:00Z"  # the last closed day at NOW
    assert bounds(project, "GONE") == ("2024-05-01T00:00:00Z", "2024-05-15T00:00:00Z")
    gone = entry(project, "GONE")
    later = expect(project.run("resolve", "--update", env={"QMTL_LOCK_NOW": LATER}), 0)
    assert bounds(project, "LIVE")[1] == "2024-06-03T00:00:00Z"
    assert entry(project, "GONE") == gone
    assert "extended  stocks/LIVE" in later.output and "stocks/GONE" not in later.output.replace(
        "unchanged stocks/GONE", "")
    expect(project.run("check"), 0)



def test_a_delisted_ticker_is_not_judged_for_lag_behind_now(project: Project) -> None:
    """The SLA's max_lag_seconds is for data that follows ``end: now``; a delisting is an end of
    its own, so its last bar 17 days before now is no violation of a 2-day limit."""
    daily_csv(project.root / "LIVE.csv", "2024-05-01", "2024-05-31", seed=1)
    daily_csv(project.root / "GONE.csv", "2024-05-01", "2024-05-14", seed=2)
    catalog = vendor_catalog("month").replace("sla_preset: baseline", "sla_preset: fresh") + (
        "sla_presets:\n  fresh: {total_deadline_ms: 60000, min_coverage: 0.98, "
        "max_lag_seconds: 172800, on_violation: fail_fast}\n")
    setup(project, "      - LIVE\n      - {symbol: GONE, end: 2024-05-15}\n",
          start="2024-05-01", end="now", catalog=catalog)
    expect(project.run("resolve"), 0)
    assert entry(project, "GONE").sla["violation"] is None


# -- the source symbol ---------------------------------------------------------------------------
def test_the_source_is_asked_for_the_source_symbol_through_the_url(project: Project) -> None:
    rows = daily_csv(project.root / "XBTUSDT.csv", "2000-01-01", "2000-02-29", seed=3)
    setup(project, "      - {symbol: BTCUSD, source_symbol: XBTUSDT}\n")
    expect(project.run("resolve"), 0)
    lock = read_lock(project.lock)
    assert list(lock.datasets["stocks"].symbols) == ["BTCUSD"]  # the lock says our symbol
    assert lock.datasets["stocks"].request["symbol_settings"] == [
        {"symbol": "BTCUSD", "source_symbol": "XBTUSDT"}]
    assert Lock.open(project.lock).load("stocks", "BTCUSD").num_rows == rows

    # The fingerprint names what the data is (our symbol), not where it was read: the same rows
    # read from BTCUSD.csv under the plain symbol give the same fingerprint.
    fingerprint = entry(project, "BTCUSD").dataset_fingerprint
    shutil.copy(project.root / "XBTUSDT.csv", project.root / "BTCUSD.csv")
    setup(project, "      - BTCUSD\n")
    expect(project.run("resolve"), 0)
    assert entry(project, "BTCUSD").dataset_fingerprint == fingerprint
    assert "symbol_settings" not in read_lock(project.lock).datasets["stocks"].request


def test_the_source_symbol_selects_the_rows_of_a_symbol_column(project: Project) -> None:
    daily_csv(project.root / "a.csv", "2000-01-01", "2000-02-29", seed=4)
    daily_csv(project.root / "b.csv", "2000-01-01", "2000-02-29", seed=5)
    long_csv(project.root / "all.csv", {"XBTUSDT": project.root / "a.csv",
                                        "XETHUSDT": project.root / "b.csv"})
    catalog = vendor_catalog("month").replace(
        'url: "{symbol}.csv"', 'url: "all.csv", symbol_column: Ticker')
    setup(project, "      - {symbol: BTCUSD, source_symbol: XBTUSDT}\n"
                   "      - {symbol: ETHUSD, source_symbol: XETHUSDT}\n", catalog=catalog)
    expect(project.run("resolve"), 0)
    lock = Lock.open(project.lock)
    btc, eth = lock.load("stocks", "BTCUSD"), lock.load("stocks", "ETHUSD")
    assert btc.num_rows == eth.num_rows == 60
    assert btc["open"][0].as_py() == 140.0 and eth["open"][0].as_py() == 150.0


def test_two_symbols_may_read_a_reused_source_symbol_over_disjoint_ranges(
        project: Project) -> None:
    """A vendor that gave a delisted company's ticker to a new listing: two symbols of ours,
    one source symbol, each its own range."""
    daily_csv(project.root / "AAA.csv", "2000-01-01", "2000-02-29", seed=6)
    setup(project, "      - {symbol: AAA_OLD, source_symbol: AAA, end: 2000-01-15}\n"
                   "      - {symbol: AAA_NEW, source_symbol: AAA, start: 2000-02-01}\n")
    expect(project.run("resolve"), 0)
    assert (entry(project, "AAA_OLD").rows, entry(project, "AAA_NEW").rows) == (14, 29)


def test_a_missing_source_file_names_the_symbol_and_the_source_symbol(
        project: Project) -> None:
    setup(project, "      - {symbol: BTCUSD, source_symbol: XBTUSDT}\n")
    result = expect(project.run("resolve"), 3)
    assert "symbol BTCUSD, source symbol XBTUSDT" in result.output
    assert "XBTUSDT.csv" in result.output


def test_a_changed_source_symbol_is_drift_and_resolve_fetches_it_again(
        project: Project) -> None:
    daily_csv(project.root / "XBTUSDT.csv", "2000-01-01", "2000-02-29", seed=3)
    daily_csv(project.root / "XXBTZUSD.csv", "2000-01-01", "2000-02-29", seed=7)
    daily_csv(project.root / "ETHUSD.csv", "2000-01-01", "2000-02-29", seed=8)
    setup(project, "      - {symbol: BTCUSD, source_symbol: XBTUSDT}\n      - ETHUSD\n")
    expect(project.run("resolve"), 0)
    expect(project.run("check"), 0)  # records the inputs digest: the light path is armed
    before = read_lock(project.lock)

    project.edit_manifest("source_symbol: XBTUSDT", "source_symbol: XXBTZUSD")
    drift = expect(project.run("check"), 1)
    assert ("stocks/BTCUSD: source_symbol of BTCUSD changed: lock has 'XBTUSDT', "
            "seamless.yaml has 'XXBTZUSD'") in drift.output
    assert "ETHUSD" not in drift.output
    expect(project.run("resolve", "--locked"), 1)
    shutil.copy(project.lock, project.root / "old.lock")

    result = expect(project.run("resolve"), 0)
    assert "updated   stocks/BTCUSD: changed source_symbol; fetched 2, reused 0 partitions" \
        in result.output
    after = read_lock(project.lock)
    assert after.entry("stocks", "BTCUSD").dataset_fingerprint != \
        before.entry("stocks", "BTCUSD").dataset_fingerprint
    assert after.entry("stocks", "ETHUSD") == before.entry("stocks", "ETHUSD")
    expect(project.run("check"), 0)
    diff = expect(project.run("diff", "old.lock", "seamless.lock"), 1).output
    assert "request symbol_settings.BTCUSD.source_symbol: XBTUSDT → XXBTZUSD" in diff
    assert "2000-01 (31 rows, content changed)" in diff

    # Removing the mapping goes back to reading BTCUSD.csv: drift again, with None.
    project.edit_manifest("{symbol: BTCUSD, source_symbol: XXBTZUSD}", "BTCUSD")
    drift = expect(project.run("check", "--json"), 1)
    [item] = json.loads(drift.output)["drift"]
    assert (item["symbol"], item["kind"]) == ("BTCUSD", "request")
    assert "seamless.yaml has None" in item["detail"]


def test_a_changed_listing_date_is_drift_for_that_symbol(project: Project) -> None:
    daily_csv(project.root / "A.csv", "2000-01-01", "2000-02-29", seed=1)
    daily_csv(project.root / "B.csv", "2000-01-01", "2000-02-29", seed=2)
    setup(project, "      - A\n      - {symbol: B, start: 2000-02-01}\n")
    expect(project.run("resolve"), 0)
    project.edit_manifest("start: 2000-02-01", "start: 2000-01-10")
    drift = expect(project.run("check"), 1)
    assert "stocks/B: start of B changed: lock has '2000-02-01', seamless.yaml has " \
        "'2000-01-10'" in drift.output
    result = expect(project.run("resolve"), 0)
    assert "updated   stocks/B: changed symbol start" in result.output
    assert "stocks/A" not in result.output.replace("unchanged stocks/A", "")
    assert bounds(project, "B")[0] == "2000-01-10T00:00:00Z"


# -- show ----------------------------------------------------------------------------------------
def test_show_names_our_symbol_and_the_source_symbol(project: Project) -> None:
    daily_csv(project.root / "XBTUSDT.csv", "2000-01-01", "2000-02-29", seed=3)
    daily_csv(project.root / "ETHUSD.csv", "2000-02-01", "2000-02-29", seed=8)
    setup(project, "      - {symbol: BTCUSD, source_symbol: XBTUSDT}\n"
                   "      - {symbol: ETHUSD, start: 2000-02-01}\n")
    expect(project.run("resolve"), 0)
    lines = expect(project.run("show"), 0).output.splitlines()
    assert lines[0].split() == ["DATASET", "SYMBOL", "SOURCE_SYMBOL", "COVERAGE", "ROWS",
                                "FINGERPRINT", "FLAGS", "EXPIRES"]
    assert lines[1].split()[:6] == ["stocks", "BTCUSD", "XBTUSDT", "2000-01-01", "..",
                                    "2000-03-01"]
    assert lines[2].split()[:6] == ["stocks", "ETHUSD", "-", "2000-02-01", "..", "2000-03-01"]
    rows = json.loads(expect(project.run("show", "--json"), 0).output)
    assert [(r["symbol"], r.get("source_symbol")) for r in rows] == [
        ("BTCUSD", "XBTUSDT"), ("ETHUSD", None)]


# -- manifests without the new keys keep their lock ----------------------------------------------
def test_mappings_with_only_a_symbol_keep_the_lock_byte_for_byte(project: Project) -> None:
    daily_csv(project.root / "A.csv", "2000-01-01", "2000-02-29", seed=1)
    daily_csv(project.root / "B.csv", "2000-01-01", "2000-02-29", seed=2)
    setup(project, "      - A\n      - B\n")
    expect(project.run("resolve"), 0)
    text = project.lock.read_bytes()
    assert b"symbol_settings" not in text
    setup(project, "      - {symbol: A}\n      - symbol: B\n        source_symbol: B\n")
    expect(project.run("check"), 0)
    expect(project.run("resolve", "--locked"), 0)
    assert project.lock.read_bytes() == text


# -- mistakes: one message each, with file, line and fix -----------------------------------------
BAD = [
    ("unknown_key", "      - A\n      - {symbol: B, listed: 2000-02-01}\n", 8,
     "unknown key 'listed'"),
    ("start_after_end", "      - {symbol: A, start: 2000-02-10, end: 2000-02-01}\n", 7,
     "at or after end 2000-02-01"),
    ("duplicate_symbol", "      - A\n      - {symbol: A, start: 2000-02-01}\n", 8,
     "symbol A is listed twice"),
    ("one_source_symbol_twice", "      - A\n      - {symbol: B, source_symbol: A}\n", 8,
     "both read source symbol A over the same bars"),
    ("bad_date", "      - {symbol: A, start: 2000-02-30}\n", 7,
     "invalid value '2000-02-30': day is out of range"),
    ("date_without_dashes", "      - {symbol: A, end: 20000201}\n", 7, "a number is not a date"),
    ("end_now", "      - {symbol: A, end: now}\n", 7, "`now` is only allowed as a dataset's end"),
    ("delisted_before_the_dataset", "      - A\n      - {symbol: B, end: 1999-06-01}\n", 8,
     "no bars in the dataset's range"),
    ("listed_after_the_dataset", "      - {symbol: A, start: 2000-03-01}\n", 7,
     "no bars in the dataset's range"),
    ("missing_symbol", "      - {source_symbol: XBTUSDT}\n", 7, "missing required key 'symbol'"),
    ("number_symbol", "      - 700\n", 7, "symbol 700 is neither a name nor a mapping"),
    ("bad_source_symbol", "      - {symbol: A, source_symbol: ../etc}\n", 7,
     "invalid symbol '../etc'"),
]


@pytest.mark.parametrize(("symbols", "line", "needle"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_a_mistake_in_a_symbol_is_one_exit_2_message(project: Project, snapshot: object,
                                                       symbols: str, line: int,
                                                       needle: str) -> None:
    setup(project, symbols)
    for command in ("check", "resolve"):
        result = expect(project.run(command), 2)
        assert needle in result.output
        assert f"seamless.yaml:{line}" in result.output
        assert "Traceback" not in result.output
    assert not project.lock.exists()
    with pytest.raises(ManifestError) as info:
        load_manifest(project.manifest)
    assert str(info.value).replace(str(project.root), "<tmp>") == snapshot


# -- merging locks -------------------------------------------------------------------------------
def _merge_lock(settings: list[dict[str, str]], **entries: str) -> Lockfile:
    """A lock of one dataset ``a`` whose symbols' entries have the given fingerprint digits."""
    symbols = {s: SymbolEntry(
        dataset_fingerprint="sha256:" + fp * 64, coverage_bounds=(0, 2 * DAY_MS), as_of=0,
        rows=2, partitions=1, conformance_flags={"gap_bars": 0},
        sla={"deadline_ms": 60000, "violation": None}, retention_class="default",
        expires_at=None) for s, fp in entries.items()}
    request: dict[str, object] = {"preset": "ohlcv.vendor.crypto.1d", "symbols": sorted(symbols)}
    if settings:
        request["symbol_settings"] = settings
    request.update({"start": "1970-01-01", "end": "1970-01-03", "contract_version": "v1"})
    return Lockfile({"a": DatasetEntry(request, "sha256:" + "d" * 64, symbols)})


def test_branches_that_set_up_different_symbols_merge_per_symbol() -> None:
    base = _merge_lock([], X="0")
    ours = _merge_lock([{"symbol": "V", "source_symbol": "VV"}], X="0", V="1")
    theirs = _merge_lock([{"symbol": "W", "start": "1970-01-02"}], X="0", W="2")
    one, two = merge(base, ours, theirs), merge(base, theirs, ours)
    assert one.clean and two.clean, (one.conflicts, two.conflicts)
    assert render(one.lock) == render(two.lock)
    merged = one.lock.datasets["a"]
    assert merged.request["symbol_settings"] == [{"symbol": "V", "source_symbol": "VV"},
                                                 {"symbol": "W", "start": "1970-01-02"}]
    # a branch that drops the symbol drops its settings too
    dropped = merge(ours, ours, _merge_lock([], X="0"))
    assert dropped.clean and "symbol_settings" not in dropped.lock.datasets["a"].request


def test_an_entry_resolved_under_other_settings_of_its_symbol_is_a_conflict() -> None:
    """Ours moved X to another source symbol that gave the same rows (the entry stayed); theirs
    resolved X again under the old one: that entry is not what the merged settings ask for."""
    base = _merge_lock([], X="0", Y="1")
    ours = _merge_lock([{"symbol": "X", "source_symbol": "XX"}], X="0", Y="1")
    theirs = _merge_lock([], X="3", Y="1")
    result = merge(base, ours, theirs)
    assert [c.line() for c in result.conflicts] == [
        "a/X: the entry from their branch was resolved for another request than the merged "
        "one: our branch changed settings of X"]
    both = merge(base, ours, _merge_lock([{"symbol": "X", "source_symbol": "XY"}], X="0", Y="1"))
    assert [c.line() for c in both.conflicts] == [
        "a/X: both branches changed the settings of X: ours {'source_symbol': 'XX'}, theirs "
        "{'source_symbol': 'XY'}"]


# -- the documented examples ---------------------------------------------------------------------
def _fenced_yaml(text: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_the_example_of_docs_sources_md_is_a_manifest_with_those_ranges(tmp_path: Path) -> None:
    [text] = [b for b in _fenced_yaml((ROOT / "docs" / "sources.md").read_text(encoding="utf-8"))
              if "all_tickers" in b]
    (tmp_path / "presets.yaml").write_text(vendor_catalog("year").replace(
        "ohlcv.vendor.crypto.1d", "ohlcv.vendor.us_equity.1d"), encoding="utf-8")
    (tmp_path / "seamless.yaml").write_text(text, encoding="utf-8")
    ds = load_manifest(tmp_path / "seamless.yaml").datasets["all_tickers"]
    day = to_ms("2000-01-01")
    assert ds.symbol_range("AAPL") == (day, None)  # follows `end: now`
    assert ds.symbol_range("META") == (to_ms("2012-05-18"), None)
    assert ds.symbol_range("LEH") == (day, to_ms("2008-09-16"))
    assert [ds.source_symbol(s) for s in ("AAPL", "META", "LEH", "BRK.B")] == [
        "AAPL", "FB", "LEH", "BRK-B"]


def test_the_readme_example_resolves_a_renamed_later_listing_from_the_shipped_data(
        project: Project) -> None:
    """The README's symbols with the built-in Quandl WIKI data (which has FB from its 2012
    listing, no LEH): META is read as FB from its listing on, in the dataset from 2001."""
    [fragment] = _fenced_yaml(section("Listings, delistings and vendor names"))
    symbols = "".join(line + "\n" for line in fragment.splitlines() if "LEH" not in line)
    project.write_manifest(
        "version: 1\ndatasets:\n  us:\n    preset: ohlcv.quandl_wiki.us_equity.1d\n" + symbols
        + "    start: 2001-01-01\n    end: 2013-01-01\n    contract_version: v1\n")
    expect(project.run("resolve"), 0)
    lock = read_lock(project.lock)
    meta = lock.entry("us", "META")
    assert meta is not None and meta.coverage_bounds == (to_ms("2012-05-18"), to_ms("2013-01-01"))
    assert Lock.open(project.lock).load("us", "META").num_rows == meta.rows == 155
    expect(project.run("check"), 0)


def test_a_listing_still_to_come_under_end_now_is_bad_input_at_its_line(
        project: Project) -> None:
    daily_csv(project.root / "LIVE.csv", "2024-05-01", "2024-06-10")
    setup(project, "      - LIVE\n      - {symbol: SOON, start: 2024-07-01}\n",
          start="2024-05-01", end="now")
    result = expect(project.run("resolve"), 2)
    assert "symbol SOON of dataset 'stocks': nothing to resolve, its start " \
        "2024-07-01T00:00:00Z is not before the last closed bar 2024-06-01T00:00:00Z" \
        in result.output
    assert "seamless.yaml:8" in result.output and "add SOON once it has closed bars" \
        in result.output
    assert not project.lock.exists()


def test_the_source_symbol_enters_the_job_key_but_not_the_fingerprint_header() -> None:
    """Checkpoints of one source symbol are never taken for another's, while the header (what
    the data is) stays the one of our symbol."""
    from dataclasses import replace

    from qmtl_engine import Request, TimeRange, load_registry

    preset = load_registry([]).get("ohlcv.synthetic.crypto.1m")
    plain = Request(preset, "BTCUSD", TimeRange(0, 86_400_000), "v1")
    renamed = replace(plain, source_symbol="XBTUSDT")
    assert (plain.fetch_symbol, renamed.fetch_symbol) == ("BTCUSD", "XBTUSDT")
    assert renamed.job_key() != plain.job_key()
    assert renamed.header() == plain.header()


def test_a_network_source_is_asked_for_the_source_symbol(project: Project) -> None:
    """binance_vision on a real HTTP server: our BTCUSD is fetched from the archive's BTCUSDT
    folder; the lock and the loaded table say BTCUSD."""
    from http_server import serve
    from test_binance_vision import FAST, build_archive, route_archive

    day = TimeRange(to_ms("2024-01-01"), to_ms("2024-01-03"))
    archive = build_archive(["BTCUSDT"], day, 60_000)
    for server in serve():
        route_archive(server, archive)
        options = {"market": "spot", "base_url": server.url, **FAST}
        (project.root / "binance.yaml").write_text(
            "version: 1\ndata_presets:\n  ohlcv.local_binance.spot.1m:\n    kind: ohlcv\n"
            "    interval_ms: 60000\n    contract: {name: ohlcv, version: v1}\n"
            "    calendar: 24x7\n    partition: day\n"
            f"    source: {{name: binance_vision, options: {json.dumps(options)}}}\n"
            "    sla_preset: baseline\n    conformance_preset: strict-blocking\n",
            encoding="utf-8")
        project.write_manifest(
            "version: 1\npresets: [binance.yaml]\ndatasets:\n  btc:\n"
            "    preset: ohlcv.local_binance.spot.1m\n"
            "    symbols: [{symbol: BTCUSD, source_symbol: BTCUSDT}]\n"
            "    start: 2024-01-01\n    end: 2024-01-03\n    contract_version: v1\n")
        expect(project.run("resolve"), 0)
        assert server.count("/data/spot/daily/klines/BTCUSDT/1m/") >= 2
        assert server.count("/data/spot/daily/klines/BTCUSD/") == 0
    assert list(read_lock(project.lock).datasets["btc"].symbols) == ["BTCUSD"]
    table = Lock.open(project.lock).load("btc", "BTCUSD")
    assert table.num_rows == 2 * 1440
    assert table["close"].equals(archive.bars["BTCUSDT"]["close"])


def test_the_manifest_schema_takes_names_and_mappings_and_refuses_unknown_keys() -> None:
    schema = json.loads((ROOT / "schemas" / "seamless.schema.json").read_text(encoding="utf-8"))

    def manifest(*symbols: object) -> dict[str, object]:
        return {"version": 1, "datasets": {"d": {
            "preset": "p", "symbols": list(symbols), "start": "2000-01-01", "end": "now",
            "contract_version": "v1"}}}

    jsonschema.validate(manifest("A", {"symbol": "B", "source_symbol": "XB",
                                       "start": "2001-01-01", "end": "2002-01-01"}), schema)
    for bad in ({"symbol": "B", "listed": "2001-01-01"}, {"source_symbol": "XB"}, 7):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(manifest("A", bad), schema)


def test_the_kraken_recipe_pins_the_pair_under_our_name(project: Project) -> None:
    """The cookbook's Kraken recipe, on its fixture, with the source symbol its note gives:
    ``records: result.{symbol}`` and the file name take XXBTZUSD, the lock says BTCUSD."""
    from test_cookbook import DOCUMENTED, FIXTURES

    recipe = DOCUMENTED["kraken"]
    shutil.copytree(FIXTURES / "kraken", project.root / "data" / "kraken")
    (project.root / "presets.yaml").write_text(recipe.files["presets.yaml"], encoding="utf-8")
    manifest = recipe.files["seamless.yaml"].replace(
        "symbols: [XXBTZUSD]", "symbols: [{symbol: BTCUSD, source_symbol: XXBTZUSD}]")
    assert manifest != recipe.files["seamless.yaml"]
    project.write_manifest(manifest)
    expect(project.run("resolve"), 0)
    assert list(read_lock(project.lock).datasets["kraken_btc"].symbols) == ["BTCUSD"]
    table = Lock.open(project.lock).load("kraken_btc", "BTCUSD")
    assert table.num_rows == 48 and table["open"][0].as_py() == 30765.4


def test_a_lock_with_edited_symbol_settings_is_refused_at_its_line(project: Project) -> None:
    daily_csv(project.root / "XBTUSDT.csv", "2000-01-01", "2000-02-29")
    setup(project, "      - {symbol: BTCUSD, source_symbol: XBTUSDT}\n")
    expect(project.run("resolve"), 0)
    project.edit_lock("source_symbol: XBTUSDT", "vendor: XBTUSDT")
    result = expect(project.run("check"), 2)
    assert "invalid seamless.lock" in result.output and "vendor" in result.output
    assert "seamless.lock:" in result.output and "qmtl-lock resolve" in result.output
