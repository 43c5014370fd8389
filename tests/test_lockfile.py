"""seamless.lock: rendering, parsing, determinism, versioning, redaction and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qmtl_engine.ranges import to_ms

from qmtl_lock.errors import LockfileError, LockVersionError
from qmtl_lock.lockfile import (
    BANNER,
    LOCK_VERSION,
    DatasetEntry,
    Lockfile,
    SymbolEntry,
    parse_lock,
    read_lock,
    render,
    write_lock,
)
from qmtl_lock.symbols import SYMBOL_RE as _SYMBOL_RE

FP_A = "sha256:" + "a1" * 32
FP_B = "sha256:" + "b2" * 32
DIGEST = "sha256:" + "c3" * 32
ZERO_FLAGS = {"duplicate_ts": 0, "gap_bars": 0, "ohlc_inconsistent": 0}


def _sym(fp: str, *, rows: int = 4320, flags: dict[str, int] | None = None,
         expires: str | None = "2024-07-01T00:00:00Z") -> SymbolEntry:
    return SymbolEntry(
        dataset_fingerprint=fp,
        coverage_bounds=(to_ms("2024-01-30"), to_ms("2024-02-02")),
        as_of=to_ms("2024-06-01T00:00:00Z"),
        rows=rows,
        partitions=2,
        conformance_flags=flags if flags is not None else dict(ZERO_FLAGS),
        sla={"deadline_ms": 60000, "elapsed_ms": 812, "violation": None},
        retention_class="research-short",
        expires_at=None if expires is None else to_ms(expires),
    )


def _request(**extra: object) -> dict[str, object]:
    return {"preset": "ohlcv.synthetic.crypto.1m", "symbols": ["BTCUSDT", "ETHUSDT"],
            "start": "2024-01-30", "end": "2024-02-02", "contract_version": "v1",
            "retention_class": "research-short", "priority": "normal", **extra}


def _lock() -> Lockfile:
    crypto = DatasetEntry(
        request=_request(),
        preset_digest=DIGEST,
        symbols={"ETHUSDT": _sym(FP_B, flags={**ZERO_FLAGS, "gap_bars": 3}),
                 "BTCUSDT": _sym(FP_A)},
    )
    equities = DatasetEntry(
        request={"preset": "ohlcv.quandl_wiki.us_equity.1d", "symbols": ["AAPL"],
                 "start": "2011-01-01", "end": "now", "contract_version": "v1",
                 "retention_class": "default", "priority": "low"},
        preset_digest=DIGEST,
        symbols={"AAPL": _sym(FP_B, rows=502, expires=None)},
    )
    return Lockfile(datasets={"equities": equities, "crypto": crypto})


def test_rendered_lock_snapshot(snapshot: object) -> None:
    text = render(_lock())
    assert text.startswith(BANNER + "\nlock_version: 1\n")
    assert text == snapshot


def test_render_parse_round_trip() -> None:
    lock = _lock()
    text = render(lock)
    parsed = parse_lock(text, "seamless.lock")
    assert parsed == lock
    assert render(parsed) == text


def test_rendering_is_deterministic() -> None:
    a = render(_lock())
    b = render(_lock())
    assert a == b
    # insertion order of datasets, symbols and flags does not matter
    lock = _lock()
    shuffled = Lockfile(datasets={
        name: DatasetEntry(
            request=dict(ds.request),
            preset_digest=ds.preset_digest,
            symbols={s: SymbolEntry(**{
                **e.__dict__,
                "conformance_flags": dict(reversed(list(e.conformance_flags.items())))})
                for s, e in reversed(list(ds.symbols.items()))},
        )
        for name, ds in reversed(list(lock.datasets.items()))
    })
    assert render(shuffled) == a


# every symbol the manifest accepts (see the xfail below for a trailing ':')
_symbols = st.from_regex(_SYMBOL_RE, fullmatch=True).filter(
    lambda s: ".." not in s and not s.endswith(":"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    symbols=st.lists(_symbols, min_size=1, max_size=4, unique=True),
    rows=st.integers(min_value=0, max_value=10**9),
    flags=st.dictionaries(st.sampled_from(["gap_bars", "duplicate_ts", "dtype_cast"]),
                          st.integers(min_value=0, max_value=10**6)),
    elapsed=st.integers(min_value=0, max_value=10**7),
    violation=st.none() | st.sampled_from(["total_deadline", "min_coverage: 0.5 < 0.98"]),
    start=st.integers(min_value=to_ms("1990-01-01") // 1000, max_value=to_ms("2090-01-01") // 1000),
)
def test_round_trip_property(symbols: list[str], rows: int, flags: dict[str, int], elapsed: int,
                             violation: str | None, start: int) -> None:
    entry = SymbolEntry(
        dataset_fingerprint=FP_A, coverage_bounds=(start * 1000, start * 1000 + 60_000),
        as_of=start * 1000 + 120_000, rows=rows, partitions=1, conformance_flags=flags,
        sla={"deadline_ms": None, "elapsed_ms": elapsed, "violation": violation},
        retention_class="default", expires_at=None)
    lock = Lockfile(datasets={"ds": DatasetEntry(
        request=_request(symbols=sorted(symbols)), preset_digest=DIGEST,
        symbols=dict.fromkeys(symbols, entry))})
    text = render(lock)
    assert parse_lock(text, "seamless.lock") == lock
    assert render(parse_lock(text, "seamless.lock")) == text


def test_symbol_with_trailing_colon_renders() -> None:
    from qmtl_lock.manifest import DatasetSpec

    DatasetSpec(preset="p", symbols=["BTC:"], start="2024-01-01", end="2024-01-02",
                contract_version="v1")  # the manifest accepts it
    lock = Lockfile(datasets={"ds": DatasetEntry(
        request=_request(symbols=["BTC:"]), preset_digest=DIGEST, symbols={"BTC:": _sym(FP_A)})})
    assert parse_lock(render(lock), "seamless.lock") == lock


# -- lock_version ------------------------------------------------------------------------------
def test_newer_lock_version_is_refused_naming_both_versions() -> None:
    text = render(_lock()).replace("lock_version: 1", "lock_version: 2")
    with pytest.raises(LockVersionError) as info:
        parse_lock(text, "seamless.lock")
    exc = info.value
    assert exc.found == 2
    assert exc.supported == LOCK_VERSION == 1
    assert "lock_version 2" in str(exc)
    assert "lock_version 1" in str(exc)
    assert "upgrade qmtl-lock" in str(exc)
    assert exc.exit_code == 2


def test_newer_lock_version_is_refused_before_validating_the_rest() -> None:
    """A v2 lock may have any shape; the version must be the first thing refused."""
    text = f"{BANNER}\nlock_version: 2\ndatasets:\n  x: {{brand_new_field: 1}}\n"
    with pytest.raises(LockVersionError):
        parse_lock(text, "seamless.lock")


def test_lock_version_fix_advice_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import MANIFEST, NOW

    from qmtl_lock.resolve import resolve

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    (tmp_path / "seamless.yaml").write_text(
        MANIFEST.split("  equities:")[0], encoding="utf-8")
    (tmp_path / "seamless.lock").write_text(f"{BANNER}\nlock_version: 2\n", encoding="utf-8")
    with pytest.raises(LockVersionError) as info:
        parse_lock((tmp_path / "seamless.lock").read_text(), "seamless.lock")
    assert "delete seamless.lock and run `qmtl-lock resolve`" in str(info.value)
    (tmp_path / "seamless.lock").unlink()  # follow the advice literally
    resolve(tmp_path / "seamless.yaml")


# -- credentials -------------------------------------------------------------------------------
SECRETS = ("s3cr3t-api-key", "hunter2", "t0psecret", "p4ssw0rd")


def _live_lock(live: dict[str, object]) -> Lockfile:
    lock = _lock()
    crypto = lock.datasets["crypto"]
    return Lockfile(datasets={**lock.datasets, "crypto": DatasetEntry(
        request=_request(live=live), preset_digest=crypto.preset_digest,
        symbols=crypto.symbols)})


def test_credentials_are_never_written() -> None:
    live = {
        "url": "wss://alice:p4ssw0rd@stream.example.com/ws?symbol=BTC&apiKey=t0psecret",
        "api_key": "s3cr3t-api-key",
        "secret": "hunter2",
        "api_key_env": "EXCHANGE_API_KEY",  # naming the variable is fine
        "channel": "klines",
    }
    text = render(_live_lock(live))
    for secret in SECRETS:
        assert secret not in text
    assert "alice" not in text
    assert "EXCHANGE_API_KEY" in text
    assert "stream.example.com/ws" in text
    assert "klines" in text
    assert text.count("<redacted>") >= 4
    # and the redacted lock still round-trips
    assert render(parse_lock(text, "seamless.lock")) == text


def test_credentials_never_reach_the_lock_through_resolve(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import NOW

    from qmtl_lock.resolve import resolve

    monkeypatch.setenv("QMTL_LOCK_NOW", NOW)
    manifest = tmp_path / "seamless.yaml"
    manifest.write_text(
        "version: 1\n"
        "store: .seamless/store\n"
        "datasets:\n"
        "  crypto:\n"
        "    preset: ohlcv.synthetic.crypto.1h\n"
        "    symbols: [BTCUSDT]\n"
        "    start: 2024-01-01\n"
        "    end: 2024-01-02\n"
        "    contract_version: v1\n"
        "    live:\n"
        "      url: wss://alice:p4ssw0rd@stream.example.com/ws\n"
        "      api_key: s3cr3t-api-key\n"
        "      secret: hunter2\n", encoding="utf-8")
    resolve(manifest)
    text = (tmp_path / "seamless.lock").read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in text
    assert "alice" not in text


@pytest.mark.parametrize("live", [
    {"token": 1234567890},
    {"credentials": {"user": "bob", "pass": "hunter2"}},
    {"auth": [{"pass": "hunter2"}]},
], ids=["numeric_token", "nested_credentials", "list_under_auth"])
def test_credentials_of_any_shape_are_redacted(live: dict[str, object]) -> None:
    text = render(_live_lock(live))
    assert "1234567890" not in text
    assert "hunter2" not in text


# -- malformed locks ---------------------------------------------------------------------------
def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_missing_key_is_a_lockfile_error_with_line() -> None:
    text = render(_lock())
    lines = text.splitlines(keepends=True)
    rows_line = next(i for i, line in enumerate(lines) if "rows: 4320" in line)
    broken = "".join(lines[:rows_line] + lines[rows_line + 1:])
    with pytest.raises(LockfileError) as info:
        parse_lock(broken, "seamless.lock")
    exc = info.value
    assert not isinstance(exc, LockVersionError)
    assert "missing required key 'rows'" in str(exc)
    assert exc.line is not None
    # the symbol whose entry lost its key (BTCUSDT, the first one rendered)
    assert exc.line == _line(broken, "BTCUSDT:")
    assert exc.key == "datasets.crypto.symbols.BTCUSDT.rows"
    assert "seamless.lock:" in str(exc)
    assert exc.exit_code == 2


@pytest.mark.parametrize("bad", [
    "sha256:" + "a1" * 31 + "a",          # one hex digit short
    "sha256:" + "A1" * 32,                 # upper case
    "md5:" + "a1" * 16,                    # another algorithm
    "sha256:" + "g1" * 32,                 # not hex
])
def test_bad_fingerprint_is_a_lockfile_error_with_line(bad: str) -> None:
    text = render(_lock()).replace(FP_A, bad, 1)
    with pytest.raises(LockfileError) as info:
        parse_lock(text, "seamless.lock")
    exc = info.value
    assert exc.line == _line(text, bad)
    assert exc.key == "datasets.crypto.symbols.BTCUSDT.dataset_fingerprint"
    assert f"seamless.lock:{exc.line}" in str(exc)


def test_bad_timestamp_is_a_lockfile_error_with_line() -> None:
    text = render(_lock()).replace("as_of: 2024-06-01T00:00:00Z", "as_of: yesterday", 1)
    with pytest.raises(LockfileError) as info:
        parse_lock(text, "seamless.lock")
    assert info.value.line == _line(text, "as_of: yesterday")


def test_unknown_key_in_lock_is_refused() -> None:
    text = render(_lock()).replace("        rows: 4320\n",
                                   "        rows: 4320\n        rowz: 1\n", 1)
    with pytest.raises(LockfileError) as info:
        parse_lock(text, "seamless.lock")
    assert info.value.line == _line(text, "rowz: 1")
    assert "unknown key 'rowz'" in str(info.value)


def test_yaml_syntax_error_in_lock_has_line() -> None:
    text = render(_lock()).replace("coverage_bounds: [2024", "coverage_bounds: [[2024", 1)
    with pytest.raises(LockfileError) as info:
        parse_lock(text, "seamless.lock")
    assert info.value.line is not None
    assert "not valid YAML" in str(info.value)


def test_duplicate_key_in_lock_is_refused() -> None:
    text = render(_lock()).replace("        rows: 4320\n",
                                   "        rows: 4320\n        rows: 1\n", 1)
    with pytest.raises(LockfileError) as info:
        parse_lock(text, "seamless.lock")
    assert info.value.line == _line(text, "rows: 1")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_lock_that_is_not_a_mapping(text: str) -> None:
    with pytest.raises(LockfileError):
        parse_lock(text, "seamless.lock")


@pytest.mark.parametrize("version", ["0", "'1'", "1.5", "null"])
def test_lock_version_must_be_exactly_1(version: str) -> None:
    text = render(_lock()).replace("lock_version: 1", f"lock_version: {version}")
    with pytest.raises(LockfileError) as info:
        parse_lock(text, "seamless.lock")
    assert not isinstance(info.value, LockVersionError)
    assert info.value.line == 2


def test_read_lock_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LockfileError) as info:
        read_lock(tmp_path / "seamless.lock")
    assert "qmtl-lock resolve" in str(info.value)


# -- writing -----------------------------------------------------------------------------------
def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "seamless.lock")


def test_write_lock_is_atomic_and_reports_change(tmp_path: Path) -> None:
    path = tmp_path / "seamless.lock"
    assert write_lock(path, _lock()) is True
    assert path.read_text(encoding="utf-8") == render(_lock())
    assert _leftovers(tmp_path) == []
    before = path.stat().st_mtime_ns
    inode = path.stat().st_ino
    assert write_lock(path, _lock()) is False  # unchanged: not even rewritten
    assert path.stat().st_mtime_ns == before
    assert path.stat().st_ino == inode
    assert _leftovers(tmp_path) == []

    changed = Lockfile(datasets={"crypto": _lock().datasets["crypto"]})
    assert write_lock(path, changed) is True
    assert path.read_text(encoding="utf-8") == render(changed)
    assert path.stat().st_ino != inode  # replaced, not rewritten in place
    assert _leftovers(tmp_path) == []


def test_write_lock_failure_leaves_old_lock_and_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "seamless.lock"
    write_lock(path, _lock())
    old = path.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_lock(path, Lockfile())
    assert path.read_bytes() == old
    assert _leftovers(tmp_path) == []


def test_write_lock_writes_lf_utf8(tmp_path: Path) -> None:
    path = tmp_path / "seamless.lock"
    write_lock(path, _lock())
    data = path.read_bytes()
    assert b"\r\n" not in data
    assert data.decode("utf-8").startswith(BANNER)
    assert data.endswith(b"\n") and not data.endswith(b"\n\n")


def test_write_lock_respects_umask(tmp_path: Path) -> None:
    path = tmp_path / "seamless.lock"
    path.write_text("old\n", encoding="utf-8")
    path.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        write_lock(path, _lock())
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
