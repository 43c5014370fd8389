"""A dataset may pick its own conformance and SLA preset (issue 12): the refusal hint says to
declare one, so seamless.yaml accepts ``conformance_preset:`` and ``sla_preset:`` per dataset.

What must hold: the override changes the resolved preset (its definition and digest, so ``check``
reports drift when it changes), it is recorded in the lock's request only when set (older locks
keep their bytes), an unknown name is exit 2 at its line, and ``qmtl-lock presets`` lists the
conformance and SLA presets a dataset can name.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from conftest import Project, expect
from vendor_catalog import vendor_catalog

from qmtl_lock.lockfile import read_lock

MANIFEST = """\
version: 1
presets: [vendor.yaml]
datasets:
  daily:
    preset: ohlcv.vendor.crypto.1d
    symbols: [XYZ]
    start: 2024-01-01
    end: 2024-04-10
    contract_version: v1
"""
OVERRIDE = "    contract_version: v1\n    conformance_preset: permissive-dev\n"


def _daily_csv(folder: Path, missing: str) -> None:
    """100 daily bars from 2024-01-01 without the day ``missing``: one gap bar."""
    lines = ["ts,open,high,low,close,volume"]
    day = dt.date(2024, 1, 1)
    for i in range(100):
        if day.isoformat() != missing:
            lines.append(f"{day.isoformat()},{100 + i},{102 + i},{99 + i},{101 + i},{1000 + i}")
        day += dt.timedelta(days=1)
    (folder / "XYZ.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _setup(project: Project, manifest: str = MANIFEST) -> None:
    (project.root / "vendor.yaml").write_text(vendor_catalog("month"), encoding="utf-8")
    _daily_csv(project.root, missing="2024-02-10")
    project.write_manifest(manifest)


def test_a_refused_dataset_resolves_with_the_conformance_preset_the_hint_names(
        project: Project) -> None:
    _setup(project)
    refused = expect(project.run("resolve"), 3)
    assert "gap_bars=1" in refused.output and "permissive-dev" in refused.output

    project.edit_manifest("    contract_version: v1\n", OVERRIDE)
    expect(project.run("resolve"), 0)
    entry = read_lock(project.lock).datasets["daily"]
    assert entry.request["conformance_preset"] == "permissive-dev"
    assert "sla_preset" not in entry.request  # recorded only when set
    assert entry.symbols["XYZ"].conformance_flags["gap_bars"] == 1
    expect(project.run("check"), 0)

    project.edit_manifest(OVERRIDE, "    contract_version: v1\n")
    drift = expect(project.run("check"), 1)
    assert "conformance_preset changed: lock has 'permissive-dev', seamless.yaml has None" \
        in drift.output
    assert "the definition of preset" not in drift.output  # one drift, named by its key


def test_an_sla_override_changes_the_preset_digest_and_check_sees_it(project: Project) -> None:
    _setup(project, MANIFEST.replace("v1\n", "v1\n    conformance_preset: permissive-dev\n"))
    expect(project.run("resolve"), 0)
    before = read_lock(project.lock).datasets["daily"].preset_digest
    project.edit_manifest("permissive-dev\n", "permissive-dev\n    sla_preset: tolerant-partial\n")
    drift = expect(project.run("check", "--json"), 1)
    assert "sla_preset changed" in drift.output
    expect(project.run("resolve"), 0)
    entry = read_lock(project.lock).datasets["daily"]
    assert entry.request["sla_preset"] == "tolerant-partial"
    assert entry.preset_digest != before
    expect(project.run("check"), 0)


def test_an_unknown_override_is_bad_input_at_its_line(project: Project) -> None:
    _setup(project, MANIFEST + "    sla_preset: tolerant-partail\n")
    result = expect(project.run("check"), 2)
    assert "unknown SLA preset 'tolerant-partail'" in result.output
    assert "seamless.yaml:10" in result.output
    assert "did you mean 'tolerant-partial'?" in result.output
    project.write_manifest(MANIFEST + "    conformance_preset: lenient\n")
    result = expect(project.run("resolve"), 2)
    assert "unknown conformance preset 'lenient'" in result.output
    assert "permissive-dev, strict-blocking" in result.output
    assert not project.lock.exists()


def test_presets_lists_the_conformance_and_sla_presets(project: Project) -> None:
    text = expect(project.run("presets"), 0).output
    assert "conformance presets" in text and "SLA presets" in text
    strict = next(line for line in text.splitlines() if line.strip().startswith("strict-"))
    assert "blocks missing_column" in strict
    partial = next(line for line in text.splitlines() if "tolerant-partial" in line)
    assert "min coverage 0.5" in partial and "partial_fill" in partial

    listed = json.loads(expect(project.run("presets", "--json"), 0).output)
    by_kind: dict[str, dict[str, dict[str, object]]] = {}
    for item in listed:
        by_kind.setdefault(item["kind"], {})[item["id"]] = item
    assert by_kind["conformance_preset"]["permissive-dev"]["block"] == []
    assert by_kind["conformance_preset"]["strict-blocking"]["catalog"] == "built-in"
    assert by_kind["sla_preset"]["baseline"]["min_coverage"] == 0.98
    assert "ohlcv.synthetic.crypto.1m" in by_kind["data_preset"]
