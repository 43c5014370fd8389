"""No data command imports pandas unless it returns pandas (issue 11).

pyarrow imports pandas, when installed, on ``pa.array`` / ``pa.scalar`` of Python or numpy values
and on ``Array.to_numpy``: hundreds of milliseconds per process. Every data command is run here as
a real process (``python -X importtime -m qmtl_lock ...``, and ``python -c`` for the runtime API)
and its import log is read: pandas must not be in it. A control run shows the log would name
pandas if pyarrow had imported it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import NOW

pytest.importorskip("pandas")  # without pandas installed these tests could not fail

SYNTHETIC = """\
version: 1
store: .seamless/store
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BTCUSDT]
    start: 2024-01-30
    end: {end}
    contract_version: v1
"""

# A vendor CSV read by the files source: text times, with and without a strptime format.
CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.{name}.1m:
    kind: ohlcv
    interval_ms: 60000
    stabilization_bars: 0
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    partition: day
    source:
      name: files
      options:
        url: {url}
        columns: {{ts: Time, open: Open, high: High, low: Low, close: Close, volume: Volume}}
        {format}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""

FILES_MANIFEST = """\
version: 1
store: .seamless/store
presets: [presets.yaml]
datasets:
  vendor:
    preset: ohlcv.vendor.{name}.1m
    symbols: [EURUSD]
    start: 2024-01-01
    end: 2024-01-03
    contract_version: v1
"""


def _imports_pandas(argv: list[str], cwd: Path) -> tuple[bool, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "QMTL_LOCK_NOW": NOW, "CI": "1"}
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")}
    return "pandas" in modules, proc


def _cli(cwd: Path, *args: str, code: int = 0) -> str:
    pandas, proc = _imports_pandas(["-m", "qmtl_lock", *args], cwd)
    assert proc.returncode == code, proc.stdout + proc.stderr[-3000:]
    assert not pandas, f"`qmtl-lock {' '.join(args)}` imported pandas"
    return proc.stdout


def test_the_import_log_shows_pandas_when_pyarrow_imports_it(tmp_path: Path) -> None:
    """The control: ``pa.array`` of a numpy array makes pyarrow import pandas, and it shows."""
    pandas, proc = _imports_pandas(
        ["-c", "import numpy as np, pyarrow as pa; pa.array(np.zeros(3))"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pandas


def test_data_commands_on_synthetic_bars_do_not_import_pandas(tmp_path: Path) -> None:
    (tmp_path / "seamless.yaml").write_text(SYNTHETIC.format(end="2024-02-02"))
    assert "added" in _cli(tmp_path, "resolve")
    (tmp_path / "old.lock").write_bytes((tmp_path / "seamless.lock").read_bytes())
    # one day more: reuses January, reads its stored partition for repeated bars across months
    (tmp_path / "seamless.yaml").write_text(SYNTHETIC.format(end="2024-02-03"))
    assert "updated" in _cli(tmp_path, "resolve")
    assert "all match the lock" in _cli(tmp_path, "verify")
    assert "crypto" in _cli(tmp_path, "show")
    _cli(tmp_path, "show", "--gaps", "crypto")
    assert "changed" in _cli(tmp_path, "diff", "old.lock", "seamless.lock", code=1)
    _cli(tmp_path, "check")
    _cli(tmp_path, "resolve", "--refresh")  # every partition fetched and compared again


@pytest.mark.parametrize("call", [
    "lock.load('crypto', 'BTCUSDT')",
    "lock.load('crypto', 'BTCUSDT', start='2024-01-31T23:00:00Z', end='2024-02-01T01:00:00Z')",
])
def test_loading_arrow_through_the_runtime_does_not_import_pandas(tmp_path: Path,
                                                                  call: str) -> None:
    (tmp_path / "seamless.yaml").write_text(SYNTHETIC.format(end="2024-02-02"))
    _cli(tmp_path, "resolve")
    code = ("from qmtl_lock import Lock; lock = Lock.open('seamless.lock'); "
            f"table = {call}; print(table.num_rows, type(table).__module__)")
    pandas, proc = _imports_pandas(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, module = proc.stdout.split()
    assert int(rows) > 0 and module.startswith("pyarrow")
    assert not pandas


@pytest.mark.parametrize(("name", "fmt", "when"), [
    ("iso", "", "%Y-%m-%dT%H:%M:%SZ"),
    ("dukascopy", "ts_format: '%d.%m.%Y %H:%M:%S.%f'", "%d.%m.%Y %H:%M:%S.000"),
    ("ampm", "ts_format: '%Y-%m-%d %I:%M %p'", "%Y-%m-%d %I:%M %p"),
], ids=["iso", "format_with_fraction", "format_12_hour"])
def test_resolving_vendor_files_does_not_import_pandas(tmp_path: Path, name: str, fmt: str,
                                                       when: str) -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2024, 1, 1, tzinfo=UTC)
    lines = ["Time,Open,High,Low,Close,Volume"]
    for i in range(2 * 24 * 60):
        t = start + timedelta(minutes=i)
        price = 100 + (i % 50) / 10
        lines.append(f"{t.strftime(when)},{price},{price + 1},{price - 1},{price + 0.5},{i}")
    (tmp_path / "EURUSD.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "presets.yaml").write_text(
        CATALOG.format(name=name, url=tmp_path / "{symbol}.csv", format=fmt))
    (tmp_path / "seamless.yaml").write_text(FILES_MANIFEST.format(name=name))
    assert "added" in _cli(tmp_path, "resolve")
    assert "all match the lock" in _cli(tmp_path, "verify")


def test_the_helper_gives_the_bytes_pyarrow_gives() -> None:
    """engine/arrow_np against pyarrow's own conversions (in this process pandas may load)."""
    from qmtl_engine import arrow_np

    rng = np.random.default_rng(7)
    floats = rng.normal(size=1000)
    floats[[3, 9]] = [np.nan, -0.0]
    valid = rng.random(1000) > 0.1
    for typ, values in [(pa.float64(), floats), (pa.int64(), rng.integers(-9, 9, 1000)),
                        (pa.timestamp("ms", tz="UTC"), rng.integers(0, 2**40, 1000))]:
        ours, theirs = arrow_np.array(values, typ), pa.array(values, type=typ)
        assert ours.type == theirs.type and ours.null_count == theirs.null_count == 0
        assert ours.buffers()[1].to_pybytes() == theirs.buffers()[1].to_pybytes()  # NaN, -0.0
        masked = arrow_np.array(values, typ, valid=valid)
        reference = pa.array(values, type=typ, mask=~valid)
        assert masked.is_valid().equals(reference.is_valid())
        assert masked.fill_null(0).buffers()[1] == reference.fill_null(0).buffers()[1]
        for sliced in (theirs.slice(7, 500), pa.chunked_array([theirs[:5], theirs[5:]])):
            expected = sliced.to_numpy()
            assert arrow_np.values(sliced).tobytes() == np.asarray(expected).tobytes()
        with_nulls = pa.array(values, type=typ, mask=~valid).slice(3)
        got = arrow_np.values(with_nulls, null=0)
        assert (got[~valid[3:]] == 0).all()
        assert got[valid[3:]].tobytes() == np.asarray(values[3:])[valid[3:]].tobytes()
        assert (arrow_np.valid(with_nulls) == valid[3:]).all()
        with pytest.raises(ValueError, match="nulls"):
            arrow_np.values(with_nulls)
    bools = rng.random(1000) > 0.5
    assert arrow_np.array(bools, pa.bool_()).equals(pa.array(bools))
    assert (arrow_np.values(pa.array(bools).slice(13)) == bools[13:]).all()
    assert arrow_np.from_list([1, None, 3], pa.int64()).equals(pa.array([1, None, 3]))
    assert arrow_np.from_list([True, None], pa.bool_()).equals(pa.array([True, None]))
    assert arrow_np.strings(["a", None, "ünï", ""]).equals(pa.array(["a", None, "ünï", ""]))
    assert arrow_np.scalar("x", pa.string()).equals(pa.scalar("x"))
    assert arrow_np.scalar(None, pa.int64()).equals(pa.scalar(None, pa.int64()))
    assert len(arrow_np.values(pa.array([], pa.float64()))) == 0
    with pytest.raises(TypeError):
        arrow_np.array(floats, pa.int64())  # no silent truncation of floats


def test_resolving_adjusted_vendor_files_does_not_import_pandas(tmp_path: Path) -> None:
    """Splits and dividends from the file's own columns (``4:1`` as text), adjusted bars out."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2024, 1, 1, tzinfo=UTC)
    lines = ["Time,Open,High,Low,Close,Volume,Split,Dividend"]
    for i in range(2 * 24 * 60):
        t = start + timedelta(minutes=i)
        price = 100 + (i % 50) / 10
        split = "4:1" if i == 1500 else ""
        dividend = "0.25" if i == 2000 else "0"
        lines.append(f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{price},{price + 1},{price - 1},"
                     f"{price + 0.5},{i},{split},{dividend}")
    (tmp_path / "EURUSD.csv").write_text("\n".join(lines) + "\n")
    catalog = CATALOG.format(name="adjusted", url=tmp_path / "{symbol}.csv",
                             format="split_column: Split\n        dividend_column: Dividend")
    catalog = catalog.replace("    partition: day\n",
                              "    partition: day\n    adjustment: splits_dividends\n")
    (tmp_path / "presets.yaml").write_text(catalog)
    (tmp_path / "seamless.yaml").write_text(FILES_MANIFEST.format(name="adjusted"))
    assert "added" in _cli(tmp_path, "resolve")
    assert "splits_dividends" in (tmp_path / "seamless.lock").read_text()
    assert "all match the lock" in _cli(tmp_path, "verify")


@pytest.mark.parametrize("layout", ["arrays", "objects"])
def test_resolving_a_json_dump_does_not_import_pandas(tmp_path: Path, layout: str) -> None:
    """A REST dump: prices as text, times in seconds, records as arrays or as objects."""
    import json
    from datetime import UTC, datetime

    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    rows = [[start + 60 * i, f"{100 + i % 7}", f"{101 + i % 7}", f"{99 + i % 7}",
             f"{100.5 + i % 7}", i] for i in range(2 * 24 * 60)]
    if layout == "objects":
        names = ["t", "o", "h", "l", "c", "v"]
        records: list[object] = [dict(zip(names, r, strict=True)) for r in rows]
        columns = "{ts: t, open: o, high: h, low: l, close: c, volume: v}"
    else:
        records = list(rows)
        columns = "{ts: 0, open: 1, high: 2, low: 3, close: 4, volume: 5}"
    (tmp_path / "EURUSD.json").write_text(json.dumps({"result": {"EURUSD": records}}))
    catalog = CATALOG.format(name="dump", url=tmp_path / "{symbol}.json",
                             format="format: json\n        records: 'result.{symbol}'\n"
                             "        ts_unit: s")
    catalog = catalog.replace(
        "        columns: {ts: Time, open: Open, high: High, low: Low, close: Close, "
        "volume: Volume}", f"        columns: {columns}")
    (tmp_path / "presets.yaml").write_text(catalog)
    (tmp_path / "seamless.yaml").write_text(FILES_MANIFEST.format(name="dump"))
    assert "added" in _cli(tmp_path, "resolve")
    assert "all match the lock" in _cli(tmp_path, "verify")
