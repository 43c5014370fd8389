"""``qmtl-lock show --gaps`` on a 24x5 FX file whose New Year closure spans the December/January
partition boundary (issue 12): the closure is one range with its full bar count, not one range
per partition. On the same lock, ``show`` prints fingerprints in full with ``--json`` and, in
its table, cut to the shortest prefix (12 hex digits at least) that tells the rows apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from click.testing import CliRunner
from qmtl_engine.calendars import get_calendar
from qmtl_engine.ranges import HOUR_MS, TimeRange, iso, to_ms

from qmtl_lock.cli import cli

CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.fx.1h:
    kind: ohlcv
    interval_ms: 3600000
    contract: {name: ohlcv, version: v1}
    calendar: 24x5
    partition: month
    source: {name: files, options: {url: "{symbol}.csv"}}
    sla_preset: tolerant-partial
    conformance_preset: permissive-dev
"""
MANIFEST = """\
version: 1
presets: [fx.yaml]
datasets:
  fx:
    preset: ohlcv.vendor.fx.1h
    symbols: [EURUSD]
    start: 2023-12-18
    end: 2024-01-13
    contract_version: v1
"""
SPAN = TimeRange(to_ms("2023-12-18"), to_ms("2024-01-13"))
# The vendor's file stops on Friday 29 December and resumes on Tuesday 2 January.
CLOSED = TimeRange(to_ms("2023-12-29T12:00:00Z"), to_ms("2024-01-02T10:00:00Z"))
# and misses two hours on 8 January, away from any boundary
OUTAGE = TimeRange(to_ms("2024-01-08T03:00:00Z"), to_ms("2024-01-08T05:00:00Z"))


def _fx_csv(path: Path) -> None:
    hours = get_calendar("24x5").expected(SPAN, HOUR_MS)
    held = hours[~(((hours >= CLOSED.start) & (hours < CLOSED.end))
                   | ((hours >= OUTAGE.start) & (hours < OUTAGE.end)))]
    price = 1.1 + np.arange(held.size) * 1e-5
    pacsv.write_csv(pa.table({
        "ts": [iso(int(t)) for t in held], "open": price, "high": price + 1e-4,
        "low": price - 1e-4, "close": price, "volume": np.full(held.size, 100.0)}), path)


@pytest.fixture
def fx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "fx.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    _fx_csv(tmp_path / "EURUSD.csv")
    resolved = CliRunner().invoke(cli, ["resolve", "-m", str(tmp_path / "seamless.yaml")])
    assert resolved.exit_code == 0, resolved.output
    return tmp_path / "seamless.yaml"


def test_a_gap_across_a_partition_boundary_is_one_range(fx: Path) -> None:
    closed_bars = get_calendar("24x5").expected(CLOSED, HOUR_MS).size
    in_december = get_calendar("24x5").expected(
        TimeRange(CLOSED.start, to_ms("2024-01-01")), HOUR_MS).size
    assert 0 < in_december < closed_bars  # the closure does straddle the boundary

    shown = CliRunner().invoke(cli, ["show", "--gaps", "fx", "-m", str(fx)])
    assert shown.exit_code == 0, shown.output
    assert shown.output == (
        f"fx/EURUSD  [2023-12-29T12:00:00Z, 2024-01-02T10:00:00Z)  {closed_bars} bars\n"
        "fx/EURUSD  [2024-01-08T03:00:00Z, 2024-01-08T05:00:00Z)  2 bars\n")

    as_json = CliRunner().invoke(cli, ["show", "--gaps", "fx", "--json", "-m", str(fx)])
    assert as_json.exit_code == 0, as_json.output
    assert [(g["start"], g["end"], g["bars"]) for g in json.loads(as_json.output)] == [
        ("2023-12-29T12:00:00Z", "2024-01-02T10:00:00Z", closed_bars),
        ("2024-01-08T03:00:00Z", "2024-01-08T05:00:00Z", 2)]


# -- fingerprints: in full with --json, told apart on a terminal ---------------------------------
def test_show_prints_fingerprints_in_full_as_json_and_unique_prefixes_in_the_table(
        fx: Path) -> None:
    from qmtl_lock.lockfile import read_lock

    full = read_lock(fx.with_name("seamless.lock")).datasets["fx"].symbols["EURUSD"]
    rows = json.loads(CliRunner().invoke(cli, ["show", "--json", "-m", str(fx)]).output)
    assert rows[0]["fingerprint"] == full.dataset_fingerprint
    assert len(rows[0]["fingerprint"]) == len("sha256:") + 64
    table = CliRunner().invoke(cli, ["show", "-m", str(fx)]).output
    assert f" {full.dataset_fingerprint[:19]}… " in table  # 12 hex digits tell one row apart


def test_fingerprints_that_share_a_long_prefix_are_cut_where_they_differ() -> None:
    from qmtl_lock.show import short_fingerprints

    a = "sha256:" + "0123456789abcdef" + "0" * 48
    b = "sha256:" + "0123456789abcdef" + "1" * 48
    c = "sha256:" + "f" * 64
    assert short_fingerprints([a, b, c, a]) == {
        a: "sha256:0123456789abcdef0…", b: "sha256:0123456789abcdef1…",
        c: "sha256:" + "f" * 17 + "…"}  # one length for every row: the column stays aligned
    assert short_fingerprints([c]) == {c: "sha256:ffffffffffff…"}
