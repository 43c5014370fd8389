"""Preset catalogs: built-ins, merging user catalogs, and the errors a catalog author reads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from qmtl_engine.errors import PresetError, YAMLFileError
from qmtl_engine.flags import FLAG_NAMES
from qmtl_engine.presets import OnViolation, load_registry

BUILTIN_IDS = {
    "ohlcv.binance.spot.1m",
    "ohlcv.polygon.us_equity.1d",
    "ohlcv.quandl_wiki.us_equity.1d",
    "ohlcv.synthetic.crypto.1m",
    "ohlcv.synthetic.crypto.1h",
}

PRESET = """\
version: 1
data_presets:
  {pid}:
    kind: ohlcv
    interval_ms: {interval_ms}
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    source: {{name: {source}, options: {{seed: 1}}}}
    sla_preset: {sla}
    conformance_preset: {conformance}
{extra}"""


def catalog(pid: str = "ohlcv.mine.crypto.1h", *, interval_ms: int = 3_600_000,
            source: str = "synthetic", sla: str = "baseline",
            conformance: str = "strict-blocking", extra: str = "") -> str:
    return PRESET.format(pid=pid, interval_ms=interval_ms, source=source, sla=sla,
                         conformance=conformance, extra=textwrap.indent(extra, "    "))


def test_builtins_are_present_with_qmtl_names() -> None:
    registry = load_registry()
    assert set(registry.ids()) >= BUILTIN_IDS
    strict = registry.get("ohlcv.synthetic.crypto.1m").conformance
    assert not strict.partial_ok
    # strict-blocking refuses what means data is wrong or missing ...
    assert {"duplicate_ts", "off_grid_ts", "invalid_timestamp", "gap_bars", "non_finite",
            "negative_value", "ohlc_inconsistent", "repeated_bars",
            "missing_column"} == set(strict.block)
    # ... and lets safe normalizations pass with a count
    assert {"dtype_cast", "ts_unit_inferred", "ts_timezone_normalized", "unsorted_ts",
            "duplicate_rows", "out_of_range", "off_calendar_bars",
            "price_jump"} == set(FLAG_NAMES) - set(
                strict.block)
    assert registry.get("ohlcv.synthetic.crypto.1m").sla.on_violation is OnViolation.FAIL_FAST


def test_builtin_sla_and_conformance_presets_exist() -> None:
    registry = load_registry(extra={"x.yaml": catalog(sla="tolerant-partial",
                                                      conformance="permissive-dev")})
    mine = registry.get("ohlcv.mine.crypto.1h")
    assert mine.sla.on_violation is OnViolation.PARTIAL_FILL
    assert mine.conformance.partial_ok


def test_user_catalog_adds_presets() -> None:
    registry = load_registry(extra={"mine.yaml": catalog()})
    preset = registry.get("ohlcv.mine.crypto.1h")
    assert preset.catalog == "mine.yaml"
    assert preset.partition == "year"  # default follows the interval


def test_redefining_a_builtin_needs_override() -> None:
    text = catalog("ohlcv.synthetic.crypto.1h")
    with pytest.raises(PresetError) as info:
        load_registry(extra={"mine.yaml": text})
    assert "already defined in the built-in catalog" in str(info.value)
    assert "override: true" in str(info.value)
    assert info.value.line == 3
    registry = load_registry(extra={"mine.yaml": catalog("ohlcv.synthetic.crypto.1h",
                                                         extra="override: true\n")})
    assert registry.get("ohlcv.synthetic.crypto.1h").catalog == "mine.yaml"


def test_interval_in_id_must_match_interval_ms() -> None:
    with pytest.raises(PresetError) as info:
        load_registry(extra={"mine.yaml": catalog("ohlcv.mine.crypto.1m")})
    message = str(info.value)
    assert "says interval 1m in its id but interval_ms: 3600000 (1h)" in message
    assert "set interval_ms: 60000" in message
    assert info.value.line == 5  # the interval_ms line


@pytest.mark.parametrize("pid", ["ohlcv.mine.1h", "OHLCV.mine.crypto.1h", "ohlcv.mine.crypto.x"])
def test_bad_ids_are_refused(pid: str) -> None:
    with pytest.raises(PresetError):
        load_registry(extra={"mine.yaml": catalog(pid)})


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"sla": "nope"}, "names unknown sla preset 'nope'"),
        ({"conformance": "nope"}, "names unknown conformance preset 'nope'"),
        ({"source": "ftp"}, "unknown source 'ftp'"),
        ({"extra": "colour: blue\n"}, "unknown key 'colour'"),
    ],
)
def test_catalog_errors_name_the_problem_and_line(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises((PresetError, YAMLFileError)) as info:
        load_registry(extra={"mine.yaml": catalog(**kwargs)})
    assert words in str(info.value)
    assert "mine.yaml:" in str(info.value)


def test_unknown_flag_and_violation_mode_are_load_errors() -> None:
    bad_flag = "version: 1\nconformance_presets:\n  x: {block: [gaps]}\n"
    with pytest.raises(YAMLFileError, match="unknown conformance flags"):
        load_registry(extra={"c.yaml": bad_flag})
    bad_mode = "version: 1\nsla_presets:\n  x: {on_violation: retry}\n"
    with pytest.raises(YAMLFileError, match="on_violation"):
        load_registry(extra={"s.yaml": bad_mode})


def test_catalog_file_paths_are_relative_to_the_catalog(tmp_path: Path) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    (folder / "vendor.yaml").write_text(catalog(), encoding="utf-8")
    registry = load_registry([folder / "vendor.yaml"])
    assert registry.get("ohlcv.mine.crypto.1h").base_dir == str(folder.resolve())
    with pytest.raises(PresetError, match="does not exist"):
        load_registry([tmp_path / "missing.yaml"])


def test_unknown_preset_suggests_a_close_id() -> None:
    with pytest.raises(PresetError) as info:
        load_registry().get("ohlcv.synthetic.crypto.1n")
    assert "did you mean 'ohlcv.synthetic.crypto.1m'" in str(info.value)


def test_preset_digest_covers_the_definition() -> None:
    a = load_registry(extra={"a.yaml": catalog()}).get("ohlcv.mine.crypto.1h")
    b = load_registry(extra={"a.yaml": catalog(extra="stabilization_bars: 3\n")}).get(
        "ohlcv.mine.crypto.1h")
    c = load_registry(extra={"a.yaml": catalog(extra="description: words only\n")}).get(
        "ohlcv.mine.crypto.1h")
    assert a.digest() != b.digest()
    assert a.digest() == c.digest()  # a description is not part of what the data means


def test_preset_with_a_live_feed_needs_a_live_block(tmp_path: Path) -> None:
    from qmtl_lock.errors import ManifestError
    from qmtl_lock.manifest import load_manifest

    (tmp_path / "live.yaml").write_text(catalog(extra="live: {feed: websocket}\n"),
                                        encoding="utf-8")
    body = textwrap.dedent("""\
        version: 1
        presets: [live.yaml]
        datasets:
          ticks:
            preset: ohlcv.mine.crypto.1h
            symbols: [BTCUSDT]
            start: 2024-01-01
            end: 2024-01-02
            contract_version: v1
        """)
    (tmp_path / "seamless.yaml").write_text(body, encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "seamless.yaml")
    assert "declares a live feed" in str(info.value) and "seamless.yaml:5" in str(info.value)
    (tmp_path / "seamless.yaml").write_text(
        body + "    live: {url: wss://example.invalid/stream}\n", encoding="utf-8")
    assert load_manifest(tmp_path / "seamless.yaml").datasets["ticks"].spec.live is not None
