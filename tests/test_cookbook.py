"""Every recipe of docs/cookbook.md, run as written on a file in its vendor's exact format.

Each recipe's YAML blocks are copied out of the page (so the page is what is tested) into an empty
project, next to the fixture files of tests/fixtures/vendors/<vendor>/ (placed under data/, where
the recipes' ``url`` points); ``qmtl-lock resolve`` runs through click's CliRunner and the result
is loaded through ``Lock.open(...).load(...)``. The only edit is the Polygon API recipe's
``base_url``, pointed at a local server that answers as Polygon does.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import Project, expect
from http_server import Server, serve
from qmtl_engine.ranges import HOUR_MS, TimeRange, to_ms
from qmtl_engine.sources import make_source

from qmtl_lock import Lock
from qmtl_lock.lockfile import read_lock

ROOT = Path(__file__).resolve().parents[1]
COOKBOOK = ROOT / "docs" / "cookbook.md"
FIXTURES = ROOT / "tests" / "fixtures" / "vendors"
MARKER = re.compile(r"^<!-- recipe: ([\w-]+) -->$", re.MULTILINE)
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Expect:
    """What the lock must hold after the recipe: one symbol's rows, first and last bar, flags."""

    fixture: str
    dataset: str
    symbol: str
    rows: int
    first: tuple[str, float, float]  # ts, open, close
    last: tuple[str, float, float]
    flags: dict[str, int] = field(default_factory=dict)  # flags that must have these counts
    extra: tuple[str, ...] = ()  # optional contract columns the recipe maps


# Flags no recipe may show: each of them would mean a row was lost or misread.
NEVER = ("missing_column", "invalid_timestamp", "duplicate_ts", "off_grid_ts", "gap_bars",
         "non_finite", "negative_value", "ohlc_inconsistent", "repeated_bars")

RECIPES = {
    "yahoo": Expect("yahoo", "us_daily", "AAPL", 9,
                    ("2024-01-02", 187.15, 187.796761), ("2024-01-12", 184.149371, 183.454014)),
    "stooq": Expect("stooq", "stooq_daily", "aapl", 9,
                    ("2024-01-02", 186.02, 189.82), ("2024-01-12", 186.94, 188.59)),
    "dukascopy": Expect("dukascopy", "fx", "EURUSD", 120,
                        ("2024-01-07T22:00:00Z", 1.09356, 1.09299),
                        ("2024-01-12T21:00:00Z", 1.09488, 1.09616)),
    "cryptodatadownload": Expect("cryptodatadownload", "btc_hourly", "BTCUSDT", 48,
                                 ("2024-01-01T00:00:00Z", 42283.58, 42147.95),
                                 ("2024-01-02T23:00:00Z", 41609.95, 41616.04),
                                 {"unsorted_ts": 47}, ("quote_volume",)),
    "binance": Expect("binance-mirror", "btc_1h", "BTCUSDT", 48,
                      ("2024-01-01T00:00:00Z", 42283.58, 42461.70),
                      ("2024-01-02T23:00:00Z", 42587.68, 42581.77),
                      extra=("trades", "quote_volume")),
    "polygon": Expect("polygon", "aapl_polygon", "AAPL", 9,
                      ("2024-01-02", 187.15, 187.21), ("2024-01-12", 182.83, 181.47),
                      extra=("trades",)),
    "polygon-json": Expect("polygon", "btc_polygon", "BTCUSD", 48,
                           ("2023-07-05T00:00:00Z", 30768.0, 30632.21),
                           ("2023-07-06T23:00:00Z", 29541.04, 29443.1), extra=("trades",)),
    "kraken": Expect("kraken", "kraken_btc", "XXBTZUSD", 48,
                     ("2023-07-05T00:00:00Z", 30765.4, 30765.6),
                     ("2023-07-06T23:00:00Z", 29735.1, 29816.0),
                     {"ts_unit_inferred": 48}, ("trades",)),
    "okx": Expect("okx", "okx_btc", "BTC-USDT", 48,
                  ("2023-07-05T00:00:00Z", 30760.1, 30546.2),
                  ("2023-07-06T23:00:00Z", 31381.9, 31307.8),
                  {"unsorted_ts": 47}, ("quote_volume",)),
    "coinbase": Expect("coinbase", "coinbase_btc", "BTC-USD", 48,
                       ("2023-07-05T00:00:00Z", 30770.01, 30671.20),
                       ("2023-07-06T23:00:00Z", 31386.04, 31340.62), {"unsorted_ts": 47}),
}


@dataclass(frozen=True)
class Recipe:
    name: str
    files: dict[str, str]  # file name (the block's first-line comment) -> YAML text
    samples: list[str]  # lines of the recipe's ```text blocks


def recipes() -> dict[str, Recipe]:
    text = COOKBOOK.read_text(encoding="utf-8")
    parts = MARKER.split(text)
    out = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.split("\n## ", 1)[0]  # the recipe ends where the next section starts
        files, samples = {}, []
        for lang, block in FENCE.findall(body):
            if lang == "yaml":
                first = block.splitlines()[0]
                assert first.startswith("# "), f"{name}: a yaml block must name its file"
                files[first[2:].strip()] = block
            elif lang == "text":
                samples += [line for line in block.splitlines() if line.strip() != "..."]
        out[name] = Recipe(name, files, samples)
    return out


DOCUMENTED = recipes()


def test_every_recipe_is_tested_and_every_test_is_a_recipe() -> None:
    assert sorted(DOCUMENTED) == sorted(RECIPES)
    for recipe in DOCUMENTED.values():
        assert sorted(recipe.files) == ["presets.yaml", "seamless.yaml"], recipe.name


def fixture_text(folder: Path) -> str:
    """Every fixture file's text, zip members included (the Binance archive)."""
    texts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        texts.append(str(path.relative_to(folder)))
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                texts += [z.read(n).decode() for n in z.namelist()]
        else:
            texts.append(path.read_text(encoding="utf-8"))
    return "\n".join(texts)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_sample_lines_shown_are_the_fixtures_own(name: str) -> None:
    """What a recipe shows of the vendor's file is what the tested file holds."""
    recipe, exp = DOCUMENTED[name], RECIPES[name]
    assert recipe.samples, f"{name} shows no sample of the vendor's file"
    text = fixture_text(FIXTURES / exp.fixture)
    for line in recipe.samples:
        shown = line.strip().removeprefix(f"data/{exp.fixture}/")
        assert shown in text, f"{name}: {line!r} is not in the fixture"


@pytest.fixture
def polygon_server() -> Iterator[Server]:
    yield from serve()


def install(project: Project, recipe: Recipe, exp: Expect, server: Server | None) -> None:
    shutil.copytree(FIXTURES / exp.fixture, project.root / "data" / exp.fixture)
    for name, text in recipe.files.items():
        if server is not None:
            assert "base_url: https://api.polygon.io" in text or name != "presets.yaml"
            text = text.replace("https://api.polygon.io", server.url)
        (project.root / name).write_text(text, encoding="utf-8")


def serve_polygon(server: Server) -> None:
    from test_polygon import KEY, PolygonEmulator, watch_headers

    saved = json.loads((FIXTURES / "polygon" / "AAPL_day_2024-01-01_2024-01-12.json").read_text())
    server.routes = PolygonEmulator({"AAPL": saved["results"]}, key=KEY)
    watch_headers(server)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_resolves_and_loads_through_the_lock(
        name: str, project: Project, polygon_server: Server,
        monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, exp = DOCUMENTED[name], RECIPES[name]
    server = None
    if name == "polygon":
        from test_polygon import KEY

        server = polygon_server
        serve_polygon(server)
        monkeypatch.setenv("POLYGON_API_KEY", KEY)
    install(project, recipe, exp, server)
    expect(project.run("resolve"), 0)

    table = Lock.open(project.lock).load(exp.dataset, exp.symbol)
    assert table.num_rows == exp.rows
    assert table.column_names == ["ts", "open", "high", "low", "close", "volume", *exp.extra]
    rows = table.to_pylist()
    for row, (when, open_, close) in ((rows[0], exp.first), (rows[-1], exp.last)):
        assert int(row["ts"].timestamp() * 1000) == to_ms(when)
        assert (row["open"], row["close"]) == (open_, close)
    entry = read_lock(project.lock).datasets[exp.dataset].symbols[exp.symbol]
    flags = {k: v for k, v in entry.conformance_flags.items() if v}
    for flag, count in exp.flags.items():
        assert flags.get(flag) == count, (flag, flags)
    assert not {f: flags[f] for f in NEVER if f in flags}


@pytest.mark.parametrize(("name", "ms_per_unit"), [("kraken", 1000), ("okx", 1)])
def test_the_bar_a_dump_marks_open_is_never_delivered(name: str, ms_per_unit: int,
                                                      tmp_path: Path) -> None:
    """The recipes' dumps hold the bar still forming (2023-07-07 00:00); their options leave it
    out even when the window asks for it."""
    recipe, exp = DOCUMENTED[name], RECIPES[name]
    open_bar = to_ms("2023-07-07")
    assert f"{open_bar // ms_per_unit}" in fixture_text(FIXTURES / exp.fixture)
    shutil.copytree(FIXTURES / exp.fixture, tmp_path / "data" / exp.fixture)
    [preset] = yaml.safe_load(recipe.files["presets.yaml"])["data_presets"].values()
    src = make_source("files", preset["source"]["options"], base_dir=str(tmp_path))
    window = TimeRange(to_ms("2023-07-01"), to_ms("2023-08-01"))
    times = [int(t) * ms_per_unit for t in src.fetch(exp.symbol, window, HOUR_MS).table["ts"]
             .to_pylist()]
    assert len(times) == 48 and max(times) == open_bar - HOUR_MS
