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
     ("symbols:", 1), "datasets.crypto.symbols", "invalid symbol '../x'"),
    ("symbol_with_two_slashes",
     _replace("[BTCUSDT, ETHUSDT]", '[BTCUSDT, "a/b/c"]'),
     ("symbols:", 1), "datasets.crypto.symbols", "invalid symbol 'a/b/c'"),
    ("symbol_empty",
     _replace("[BTCUSDT, ETHUSDT]", '[BTCUSDT, ""]'),
     ("symbols:", 1), "datasets.crypto.symbols", "invalid symbol ''"),
    ("symbols_empty_list",
     _replace("[BTCUSDT, ETHUSDT]", "[]"),
     ("symbols:", 1), "datasets.crypto.symbols", "at least 1"),
    ("duplicated_symbols",
     _replace("[AAPL, MSFT]", "[AAPL, MSFT, AAPL]"),
     ("symbols:", 2), "datasets.equities.symbols", "symbols listed twice: AAPL"),
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
