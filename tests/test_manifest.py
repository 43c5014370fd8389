"""seamless.yaml errors: each names the file, the line and the key, and says what to do.

The rendered text (``str(exc)``) is what a user reads, so it is kept as a syrupy snapshot, with the
temp directory replaced by ``<tmp>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MANIFEST

from qmtl_lock.errors import InputError, ManifestError
from qmtl_lock.manifest import load_manifest, when_text


def _load_error(tmp_path: Path, text: str) -> ManifestError:
    path = tmp_path / "seamless.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value


def _replace(old: str, new: str) -> str:
    assert old in MANIFEST, old
    return MANIFEST.replace(old, new, 1)


def _line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line number of the nth line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


# (id, manifest text, needle on the expected line (nth occurrence), expected key, message part)
CASES = [
    ("malformed_yaml",
     _replace("    symbols: [BTCUSDT, ETHUSDT]\n", "    symbols: [BTCUSDT, ETHUSDT\n"),
     ("start: 2024-01-30", 1), None, "not valid YAML"),
    ("unknown_top_level_key",
     _replace("store: .seamless/store\n", "store: .seamless/store\nstorage: s3://x\n"),
     ("storage:", 1), "storage", "unknown key 'storage'"),
    ("unknown_dataset_key",
     _replace("    retention_class: research-short\n",
              "    retention_class: research-short\n    colour: red\n"),
     ("colour:", 1), "datasets.crypto.colour", "unknown key 'colour'"),
    ("bad_date",
     _replace("start: 2024-01-30", 'start: "2024-01-3x"'),
     ("start:", 1), "datasets.crypto.start", "invalid date '2024-01-3x'"),
    ("bad_time",
     _replace("end: 2024-02-02", 'end: "2024-02-02T25:00:00Z"'),
     ("end:", 1), "datasets.crypto.end", "invalid date"),
    ("start_after_end",
     _replace("start: 2024-01-30", "start: 2024-02-05"),
     ("end: 2024-02-02", 1), "datasets.crypto.end", "at or after end"),
    ("start_equals_end",
     _replace("start: 2011-01-01", "start: 2013-01-01"),
     ("end: 2013-01-01", 1), "datasets.equities.end", "at or after end"),
    ("start_now",
     _replace("start: 2024-01-30", "start: now"),
     ("start: now", 1), "datasets.crypto.start", "start cannot be `now`"),
    ("unknown_preset",
     _replace("ohlcv.synthetic.crypto.1m", "ohlcv.synthetic.crypto.1mn"),
     ("preset:", 1), "datasets.crypto.preset", "did you mean 'ohlcv.synthetic.crypto.1m'"),
    ("contract_version_not_offered",
     _replace("    contract_version: v1\n    retention_class",
              "    contract_version: v2\n    retention_class"),
     ("contract_version: v2", 1), "datasets.crypto.contract_version", "offers ohlcv@v1"),
    ("symbol_path_traversal",
     _replace("[BTCUSDT, ETHUSDT]", '[BTCUSDT, "../x"]'),
     ("symbols:", 1), "datasets.crypto.symbols.1", "invalid symbol '../x'"),
    ("symbol_with_two_slashes",
     _replace("[BTCUSDT, ETHUSDT]", '[BTCUSDT, "a/b/c"]'),
     ("symbols:", 1), "datasets.crypto.symbols.1", "invalid symbol 'a/b/c'"),
    ("symbol_empty",
     _replace("[BTCUSDT, ETHUSDT]", '[BTCUSDT, ""]'),
     ("symbols:", 1), "datasets.crypto.symbols.1", "invalid symbol ''"),
    ("symbols_empty_list",
     _replace("[BTCUSDT, ETHUSDT]", "[]"),
     ("symbols:", 1), "datasets.crypto.symbols", "at least 1"),
    ("duplicated_symbols",
     _replace("[AAPL, MSFT]", "[AAPL, MSFT, AAPL]"),
     ("symbols:", 2), "datasets.equities.symbols.2", "symbol AAPL is listed twice"),
    ("duplicate_yaml_key_in_dataset",
     _replace("    end: 2013-01-01\n", "    end: 2013-01-01\n    end: 2012-01-01\n"),
     ("end: 2012-01-01", 1), "datasets.equities.end", "duplicate key 'end'"),
    ("duplicate_dataset_name",
     MANIFEST + "  crypto:\n    preset: ohlcv.synthetic.crypto.1h\n",
     ("crypto:", 2), "datasets.crypto", "duplicate key 'crypto'"),
    ("unknown_retention_class",
     _replace("retention_class: research-short", "retention_class: research-shortish"),
     ("retention_class:", 1), "datasets.crypto.retention_class",
     "unknown retention class 'research-shortish'"),
    ("missing_required_key",
     _replace("    contract_version: v1\n    retention_class",
              "    retention_class"),
     ("crypto:", 1), "datasets.crypto.contract_version", "missing required key"),
    ("bad_priority",
     _replace("    retention_class: research-short\n",
              "    retention_class: research-short\n    priority: urgent\n"),
     ("priority:", 1), "datasets.crypto.priority", "'low', 'normal' or 'high'"),
    ("wrong_version",
     _replace("version: 1", "version: 2"),
     ("version: 2", 1), "version", "1"),
]


@pytest.mark.parametrize(("text", "where", "key", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_manifest_error_names_file_line_and_key(tmp_path: Path, snapshot: object, text: str,
                                                where: tuple[str, int], key: str | None,
                                                message: str) -> None:
    exc = _load_error(tmp_path, text)
    assert exc.path == str(tmp_path / "seamless.yaml")
    assert exc.line == _line_of(text, *where)
    assert exc.key == key
    rendered = str(exc)
    assert message in rendered
    assert f"{tmp_path / 'seamless.yaml'}:{exc.line}" in rendered
    assert "fix:" in rendered
    assert exc.exit_code == 2
    assert rendered.replace(str(tmp_path), "<tmp>") == snapshot


@pytest.mark.parametrize("bad", ["2024-02-30", "2024-13-01"])
def test_unquoted_impossible_date_is_a_manifest_error(tmp_path: Path, bad: str) -> None:
    """PyYAML raises a bare ValueError for these; it must become a located ManifestError."""
    text = _replace("start: 2024-01-30", f"start: {bad}")
    exc = _load_error(tmp_path, text)
    assert exc.line == _line_of(text, f"start: {bad}")
    assert bad in str(exc)
    assert exc.exit_code == 2


def test_missing_manifest_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "seamless.yaml")
    assert "does not exist" in str(info.value)
    assert "qmtl-lock init" in str(info.value)


def test_manifest_that_is_not_a_mapping(tmp_path: Path) -> None:
    exc = _load_error(tmp_path, "- just\n- a list\n")
    assert exc.line == 1
    assert "version: 1" in str(exc)


def test_valid_manifest_loads(tmp_path: Path) -> None:
    path = tmp_path / "seamless.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    loaded = load_manifest(path)
    assert sorted(loaded.datasets) == ["crypto", "equities"]
    crypto = loaded.datasets["crypto"]
    assert crypto.request_dict() == {
        "preset": "ohlcv.synthetic.crypto.1m", "symbols": ["BTCUSDT", "ETHUSDT"],
        "start": "2024-01-30", "end": "2024-02-02", "contract_version": "v1",
        "retention_class": "research-short", "priority": "normal",
    }
    assert loaded.store_url == str((tmp_path / ".seamless/store").resolve())
    assert loaded.lock_path == tmp_path / "seamless.lock"


def test_request_symbols_are_sorted_and_end_now_kept(tmp_path: Path) -> None:
    path = tmp_path / "seamless.yaml"
    path.write_text(_replace("[BTCUSDT, ETHUSDT]", "[ETHUSDT, BTCUSDT]")
                    .replace("end: 2024-02-02", "end: now"), encoding="utf-8")
    req = load_manifest(path).datasets["crypto"].request_dict()
    assert req["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert req["end"] == "now"


@pytest.mark.parametrize(("value", "text"), [
    ("2024-01-30", "2024-01-30"),
    ("2024-01-30T00:00:00Z", "2024-01-30T00:00:00Z"),
    ("2024-01-30T12:30:00+02:00", "2024-01-30T10:30:00Z"),
    ("now", "now"),
])
def test_when_text_is_canonical(value: str, text: str) -> None:
    assert when_text(value) == text


def test_user_catalog_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "seamless.yaml"
    path.write_text(_replace("store: .seamless/store\n",
                             "store: .seamless/store\npresets: [nope.yaml]\n"), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert "nope.yaml" in str(info.value)
    assert info.value.exit_code == 2


# -- dates ---------------------------------------------------------------------------------------
# (id, the value as written after `start:`, what the message says, what the fix says)
BAD_DATES = [
    ("integer_read_as_epoch", "20180101", "invalid date 20180101: a number is not a date",
     "write it as 2018-01-01"),
    ("small_integer", "5", "a number is not a date", "YYYY-MM-DD"),
    ("float", "2018.5", "a number is not a date", "YYYY-MM-DD"),
    ("bool", "true", "invalid date true: `true` is not a date", "YYYY-MM-DD"),
    ("yaml_1_1_bool", "off", "`false` is not a date", "YYYY-MM-DD"),
    ("garbage", "soon", "invalid date 'soon'", "YYYY-MM-DD"),
    ("compact_text", '"20180101"', "a date needs dashes", "write it as 2018-01-01"),
    ("naive_time_text", '"2024-01-30T10:00:00"', "a time needs its zone", "YYYY-MM-DDTHH:MM:SSZ"),
    ("space_separated_text", '"2024-01-30 10:00:00"', "a time needs its zone", "YYYY-MM-DD"),
    ("week_date", '"2024-W05-2"', "invalid date '2024-W05-2'", "YYYY-MM-DD"),
    ("ordinal_date", '"2024-030"', "invalid date '2024-030'", "YYYY-MM-DD"),
    ("far_future", "9999-12-31", "invalid date 9999-12-31: qmtl-lock handles dates from "
     "1678-01-01 to 2261-12-31", "end: now"),
    ("far_future_time", '"9999-12-31T23:59:59Z"', "1678-01-01 to 2261-12-31", "end: now"),
    ("first_year_out", "2262-01-01", "1678-01-01 to 2261-12-31", "give the real date"),
    ("far_past", "1600-01-01", "1678-01-01 to 2261-12-31", "give the real date"),
    ("null", "~", "invalid date null: the value is empty", "YYYY-MM-DD"),
    ("empty", "", "the value is empty", "YYYY-MM-DD"),
    ("list", "[2024-01-30]", "a list is not a date", "YYYY-MM-DD"),
    ("mapping", "{year: 2024}", "a mapping is not a date", "YYYY-MM-DD"),
]


@pytest.mark.parametrize("key", ["start", "end"])
@pytest.mark.parametrize(("value", "message", "fix"), [d[1:] for d in BAD_DATES],
                         ids=[d[0] for d in BAD_DATES])
def test_a_date_that_is_not_a_date_is_refused_with_line_and_key(
        tmp_path: Path, key: str, value: str, message: str, fix: str) -> None:
    old = "start: 2024-01-30" if key == "start" else "end: 2024-02-02"
    text = _replace(old, f"{key}: {value}".rstrip())
    exc = _load_error(tmp_path, text)
    assert exc.key == f"datasets.crypto.{key}"
    assert exc.line == _line_of(text, f"    {key}:")
    assert message in exc.what
    assert fix in (exc.fix or "")
    assert exc.exit_code == 2


@pytest.mark.parametrize("case_id", ["integer_read_as_epoch", "far_future", "naive_time_text",
                                     "compact_text", "bool"])
def test_bad_date_message_snapshot(tmp_path: Path, snapshot: object, case_id: str) -> None:
    value = next(d[1] for d in BAD_DATES if d[0] == case_id)
    exc = _load_error(tmp_path, _replace("start: 2024-01-30", f"start: {value}"))
    assert str(exc).replace(str(tmp_path), "<tmp>") == snapshot


@pytest.mark.parametrize("value", [
    "2024-01-30", '"2024-01-30"', "2024-01-30T00:00:00Z", '"2024-01-30T00:00:00Z"',
    '"2024-01-30T02:00:00+02:00"', '"2024-01-29T19:00:00-05:00"', '"2024-01-30T00:00Z"',
    '"2024-01-30T00:00:00.000Z"',
    "2024-01-30 00:00:00",  # a YAML timestamp without a zone is UTC by the YAML spec
])
def test_dates_and_zoned_times_are_accepted(tmp_path: Path, value: str) -> None:
    from qmtl_engine.ranges import to_ms

    path = tmp_path / "seamless.yaml"
    path.write_text(_replace("start: 2024-01-30", f"start: {value}"), encoding="utf-8")
    assert load_manifest(path).datasets["crypto"].start_ms == to_ms("2024-01-30")


def test_the_last_accepted_end_does_not_crash_a_dry_run(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A far but representable end is planned like any other: no year-10000 traceback."""
    from click.testing import CliRunner

    from qmtl_lock.cli import cli

    path = tmp_path / "seamless.yaml"
    path.write_text(
        "version: 1\ndatasets:\n  far:\n    preset: ohlcv.synthetic.crypto.1h\n"
        "    symbols: [BTCUSDT]\n    start: 2024-05-25\n    end: 2261-12-31\n"
        "    contract_version: v1\n", encoding="utf-8")
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    result = CliRunner().invoke(cli, ["resolve", "--dry-run", "-m", str(path)])
    assert result.exit_code == 0, result.output
    assert "2261-12-31T00:00:00Z" in result.output
    assert not (tmp_path / "seamless.lock").exists()


def test_end_before_start_stays_a_clear_error(tmp_path: Path) -> None:
    text = _replace("end: 2024-02-02", 'end: "2024-01-29T23:00:00Z"')
    exc = _load_error(tmp_path, text)
    assert exc.line == _line_of(text, "end:")
    assert "start 2024-01-30 at or after end 2024-01-29T23:00:00Z" in exc.what
    assert exc.fix == "make end later than start"


@pytest.mark.parametrize(("gap", "message"), [
    ("{start: 20240131, end: 2024-02-01, reason: outage}", "a number is not a date"),
    ("{start: now, end: 2024-02-01, reason: outage}", "`now` is only allowed as a dataset's end"),
    ("{start: 2024-01-31, end: 9999-01-01, reason: outage}", "1678-01-01 to 2261-12-31"),
    ("{start: 2024-01-31, end: true, reason: outage}", "`true` is not a date"),
], ids=["integer", "now", "far_future", "bool"])
def test_accepted_gap_dates_follow_the_same_rule(tmp_path: Path, gap: str, message: str) -> None:
    text = _replace("    retention_class: research-short\n",
                    f"    retention_class: research-short\n    accepted_gaps: [{gap}]\n")
    exc = _load_error(tmp_path, text)
    assert exc.line == _line_of(text, "accepted_gaps:")
    assert (exc.key or "").startswith("datasets.crypto.accepted_gaps.0.")
    assert message in exc.what


# -- the symbol rule on every path ---------------------------------------------------------------
@pytest.mark.parametrize("symbol", ["../../x", "/etc/passwd", "a b", "", "a/b/c", "x/.."])
def test_the_materialize_job_applies_the_manifest_symbol_rule(tmp_path: Path,
                                                               symbol: str) -> None:
    from qmtl_lock.manifest import symbol_problem
    from qmtl_lock.materialize_job import MaterializeSeamlessJob

    job = MaterializeSeamlessJob(preset="ohlcv.quandl_wiki.us_equity.1d", symbol=symbol,
                                 start="2011-01-01", end="2012-01-01", contract_version="v1",
                                 artifact_dir=tmp_path / "store")
    with pytest.raises(InputError) as info:
        job.run()
    assert info.value.what == symbol_problem(symbol)
    assert "--symbol" in (info.value.where or "")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("start", "end", "message"), [
    ("20110101", "2012-01-01", "invalid start '20110101': a date needs dashes"),
    ("now", "2012-01-01", "invalid start 'now'"),
    ("2011-01-01", "9999-12-31", "invalid end '9999-12-31'"),
    ("2011-01-01", "2012-01-01T00:00:00", "a time needs its zone"),
])
def test_the_materialize_job_applies_the_manifest_date_rule(tmp_path: Path, start: str, end: str,
                                                            message: str) -> None:
    from qmtl_lock.materialize_job import MaterializeSeamlessJob

    job = MaterializeSeamlessJob(preset="ohlcv.quandl_wiki.us_equity.1d", symbol="AAPL",
                                 start=start, end=end, contract_version="v1",
                                 artifact_dir=tmp_path / "store")
    with pytest.raises(InputError) as info:
        job.run()
    assert message in info.value.what
    assert not (tmp_path / "store").exists()


def test_symbol_rule_accepts_what_the_manifest_accepts() -> None:
    from qmtl_lock.manifest import symbol_problem

    for good in ("BTCUSDT", "BTC/USDT", "BTC/USDT:USDT", "BRK.B", "ES=F", "A^B", "a-b_c"):
        assert symbol_problem(good) is None, good


# -- files that are not text, and conflicts ------------------------------------------------------
def test_a_utf16_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "seamless.yaml"
    path.write_bytes(MANIFEST.encode("utf-16"))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "UTF-16" in info.value.what
    assert info.value.path == str(path)


def test_conflict_markers_in_the_manifest_name_the_line_and_the_fix(tmp_path: Path) -> None:
    text = _replace("    end: 2024-02-02\n", "<<<<<<< HEAD\n    end: 2024-02-02\n=======\n"
                    "    end: 2024-02-03\n>>>>>>> feature\n")
    exc = _load_error(tmp_path, text)
    assert exc.line == _line_of(text, "<<<<<<<")
    assert "conflict markers" in exc.what
    assert "resolve the git conflict in seamless.yaml" in (exc.fix or "")


def test_a_merge_key_with_an_override_is_a_valid_manifest(tmp_path: Path) -> None:
    path = tmp_path / "seamless.yaml"
    path.write_text(
        "version: 1\n"
        "datasets:\n"
        "  crypto: &crypto\n"
        "    preset: ohlcv.synthetic.crypto.1m\n"
        "    symbols: [BTCUSDT]\n"
        "    start: 2024-01-30\n"
        "    end: 2024-02-02\n"
        "    contract_version: v1\n"
        "  crypto_later:\n"
        "    <<: *crypto\n"
        "    start: 2024-02-01\n", encoding="utf-8")
    loaded = load_manifest(path)
    later = loaded.datasets["crypto_later"].request_dict()
    assert (later["start"], later["end"], later["symbols"]) == (
        "2024-02-01", "2024-02-02", ["BTCUSDT"])
