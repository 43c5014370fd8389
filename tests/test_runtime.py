"""The strategy surface: ``Lock.open(...).load(...)`` hands out verified, canonical data only."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import CRYPTO_ROWS, EQUITY_ROWS, Project
from qmtl_engine.errors import FingerprintMismatch, InputError, ObjectMissing
from qmtl_engine.ranges import to_ms

from qmtl_lock import Lock
from qmtl_lock.errors import ContractMismatch

CANONICAL = pa.schema([
    ("ts", pa.timestamp("ms", tz="UTC")),
    ("open", pa.float64()),
    ("high", pa.float64()),
    ("low", pa.float64()),
    ("close", pa.float64()),
    ("volume", pa.float64()),
])


def _ts(table: pa.Table) -> list[int]:
    return table["ts"].cast(pa.int64()).to_pylist()


@pytest.fixture
def lock(resolved: Project) -> Lock:
    return Lock.open(resolved.lock)


def test_open_and_list(lock: Lock) -> None:
    assert lock.datasets() == ["crypto", "equities"]
    assert lock.symbols("crypto") == ["BTCUSDT", "ETHUSDT"]
    assert lock.entry("equities", "AAPL").rows == EQUITY_ROWS


@pytest.mark.parametrize(("dataset", "symbol", "rows", "first", "step"), [
    ("crypto", "BTCUSDT", CRYPTO_ROWS, "2024-01-30", 60_000),
    ("equities", "AAPL", EQUITY_ROWS, "2011-01-03", None),  # first trading day of 2011
])
def test_load_returns_canonical_table_with_locked_rows(lock: Lock, dataset: str, symbol: str,
                                                       rows: int, first: str,
                                                       step: int | None) -> None:
    table = lock.load(dataset, symbol)
    assert isinstance(table, pa.Table)
    assert table.schema.remove_metadata() == CANONICAL
    assert table.num_rows == rows == lock.entry(dataset, symbol).rows
    ts = _ts(table)
    assert ts[0] == to_ms(first)
    assert all(b > a for a, b in pairwise(ts))  # sorted and unique
    lo, hi = lock.entry(dataset, symbol).coverage_bounds
    assert lo <= ts[0] and ts[-1] < hi
    if step is not None:
        assert {b - a for a, b in pairwise(ts)} == {step}
    for column in ("open", "high", "low", "close", "volume"):
        assert table[column].null_count == 0


def test_load_is_deterministic(lock: Lock) -> None:
    assert lock.load("crypto", "ETHUSDT").equals(lock.load("crypto", "ETHUSDT"))


@pytest.mark.parametrize(("start", "end", "first", "rows"), [
    ("2024-01-31", "2024-02-01T12:00:00Z", "2024-01-31", 36 * 60),
    (datetime(2024, 1, 31, 23, 0, tzinfo=UTC), datetime(2024, 2, 1, 1, 0, tzinfo=UTC),
     "2024-01-31T23:00:00Z", 120),  # across the partition boundary
    (date(2024, 2, 1), None, "2024-02-01", 24 * 60),
    (None, "2024-01-30T00:10:00Z", "2024-01-30", 10),
])
def test_load_slice(lock: Lock, start: object, end: object, first: str, rows: int) -> None:
    table = lock.load("crypto", "BTCUSDT", start=start, end=end)
    assert table.num_rows == rows
    assert _ts(table)[0] == to_ms(first)
    assert table.schema.remove_metadata() == CANONICAL
    full = lock.load("crypto", "BTCUSDT")
    mask = pc.equal(full["ts"], table["ts"][0])
    offset = pc.index(mask, True).as_py()
    assert full.slice(offset, rows).equals(table)


def test_load_slice_with_pandas_timestamps(lock: Lock) -> None:
    pd = pytest.importorskip("pandas")
    table = lock.load("equities", "MSFT", start=pd.Timestamp("2012-01-01", tz="UTC"),
                      end=pd.Timestamp("2012-02-01", tz="UTC"))
    assert table.num_rows == 20  # January 2012 NYSE sessions


@pytest.mark.parametrize(("start", "end"), [
    ("2024-01-29", "2024-01-31"),           # starts before the coverage
    ("2024-01-31", "2024-02-03"),           # ends after the coverage
    ("2024-02-01", "2024-02-01"),           # empty
    ("2024-02-01", "2024-01-31"),           # inverted
])
def test_slice_outside_coverage_is_refused(lock: Lock, start: str, end: str) -> None:
    with pytest.raises(InputError) as info:
        lock.load("crypto", "BTCUSDT", start=start, end=end)
    assert "outside the locked coverage" in str(info.value)
    assert "crypto/BTCUSDT" in str(info.value)


def test_unknown_dataset_and_symbol(lock: Lock) -> None:
    with pytest.raises(InputError, match="'nope' is not in"):
        lock.load("nope", "BTCUSDT")
    with pytest.raises(InputError, match="symbol 'SOLUSDT' is not locked"):
        lock.load("crypto", "SOLUSDT")


def test_require_fingerprint(lock: Lock) -> None:
    fp = lock.entry("crypto", "BTCUSDT").dataset_fingerprint
    lock.require_fingerprint("crypto", "BTCUSDT", fp)
    other = lock.entry("crypto", "ETHUSDT").dataset_fingerprint
    with pytest.raises(FingerprintMismatch) as info:
        lock.require_fingerprint("crypto", "BTCUSDT", other)
    exc = info.value
    assert (exc.expected, exc.actual) == (other, fp)
    assert (exc.dataset, exc.symbol) == ("crypto", "BTCUSDT")
    assert exc.exit_code == 1


def test_require_contract_version(lock: Lock) -> None:
    lock.require_contract_version("crypto", "v1")
    with pytest.raises(ContractMismatch) as info:
        lock.require_contract_version("crypto", "v2")
    exc = info.value
    assert (exc.dataset, exc.expected, exc.actual) == ("crypto", "v2", "v1")
    assert "contract_version: v2" in str(exc)


def test_to_pandas(lock: Lock) -> None:
    pytest.importorskip("pandas")
    df = lock.to_pandas("equities", "AAPL")
    assert df.index.name == "ts"
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert len(df) == EQUITY_ROWS
    assert str(df.index.tz) == "UTC"
    assert df.index.is_monotonic_increasing and df.index.is_unique
    part = lock.to_pandas("equities", "AAPL", start="2012-01-01")
    assert len(part) == 250  # NYSE sessions in 2012


def test_load_never_touches_a_source(lock: Lock, monkeypatch: pytest.MonkeyPatch) -> None:
    import qmtl_engine.materialize

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("strategy mode fetched data")

    monkeypatch.setattr(qmtl_engine.materialize, "make_source", forbidden)
    assert lock.load("crypto", "BTCUSDT").num_rows == CRYPTO_ROWS
    assert lock.engine.mode == "strategy"


def test_load_with_an_empty_store_says_what_to_run(resolved: Project) -> None:
    import shutil

    shutil.rmtree(resolved.root / ".seamless")
    with pytest.raises(ObjectMissing) as info:
        Lock.open(resolved.lock).load("crypto", "BTCUSDT")
    assert "qmtl-lock resolve" in str(info.value)


def test_open_with_an_explicit_store(resolved: Project, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    (resolved.root / ".seamless" / "store").rename(moved)
    with pytest.raises(ObjectMissing):
        Lock.open(resolved.lock).load("equities", "AAPL")
    assert Lock.open(resolved.lock, store=str(moved)).load("equities", "AAPL").num_rows == (
        EQUITY_ROWS)


def test_open_uses_the_store_named_by_the_manifest(resolved: Project) -> None:
    (resolved.root / ".seamless").rename(resolved.root / "data-store")
    resolved.edit_manifest("store: .seamless/store", "store: data-store/store")
    lock = Lock.open(resolved.lock)
    assert lock.store_url == str((resolved.root / "data-store" / "store").resolve())
    assert lock.load("equities", "MSFT").num_rows == EQUITY_ROWS


def test_open_reads_only_the_store_of_the_manifest(resolved: Project) -> None:
    """A strategy's start-up reads ``store`` and ``cache`` of seamless.yaml, not its models: a
    dataset being edited does not stop a backtest of what the lock pins (the data is still
    verified on every read); a file that is not YAML is refused, naming it."""
    import subprocess
    import sys

    from qmtl_engine import QmtlLockError

    resolved.edit_manifest("contract_version: v1", "contract_version: v9")
    code = ("import sys; from qmtl_lock import Lock; "
            "t = Lock.open('seamless.lock').load('equities', 'MSFT'); "
            "print(t.num_rows, 'qmtl_lock.manifest' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=resolved.root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(EQUITY_ROWS), "False"]
    resolved.manifest.write_text("store: [unclosed\n", encoding="utf-8")
    with pytest.raises(QmtlLockError) as info:
        Lock.open(resolved.lock)
    assert str(resolved.manifest) in str(info.value.where)


def test_lock_entry_that_describes_another_snapshot_is_refused(resolved: Project) -> None:
    """Pointing BTCUSDT's entry at ETHUSDT's (valid) snapshot must not hand out ETH data."""
    lock = Lock.open(resolved.lock)
    btc = lock.entry("crypto", "BTCUSDT").dataset_fingerprint
    eth = lock.entry("crypto", "ETHUSDT").dataset_fingerprint
    text = resolved.lock.read_text()
    resolved.lock.write_text(text.replace(btc, "sha256:" + "0" * 64).replace(eth, btc)
                             .replace("sha256:" + "0" * 64, eth))
    with pytest.raises(FingerprintMismatch) as info:
        Lock.open(resolved.lock).load("crypto", "BTCUSDT")
    assert info.value.partition == "snapshot manifest"
