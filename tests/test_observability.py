"""What resolve makes visible: Prometheus metrics, JSON reports and structured log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from qmtl_lock.cli import cli

CSV = """Date,Open,High,Low,Close,Volume
2024-01-05,10,11,9,10.5,100
2024-01-02,10,11,9,10.4,100
2024-01-03,10,11,9,10.3,100
2024-01-09,10,11,9,10.2,100
2024-01-10,10,9,9,10.1,100
"""

CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.us_equity.1d:
    kind: ohlcv
    interval_ms: 86400000
    contract: {name: ohlcv, version: v1}
    calendar: XNYS
    source:
      name: files
      options:
        url: "{symbol}.csv"
        ts_format: "%Y-%m-%d"
        columns: {ts: Date, open: Open, high: High, low: Low, close: Close, volume: Volume}
    sla_preset: tolerant-partial
    conformance_preset: permissive-dev
"""

MANIFEST = """\
version: 1
presets: [vendor.yaml]
datasets:
  stocks:
    preset: ohlcv.vendor.us_equity.1d
    symbols: [ACME]
    start: 2024-01-02
    end: 2024-01-11
    contract_version: v1
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    (tmp_path / "ACME.csv").write_text(CSV, encoding="utf-8")
    (tmp_path / "vendor.yaml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    return tmp_path


def run(project: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["resolve", "-m", str(project / "seamless.yaml"), *args])
    assert result.exit_code == 0, result.output
    return result.output


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_file(project: Path) -> None:
    run(project, "--metrics-file", str(project / "m.prom"))
    m = metrics(project / "m.prom")
    preset = ("preset", "ohlcv.vendor.us_equity.1d")

    def flag(name: str) -> float:
        return m[("seamless_conformance_flag_total", (("flag", name), preset))]

    # Jan 4 and Jan 8 are sessions with no bar; Jan 10 has high < close
    assert flag("gap_bars") == 2
    assert flag("unsorted_ts") == 1
    assert flag("ohlc_inconsistent") == 1
    assert m[("backfill_completion_ratio", (preset, ("symbol", "ACME")))] == pytest.approx(5 / 7)
    assert m[("seamless_sla_deadline_seconds", (("phase", "total"), preset))] == 300
    assert m[("seamless_partitions_total", (("action", "fetched"), preset))] == 1
    assert m[("seamless_store_bytes_written_total", (preset,))] > 0
    assert ("seamless_source_retries_total", (preset,)) in m


def test_report_lists_counts_and_first_offending_times(project: Path) -> None:
    run(project, "--report", str(project / "r.json"))
    [report] = json.loads((project / "r.json").read_text())
    assert report["dataset"] == "stocks" and report["symbol"] == "ACME"
    conformance = report["conformance"]
    assert conformance["counts"]["gap_bars"] == 2
    assert conformance["samples"]["gap_bars"] == ["2024-01-04T00:00:00Z", "2024-01-08T00:00:00Z"]
    assert conformance["samples"]["ohlc_inconsistent"] == ["2024-01-10T00:00:00Z"]
    assert conformance["samples"]["unsorted_ts"] == ["2024-01-02T00:00:00Z"]
    assert report["completion"] == pytest.approx(5 / 7, abs=1e-6)
    assert report["dataset_fingerprint"].startswith("sha256:")
    assert report["sla_violation"] is None


def test_log_lines_name_dataset_symbol_and_partition(project: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="qmtl_lock.engine"):
        run(project)
    lines = [r.getMessage() for r in caplog.records if r.name == "qmtl_lock.engine"]
    assert any(line.startswith("conformed dataset=stocks symbol=ACME partition=2024 ")
               and "gap_bars:2" in line for line in lines), lines
    assert any(line.startswith("materialized dataset=stocks symbol=ACME fingerprint=sha256:")
               for line in lines), lines
