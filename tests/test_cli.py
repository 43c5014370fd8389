"""The command line, end to end: init, resolve, check, verify, show, presets, materialize.

Most tests run through click's CliRunner inside a temp project (see conftest.py); a few run the
real interpreter with ``python -m qmtl_lock.cli`` to check exit codes and streams as CI sees them.
Exit codes (DESIGN §10): 0 ok, 1 drift or verification failure, 2 bad input, 3 materialization.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CRYPTO_ROWS, EQUITY_ROWS, LATER, NOW, Project, expect
from qmtl_engine.errors import FingerprintMismatch, IntegrityError, ObjectMissing
from qmtl_engine.store import Store

from qmtl_lock.lockfile import read_lock

HEX = re.compile(r"sha256:[0-9a-f]{64}")
WINDOW_JAN = "2024-01 [2024-01-30T00:00:00Z, 2024-02-01T00:00:00Z)"


def _scrub(project: Project, text: str) -> str:
    return HEX.sub("sha256:<hex>", project.scrub(text))


def _store(project: Project) -> Store:
    return Store(str(project.store))


def _partition_objects(project: Project, dataset: str, symbol: str) -> list[Path]:
    """Object files of a locked snapshot, in partition order."""
    store = _store(project)
    fp = read_lock(project.lock).datasets[dataset].symbols[symbol].dataset_fingerprint
    return [Path(store.object_path(p.digest)) for p in store.get_snapshot(fp).partitions]


def _flip_one_value(path: Path, row: int = 5, column: str = "close") -> None:
    """Rewrite a Parquet object with one value moved by one ulp, keeping its name."""
    table = pq.read_table(path)
    values = table[column].to_numpy().copy()
    values[row] = np.nextafter(values[row], np.inf)
    table = table.set_column(table.column_names.index(column), column, pa.array(values))
    pq.write_table(table, path)


def _changes(result_output: str) -> list[dict[str, object]]:
    changes: list[dict[str, object]] = json.loads(result_output)["changes"]
    return changes


# -- init --------------------------------------------------------------------------------------
def test_init_writes_manifest_and_gitignore_then_refuses_twice(project: Project) -> None:
    empty = project.root / "fresh"
    result = expect(project.run("init", "--dir", str(empty)), 0)
    assert (empty / "seamless.yaml").exists()
    assert ".seamless/" in (empty / ".gitignore").read_text().splitlines()
    assert "wrote" in result.output
    assert "qmtl-lock resolve" in result.output
    again = expect(project.run("init", "--dir", str(empty)), 2)
    assert "already exists" in again.output
    assert "--force" in again.output


def test_init_keeps_existing_gitignore_lines(project: Project) -> None:
    empty = project.root / "fresh"
    empty.mkdir()
    (empty / ".gitignore").write_text("*.pyc\n.seamless/\n")
    expect(project.run("init", "--dir", str(empty)), 0)
    assert (empty / ".gitignore").read_text() == "*.pyc\n.seamless/\n"
    expect(project.run("init", "--dir", str(empty), "--force"), 0)


def test_init_starter_manifest_is_valid(project: Project) -> None:
    from qmtl_lock.manifest import load_manifest

    empty = project.root / "fresh"
    expect(project.run("init", "--dir", str(empty)), 0)
    loaded = load_manifest(empty / "seamless.yaml")
    assert loaded.datasets


# -- resolve -----------------------------------------------------------------------------------
def test_resolve_writes_the_lock(project: Project) -> None:
    result = expect(project.run("resolve"), 0)
    assert project.lock.exists()
    assert "wrote seamless.lock" in result.output
    for who in ("crypto/BTCUSDT", "crypto/ETHUSDT", "equities/AAPL", "equities/MSFT"):
        assert f"added     {who}" in result.output
    lock = read_lock(project.lock)
    assert lock.datasets["crypto"].symbols["BTCUSDT"].rows == CRYPTO_ROWS
    assert lock.datasets["equities"].symbols["AAPL"].rows == EQUITY_ROWS
    expect(project.run("check"), 0)
    expect(project.run("verify"), 0)


def test_second_resolve_is_a_no_op_that_reads_no_data(resolved: Project,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    before = resolved.lock.read_bytes()
    mtime = resolved.lock.stat().st_mtime_ns
    # No data may be read: remove every object (snapshot manifests stay) and make every way of
    # reading or fetching data explode.
    shutil.rmtree(resolved.objects)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a no-op resolve must not read or fetch data")

    import qmtl_engine.materialize

    monkeypatch.setattr(qmtl_engine.materialize.Engine, "apply", forbidden)
    monkeypatch.setattr(qmtl_engine.materialize.Engine, "plan", forbidden)
    monkeypatch.setattr(qmtl_engine.materialize, "make_source", forbidden)
    monkeypatch.setattr(Store, "read_object", forbidden)
    monkeypatch.setattr(Store, "get_snapshot", forbidden)

    from qmtl_lock.resolve import resolve

    result = resolve(resolved.manifest)
    assert [c.action for c in result.changes] == ["unchanged"] * 4
    assert result.wrote is False
    out = expect(resolved.run("resolve"), 0)
    assert out.output.strip() == "seamless.lock is up to date"
    assert resolved.lock.read_bytes() == before
    assert resolved.lock.stat().st_mtime_ns == mtime


def test_resolve_into_an_empty_store_reproduces_the_lock(resolved: Project) -> None:
    committed = resolved.lock.read_bytes()
    shutil.rmtree(resolved.root / ".seamless")
    result = expect(resolved.run("resolve"), 0)
    assert resolved.lock.read_bytes() == committed
    assert "restored  crypto/BTCUSDT: snapshot rebuilt in the store" in result.output
    assert "seamless.lock is up to date" in result.output
    expect(resolved.run("verify"), 0)


def test_resolve_on_another_machine_reproduces_the_lock(resolved: Project) -> None:
    """A fresh clone (manifest + lock only, elsewhere) resolves to the committed bytes."""
    clone = resolved.root.parent / "clone"
    clone.mkdir()
    for name in ("seamless.yaml", "seamless.lock"):
        shutil.copy(resolved.root / name, clone / name)
    expect(resolved.run("resolve", "-m", str(clone / "seamless.yaml")), 0)
    assert (clone / "seamless.lock").read_bytes() == resolved.lock.read_bytes()
    assert (clone / ".seamless" / "store" / "objects").is_dir()


def test_resolve_single_dataset_leaves_others_alone(resolved: Project) -> None:
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    resolved.edit_manifest("end: 2013-01-01", "end: 2012-07-01")
    result = expect(resolved.run("resolve", "crypto", "--json"), 0)
    assert {c["dataset"] for c in _changes(result.output) if c["action"] != "unchanged"} == {
        "crypto"}
    lock = read_lock(resolved.lock)
    assert lock.datasets["equities"].request["end"] == "2013-01-01"
    assert lock.datasets["crypto"].request["end"] == "2024-02-03"


def test_resolve_unknown_dataset_is_bad_input(resolved: Project) -> None:
    result = expect(resolved.run("resolve", "nope"), 2)
    assert "unknown dataset 'nope'" in result.output
    assert "crypto, equities" in result.output


def test_resolve_bad_manifest_exits_2_with_file_and_line(resolved: Project) -> None:
    before = resolved.lock.read_bytes()
    resolved.edit_manifest("retention_class: research-short", "retention_class: forever")
    result = expect(resolved.run("resolve"), 2)
    assert "seamless.yaml:10 (key datasets.crypto.retention_class)" in result.stderr
    assert result.stdout == ""
    assert resolved.lock.read_bytes() == before


def test_resolve_json_output(resolved: Project) -> None:
    resolved.edit_manifest("[AAPL, MSFT]", "[AAPL]")
    data = json.loads(expect(resolved.run("resolve", "--json"), 0).output)
    assert data["ok"] is True
    assert data["wrote"] is True
    assert data["lock"].endswith("seamless.lock")
    actions = {(c["dataset"], c["symbol"]): c["action"] for c in data["changes"]}
    assert actions[("crypto", "BTCUSDT")] == "unchanged"
    assert ("equities", "MSFT") not in actions
    assert set(read_lock(resolved.lock).datasets["equities"].symbols) == {"AAPL"}


def test_removed_dataset_leaves_the_lock(resolved: Project) -> None:
    text = resolved.manifest.read_text()
    resolved.write_manifest(text.split("  equities:")[0])
    result = expect(resolved.run("resolve"), 0)
    assert "removed   equities: no longer in seamless.yaml" in result.output
    assert set(read_lock(resolved.lock).datasets) == {"crypto"}


def test_changed_range_refetches_only_changed_partitions(resolved: Project) -> None:
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    data = json.loads(expect(resolved.run("resolve", "--json"), 0).output)
    btc = next(c for c in data["changes"] if c["symbol"] == "BTCUSDT")
    assert btc["action"] == "updated"
    # January is closed and identical; the clipped February window changed
    assert "fetched 1, reused 1 partitions" in btc["detail"]
    entry = read_lock(resolved.lock).datasets["crypto"].symbols["BTCUSDT"]
    assert entry.rows == 4 * 24 * 60
    expect(resolved.run("check"), 0)
    expect(resolved.run("verify"), 0)


def test_changed_retention_keeps_fingerprint_and_as_of(resolved: Project) -> None:
    old = read_lock(resolved.lock).datasets["crypto"].symbols["BTCUSDT"]
    resolved.edit_manifest("retention_class: research-short", "retention_class: research-long")
    expect(resolved.run("check"), 1)
    expect(resolved.run("resolve"), 0)
    new = read_lock(resolved.lock).datasets["crypto"].symbols["BTCUSDT"]
    assert new.dataset_fingerprint == old.dataset_fingerprint
    assert new.as_of == old.as_of
    assert new.retention_class == "research-long"
    assert new.expires_at == old.as_of + 365 * 86_400_000
    expect(resolved.run("check"), 0)


# -- check: drift, each by name ---------------------------------------------------------------
def _drift(project: Project) -> tuple[str, list[dict[str, object]]]:
    text = expect(project.run("check"), 1).output
    data = json.loads(expect(project.run("check", "--json"), 1).output)
    assert data["ok"] is False
    return text, data["drift"]


def test_check_in_sync(resolved: Project) -> None:
    result = expect(resolved.run("check"), 0)
    assert result.output.strip() == "seamless.lock is up to date"
    data = json.loads(expect(resolved.run("check", "--json"), 0).output)
    assert data == {"ok": True, "drift": []}


def test_check_without_a_lock(project: Project) -> None:
    text, drift = _drift(project)
    assert "seamless.lock does not exist" in text
    assert drift[0]["kind"] == "missing-lock"


def test_check_drift_changed_range(resolved: Project) -> None:
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    text, drift = _drift(resolved)
    assert "crypto: end changed: lock has '2024-02-02', seamless.yaml has '2024-02-03'" in text
    assert {"dataset": "crypto", "symbol": None, "kind": "request",
            "detail": "end changed: lock has '2024-02-02', seamless.yaml has '2024-02-03'",
            "fix": "run `qmtl-lock resolve` and commit seamless.lock"} in drift
    assert "equities" not in text


def test_check_drift_changed_start(resolved: Project) -> None:
    resolved.edit_manifest("start: 2011-01-01", "start: 2011-06-01")
    text, drift = _drift(resolved)
    assert "equities: start changed: lock has '2011-01-01', seamless.yaml has '2011-06-01'" in text
    assert {d["dataset"] for d in drift} == {"equities"}


def test_check_range_change_is_not_reported_as_a_hand_edited_lock(resolved: Project) -> None:
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    text, drift = _drift(resolved)
    assert [d["kind"] for d in drift] == ["request"]
    assert "restore the lock from git" not in text


def test_check_drift_added_symbol(resolved: Project, snapshot: object) -> None:
    resolved.edit_manifest("[BTCUSDT, ETHUSDT]", "[BTCUSDT, ETHUSDT, SOLUSDT]")
    text, drift = _drift(resolved)
    assert "crypto: symbols not locked yet: SOLUSDT" in text
    assert [(d["dataset"], d["kind"]) for d in drift] == [("crypto", "symbols")]
    assert _scrub(resolved, text) == snapshot


def test_check_drift_removed_symbol(resolved: Project) -> None:
    resolved.edit_manifest("[AAPL, MSFT]", "[MSFT]")
    text, drift = _drift(resolved)
    assert "equities: symbols locked but no longer asked for: AAPL" in text
    assert [(d["dataset"], d["kind"]) for d in drift] == [("equities", "symbols")]


def test_check_drift_symbols_added_and_removed(resolved: Project, snapshot: object) -> None:
    resolved.edit_manifest("[BTCUSDT, ETHUSDT]", "[BTCUSDT, SOLUSDT]")
    resolved.edit_manifest("[AAPL, MSFT]", "[AAPL, IBM, MSFT]")
    text, drift = _drift(resolved)
    assert "crypto: symbols not locked yet: SOLUSDT" in text
    assert "crypto: symbols locked but no longer asked for: ETHUSDT" in text
    assert "equities: symbols not locked yet: IBM" in text
    assert {d["kind"] for d in drift} == {"symbols"}
    assert _scrub(resolved, text) == snapshot


def test_check_drift_changed_preset(resolved: Project) -> None:
    resolved.edit_manifest("ohlcv.synthetic.crypto.1m", "ohlcv.synthetic.crypto.1h")
    text, drift = _drift(resolved)
    assert ("crypto: preset changed: lock has 'ohlcv.synthetic.crypto.1m', seamless.yaml has "
            "'ohlcv.synthetic.crypto.1h'") in text
    assert ("crypto", "request") in {(d["dataset"], d["kind"]) for d in drift}
    assert {d["dataset"] for d in drift} == {"crypto"}


def test_check_changed_preset_id_does_not_claim_a_changed_definition(resolved: Project) -> None:
    resolved.edit_manifest("ohlcv.synthetic.crypto.1m", "ohlcv.synthetic.crypto.1h")
    text, drift = _drift(resolved)
    assert "definition of preset" not in text
    assert [d["kind"] for d in drift] == ["request"]


CATALOG = """\
version: 1
data_presets:
  ohlcv.custom.crypto.1h:
    kind: ohlcv
    interval_ms: 3600000
    contract: {{name: ohlcv, version: {contract}}}
    calendar: 24x7
    source: {{name: synthetic, options: {{seed: {seed}}}}}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""

CUSTOM = """\
version: 1
presets: [presets.yaml]
datasets:
  custom:
    preset: ohlcv.custom.crypto.1h
    symbols: [BTCUSDT]
    start: 2024-01-01
    end: 2024-01-03
    contract_version: {contract}
"""


def _custom_project(project: Project, *, contract: str = "v1", seed: int = 7) -> None:
    (project.root / "presets.yaml").write_text(CATALOG.format(contract=contract, seed=seed))
    project.write_manifest(CUSTOM.format(contract=contract))


def test_check_drift_changed_contract_version(project: Project, snapshot: object) -> None:
    _custom_project(project)
    expect(project.run("resolve"), 0)
    expect(project.run("check"), 0)
    _custom_project(project, contract="v2")  # the catalog now offers v2, the manifest asks it
    text, drift = _drift(project)
    assert "custom: contract_version changed: lock has 'v1', seamless.yaml has 'v2'" in text
    assert "update the strategy code for the new contract" in text
    assert ("custom", "contract") in {(d["dataset"], d["kind"]) for d in drift}
    assert _scrub(project, text) == snapshot


def test_check_drift_changed_preset_definition(project: Project) -> None:
    _custom_project(project)
    expect(project.run("resolve"), 0)
    _custom_project(project, seed=8)
    text, drift = _drift(project)
    assert "custom: the definition of preset ohlcv.custom.crypto.1h changed" in text
    assert [d["kind"] for d in drift] == ["preset"]
    result = expect(project.run("resolve"), 0)
    assert "updated   custom/BTCUSDT: changed preset definition" in result.output
    expect(project.run("check"), 0)


def test_check_drift_new_and_removed_dataset(resolved: Project) -> None:
    text = resolved.manifest.read_text().replace("  equities:", "  stocks:")
    resolved.write_manifest(text)
    out, drift = _drift(resolved)
    kinds = {(d["dataset"], d["kind"]) for d in drift}
    assert kinds == {("stocks", "new-dataset"), ("equities", "removed-dataset")}
    assert "stocks: in seamless.yaml but not in the lock" in out
    assert "equities: locked but no longer in seamless.yaml" in out


def test_check_json_structure(resolved: Project) -> None:
    resolved.edit_manifest("[BTCUSDT, ETHUSDT]", "[BTCUSDT]")
    data = json.loads(expect(resolved.run("check", "--json"), 1).output)
    assert set(data) == {"ok", "drift"}
    assert data["ok"] is False
    for d in data["drift"]:
        assert set(d) == {"dataset", "symbol", "kind", "detail", "fix"}
        assert all(isinstance(d[k], str) for k in ("dataset", "kind", "detail", "fix"))


def test_check_does_not_read_the_store(resolved: Project) -> None:
    shutil.rmtree(resolved.root / ".seamless")
    expect(resolved.run("check"), 0)


def test_check_bad_manifest_exits_2(resolved: Project) -> None:
    resolved.edit_manifest("version: 1", "version: 1\nversion: 1")
    result = expect(resolved.run("check"), 2)
    assert "duplicate key 'version'" in result.output
    data = json.loads(expect(resolved.run("check", "--json"), 2).output)
    assert data["ok"] is False
    assert data["error"] == "ManifestError"


def test_check_impossible_date_exits_2(resolved: Project) -> None:
    """An unquoted impossible date must be bad input (2), never a traceback read as drift (1)."""
    resolved.edit_manifest("start: 2024-01-30", "start: 2024-02-30")
    result = expect(resolved.run("check"), 2)
    assert "seamless.yaml:7" in result.output
    assert "2024-02-30" in result.output


# -- verify ------------------------------------------------------------------------------------
def test_verify_clean(resolved: Project) -> None:
    result = expect(resolved.run("verify"), 0)
    rows = 2 * CRYPTO_ROWS + 2 * EQUITY_ROWS
    assert result.output.strip() == f"verified 4 snapshot(s), {rows} rows: all match the lock"
    data = json.loads(expect(resolved.run("verify", "--json"), 0).output)
    assert data == {"ok": True, "checked": 4, "rows": rows, "problems": []}
    assert "verified 2 snapshot(s)" in expect(resolved.run("verify", "equities"), 0).output


def test_verify_flipped_value_names_the_partition(resolved: Project, snapshot: object) -> None:
    jan = _partition_objects(resolved, "crypto", "BTCUSDT")[0]
    _flip_one_value(jan)
    result = expect(resolved.run("verify"), 1)
    assert f"crypto/BTCUSDT partition {WINDOW_JAN}: store object is corrupted" in result.output
    assert "ETHUSDT" not in result.output
    assert _scrub(resolved, result.output) == snapshot
    data = json.loads(expect(resolved.run("verify", "--json"), 1).output)
    [problem] = data["problems"]
    assert problem["kind"] == "object-corrupted"
    assert problem["partition"] == WINDOW_JAN
    assert (problem["dataset"], problem["symbol"]) == ("crypto", "BTCUSDT")

    from qmtl_lock import Lock

    lock = Lock.open(resolved.lock)
    with pytest.raises(FingerprintMismatch) as info:
        lock.load("crypto", "BTCUSDT")
    assert info.value.partition == WINDOW_JAN
    assert info.value.dataset == "crypto"
    assert info.value.symbol == "BTCUSDT"
    assert WINDOW_JAN in str(info.value)
    lock.load("crypto", "ETHUSDT")  # other data stays loadable


def test_verify_swapped_objects(resolved: Project) -> None:
    jan, feb = _partition_objects(resolved, "crypto", "ETHUSDT")
    jan.write_bytes(feb.read_bytes())
    result = expect(resolved.run("verify"), 1)
    assert f"crypto/ETHUSDT partition {WINDOW_JAN}" in result.output
    assert "2024-02 " not in result.output  # the untouched partition is fine
    from qmtl_lock import Lock

    with pytest.raises(FingerprintMismatch) as info:
        Lock.open(resolved.lock).load("crypto", "ETHUSDT")
    assert info.value.partition == WINDOW_JAN


def test_verify_object_from_another_symbol(resolved: Project) -> None:
    btc = _partition_objects(resolved, "crypto", "BTCUSDT")[1]
    eth = _partition_objects(resolved, "crypto", "ETHUSDT")[1]
    btc.write_bytes(eth.read_bytes())
    result = expect(resolved.run("verify", "crypto"), 1)
    assert "crypto/BTCUSDT partition 2024-02" in result.output


def test_verify_garbage_object_is_corrupted(resolved: Project) -> None:
    obj = _partition_objects(resolved, "equities", "AAPL")[0]
    obj.write_bytes(b"PAR1 not really parquet")
    data = json.loads(expect(resolved.run("verify", "--json"), 1).output)
    [problem] = data["problems"]
    assert problem["kind"] == "object-corrupted"
    assert problem["partition"] == "2011"


def test_verify_missing_object(resolved: Project) -> None:
    obj = _partition_objects(resolved, "equities", "MSFT")[1]
    obj.unlink()
    result = expect(resolved.run("verify"), 1)
    assert "equities/MSFT partition 2012: store object sha256:" in result.output
    assert "is missing" in result.output
    with pytest.raises(ObjectMissing):
        from qmtl_lock import Lock

        Lock.open(resolved.lock).load("equities", "MSFT")


def test_verify_hand_edited_fingerprint(resolved: Project) -> None:
    fp = read_lock(resolved.lock).datasets["crypto"].symbols["BTCUSDT"].dataset_fingerprint
    last = fp[-1]
    edited = fp[:-1] + ("0" if last != "0" else "1")
    resolved.edit_lock(fp, edited)
    result = expect(resolved.run("verify"), 1)
    assert "crypto/BTCUSDT" in result.output
    assert edited in result.output
    from qmtl_lock import Lock

    with pytest.raises(IntegrityError):
        Lock.open(resolved.lock).load("crypto", "BTCUSDT")
    # and resolve refuses to silently "fix" the pin: the source reproduces the old fingerprint
    bad = expect(resolved.run("resolve"), 3)
    assert "the source no longer reproduces the locked data" in bad.output
    assert edited in bad.output


def test_verify_hand_edited_row_count(resolved: Project) -> None:
    resolved.edit_lock(f"rows: {EQUITY_ROWS}", f"rows: {EQUITY_ROWS + 1}")
    result = expect(resolved.run("verify"), 1)
    assert "equities/AAPL: the lock's rows differ from the pinned snapshot" in result.output


def test_frozen_restores_objects_missing_under_a_present_snapshot(resolved: Project) -> None:
    """`resolve --frozen` rebuilds a missing object even though the snapshot manifest is still
    in the store (verify's advice for it is now `qmtl-lock repair`, see tests/test_repair.py)."""
    before = resolved.lock.read_bytes()
    missing = _partition_objects(resolved, "crypto", "BTCUSDT")[0]
    missing.unlink()
    result = expect(resolved.run("verify"), 1)
    assert "fix: run `qmtl-lock repair crypto`" in result.output
    expect(resolved.run("resolve", "--frozen"), 0)
    assert missing.exists()
    assert resolved.lock.read_bytes() == before
    expect(resolved.run("verify"), 0)


def test_deleting_a_corrupted_object_and_frozen_repairs_it(resolved: Project) -> None:
    obj = _partition_objects(resolved, "crypto", "BTCUSDT")[0]
    _flip_one_value(obj)
    expect(resolved.run("verify"), 1)
    obj.unlink()
    expect(resolved.run("resolve", "--frozen"), 0)
    expect(resolved.run("verify"), 0)
    _store(resolved).check_object("sha256:" + obj.stem)


def test_verify_advice_repairs_a_corrupted_object(resolved: Project) -> None:
    """Follow the advice verify prints, literally: the lock is unchanged, so run repair."""
    _flip_one_value(_partition_objects(resolved, "crypto", "BTCUSDT")[0])
    result = expect(resolved.run("verify"), 1)
    assert "it moves corrupted files aside" in result.output
    assert "fix: run `qmtl-lock repair crypto`" in result.output
    named = re.findall(r"\((/[^()]+\.parquet)\)", result.output)
    assert len(named) == 1
    expect(resolved.run("repair", "crypto"), 0)
    [moved] = (resolved.store / "quarantine").rglob("*.parquet")
    assert moved.name == Path(named[0]).name
    _store(resolved).check_object("sha256:" + Path(named[0]).stem)
    expect(resolved.run("verify"), 0)


# -- lock_version from the future ----------------------------------------------------------------
@pytest.mark.parametrize("command", ["check", "verify", "resolve", "show"])
def test_lock_from_the_future_exits_2(resolved: Project, command: str) -> None:
    resolved.edit_lock("lock_version: 1", "lock_version: 2")
    before = resolved.lock.read_bytes()
    result = expect(resolved.run(command), 2)
    assert ("error: seamless.lock has lock_version 2; this qmtl-lock reads lock_version 1"
            in result.stderr)
    assert "upgrade qmtl-lock" in result.stderr
    assert resolved.lock.read_bytes() == before


# -- end: now ----------------------------------------------------------------------------------
NOW_MANIFEST = """\
version: 1
datasets:
  live:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BTCUSDT]
    start: 2024-04-28
    end: now
    contract_version: v1
"""
T1 = "2024-06-01T12:00:00Z"


def test_end_now_is_pinned(project: Project) -> None:
    project.write_manifest(NOW_MANIFEST)
    expect(project.run("resolve", env={"QMTL_LOCK_NOW": T1}), 0)
    entry = read_lock(project.lock).datasets["live"].symbols["BTCUSDT"]
    assert entry.coverage_bounds[1] == _ms("2024-06-01T11:58:00Z")  # 2 stabilization bars
    before = project.lock.read_bytes()
    result = expect(project.run("resolve", env={"QMTL_LOCK_NOW": LATER}), 0)
    assert result.output.strip() == "seamless.lock is up to date"
    assert project.lock.read_bytes() == before
    expect(project.run("check", env={"QMTL_LOCK_NOW": LATER}), 0)
    expect(project.run("resolve", "--locked", env={"QMTL_LOCK_NOW": LATER}), 0)


def test_new_symbol_joins_the_pinned_end(project: Project) -> None:
    project.write_manifest(NOW_MANIFEST)
    expect(project.run("resolve", env={"QMTL_LOCK_NOW": T1}), 0)
    project.edit_manifest("[BTCUSDT]", "[BTCUSDT, ETHUSDT]")
    expect(project.run("resolve", env={"QMTL_LOCK_NOW": LATER}), 0)
    symbols = read_lock(project.lock).datasets["live"].symbols
    assert symbols["ETHUSDT"].coverage_bounds == symbols["BTCUSDT"].coverage_bounds
    assert symbols["ETHUSDT"].as_of == _ms(LATER)
    assert symbols["BTCUSDT"].as_of == _ms(T1)


def test_update_moves_end_now_and_fetches_only_new_partitions(project: Project) -> None:
    project.write_manifest(NOW_MANIFEST)
    expect(project.run("resolve", env={"QMTL_LOCK_NOW": T1}), 0)
    old = read_lock(project.lock).datasets["live"].symbols["BTCUSDT"]
    result = expect(project.run("resolve", "--update", "--json",
                                env={"QMTL_LOCK_NOW": LATER}), 0)
    [change] = _changes(result.output)
    assert change["action"] == "extended"
    assert change["detail"] == ("coverage end 2024-06-01T11:58:00Z -> 2024-06-02T23:58:00Z; "
                                "fetched 1, reused 2 partitions")
    new = read_lock(project.lock).datasets["live"].symbols["BTCUSDT"]
    assert new.coverage_bounds == (old.coverage_bounds[0], _ms("2024-06-02T23:58:00Z"))
    assert new.as_of == _ms(LATER)
    assert new.dataset_fingerprint != old.dataset_fingerprint
    assert new.rows == old.rows + (_ms("2024-06-02T23:58:00Z") - old.coverage_bounds[1]) // 60_000
    # a second --update at the same time changes nothing
    again = expect(project.run("resolve", "--update", "--json",
                               env={"QMTL_LOCK_NOW": LATER}), 0)
    assert json.loads(again.output)["wrote"] is False
    expect(project.run("verify"), 0)


def test_update_can_name_one_dataset(project: Project) -> None:
    project.write_manifest(NOW_MANIFEST + NOW_MANIFEST.split("datasets:\n")[1]
                           .replace("live:", "other:"))
    expect(project.run("resolve", env={"QMTL_LOCK_NOW": T1}), 0)
    expect(project.run("resolve", "--update", "other", env={"QMTL_LOCK_NOW": LATER}), 0)
    lock = read_lock(project.lock)
    assert lock.datasets["live"].symbols["BTCUSDT"].coverage_bounds[1] == _ms(
        "2024-06-01T11:58:00Z")
    assert lock.datasets["other"].symbols["BTCUSDT"].coverage_bounds[1] == _ms(
        "2024-06-02T23:58:00Z")


def _ms(text: str) -> int:
    from qmtl_engine.ranges import to_ms

    return to_ms(text)


# -- --dry-run, --locked, --frozen ---------------------------------------------------------------
def test_dry_run_prints_the_plan_and_writes_nothing(project: Project) -> None:
    result = expect(project.run("resolve", "--dry-run"), 0)
    assert "added     crypto/BTCUSDT: new dataset; would fetch 2 of 2 partitions" in result.output
    assert f"    fetch {WINDOW_JAN}" in result.output
    assert "    fetch 2011" in result.output
    assert "dry run: nothing fetched, seamless.lock not written" in result.output
    assert not project.lock.exists()
    assert not list(project.root.glob(".seamless/store/objects/**/*.parquet"))
    assert not list(project.root.glob(".seamless/store/snapshots/**/*.json"))


def test_dry_run_on_a_resolved_project_shows_reuse(resolved: Project) -> None:
    before = resolved.lock.read_bytes()
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    objects = resolved.object_files()
    result = expect(resolved.run("resolve", "--dry-run", "crypto"), 0)
    assert "would fetch 1 of 2 partitions" in result.output
    assert f"    reuse {WINDOW_JAN} (in the locked snapshot)" in result.output
    assert resolved.lock.read_bytes() == before
    assert resolved.object_files() == objects


def test_locked_fails_when_the_lock_would_change(resolved: Project) -> None:
    expect(resolved.run("resolve", "--locked"), 0)
    before = resolved.lock.read_bytes()
    resolved.edit_manifest("[AAPL, MSFT]", "[AAPL]")
    result = expect(resolved.run("resolve", "--locked"), 1)
    assert "seamless.lock is out of date and --locked forbids changing it" in result.output
    assert resolved.lock.read_bytes() == before


def test_locked_and_frozen_together_is_bad_input(resolved: Project) -> None:
    result = expect(resolved.run("resolve", "--locked", "--frozen"), 2)
    assert "cannot be used together" in result.output


def test_frozen_rebuilds_an_emptied_store_without_touching_the_lock(resolved: Project) -> None:
    before = resolved.lock.read_bytes()
    mtime = resolved.lock.stat().st_mtime_ns
    shutil.rmtree(resolved.root / ".seamless")
    result = expect(resolved.run("resolve", "--frozen"), 0)
    assert result.output.count("restored") == 4
    assert resolved.lock.read_bytes() == before
    assert resolved.lock.stat().st_mtime_ns == mtime
    expect(resolved.run("verify"), 0)


def test_frozen_ignores_manifest_changes(resolved: Project) -> None:
    before = resolved.lock.read_bytes()
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")
    expect(resolved.run("resolve", "--frozen"), 0)
    assert resolved.lock.read_bytes() == before


def test_frozen_needs_a_lock(project: Project) -> None:
    result = expect(project.run("resolve", "--frozen"), 2)
    assert "--frozen needs an existing seamless.lock" in result.output


# -- conformance failure: exit 3 ----------------------------------------------------------------
VENDOR_CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.test.1d:
    kind: ohlcv
    interval_ms: 86400000
    contract: {name: ohlcv, version: v1}
    calendar: 24x7
    partition: year
    source:
      name: files
      options:
        url: "data/{symbol}.csv"
        format: csv
        columns: {ts: Date, open: Open, high: High, low: Low, close: Close, volume: Volume}
        ts_format: "%Y-%m-%d"
    sla_preset: baseline
    conformance_preset: strict-blocking
"""

VENDOR_MANIFEST = """\
version: 1
presets: [presets.yaml]
datasets:
  vendor:
    preset: ohlcv.vendor.test.1d
    symbols: [ACME]
    start: {start}
    end: 2023-01-10
    contract_version: v1
"""


def _vendor_project(project: Project, *, start: str = "2023-01-01",
                    conflicts: tuple[str, ...] = ("2023-01-03", "2023-01-05")) -> None:
    """A files-source CSV whose days in ``conflicts`` appear twice with different values."""
    from datetime import date, timedelta

    lines = ["Date,Open,High,Low,Close,Volume"]
    day = date.fromisoformat(start)
    i = 0
    while day < date(2023, 1, 10):
        o = 10 + i * 0.5
        lines.append(f"{day},{o},{o + 1},{o - 1},{o + 0.25},{100 + i}")
        if day.isoformat() in conflicts:
            lines.append(f"{day},{o},{o + 2},{o - 1},{o + 0.75},{200 + i}")
        day += timedelta(days=1)
        i += 1
    (project.root / "data").mkdir(exist_ok=True)
    (project.root / "data" / "ACME.csv").write_text("\n".join(lines) + "\n")
    (project.root / "presets.yaml").write_text(VENDOR_CATALOG)
    project.write_manifest(VENDOR_MANIFEST.format(start=start))


def test_conformance_failure_exits_3_naming_flag_and_count(project: Project,
                                                           snapshot: object) -> None:
    _vendor_project(project)
    result = expect(project.run("resolve"), 3)
    assert result.stdout == ""
    assert "conformance refused the data: duplicate_ts=2" in result.stderr
    assert "vendor/ACME" in result.stderr
    assert "strict-blocking" in result.stderr
    assert _scrub(project, result.stderr) == snapshot
    assert not project.lock.exists()
    assert not list(project.root.glob(".seamless/store/snapshots/**/*.json"))
    data = json.loads(expect(project.run("resolve", "--json"), 3).output)
    assert data["ok"] is False
    assert data["error"] == "ConformanceError"
    assert "duplicate_ts=2" in data["what"]


def test_conformance_failure_keeps_the_previous_lock(project: Project) -> None:
    _vendor_project(project, conflicts=())
    expect(project.run("resolve"), 0)
    before = project.lock.read_bytes()
    _vendor_project(project, conflicts=("2023-01-04",))
    expect(project.run("check"), 0)  # check reads no data: it cannot see the vendor change
    shutil.rmtree(project.root / ".seamless")  # e.g. a fresh clone: the data is fetched again
    result = expect(project.run("resolve"), 3)
    assert "duplicate_ts=1" in result.output
    assert project.lock.read_bytes() == before


def test_conformance_failure_writes_nothing_to_the_store(project: Project) -> None:
    """DESIGN §4: a blocking flag writes nothing, even for partitions that passed before it."""
    _vendor_project(project, start="2022-12-25")  # 2022 is clean, 2023 is refused
    expect(project.run("resolve"), 3)
    assert not list(project.root.glob(".seamless/store/objects/**/*.parquet"))
    assert not list(project.root.glob(".seamless/store/snapshots/**/*.json"))
    assert not [p for p in project.root.glob(".seamless/store/jobs/**/*") if p.is_file()]
    assert not project.lock.exists()


# -- show, presets, materialize ------------------------------------------------------------------
def test_show(resolved: Project) -> None:
    result = expect(resolved.run("show"), 0)
    lines = result.output.splitlines()
    assert lines[0].split() == ["DATASET", "SYMBOL", "COVERAGE", "ROWS", "FINGERPRINT", "FLAGS",
                                "EXPIRES"]
    assert len(lines) == 5
    btc = next(line for line in lines if "BTCUSDT" in line)
    assert "2024-01-30 .. 2024-02-02" in btc
    assert str(CRYPTO_ROWS) in btc
    assert "2024-07-01" in btc  # research-short: 30 days after as_of
    aapl = next(line for line in lines if "AAPL" in line)
    assert "never" in aapl
    assert "dtype_cast=502" in aapl
    one = expect(resolved.run("show", "equities"), 0)
    assert len(one.output.splitlines()) == 3
    expect(resolved.run("show", "nope"), 2)


def test_show_json(resolved: Project) -> None:
    rows = json.loads(expect(resolved.run("show", "--json"), 0).output)
    lock = read_lock(resolved.lock)
    assert [(r["dataset"], r["symbol"]) for r in rows] == [
        ("crypto", "BTCUSDT"), ("crypto", "ETHUSDT"), ("equities", "AAPL"), ("equities", "MSFT")]
    for r in rows:
        entry = lock.datasets[r["dataset"]].symbols[r["symbol"]]
        assert r["fingerprint"] == entry.dataset_fingerprint
        assert r["rows"] == entry.rows
        assert set(r) == {"dataset", "symbol", "start", "end", "rows", "fingerprint", "flags",
                          "sla_violation", "expires_at", "adjustment"}
        assert r["adjustment"] == "raw"
    assert rows[0]["start"] == "2024-01-30T00:00:00Z"
    assert rows[2]["flags"] == {"dtype_cast": 502}


def test_show_without_a_lock_exits_2(project: Project) -> None:
    result = expect(project.run("show"), 2)
    assert "qmtl-lock resolve" in result.output


def test_presets(project: Project) -> None:
    result = expect(project.run("presets"), 0)
    for pid in ("ohlcv.synthetic.crypto.1m", "ohlcv.quandl_wiki.us_equity.1d",
                "ohlcv.binance.spot.1m"):
        assert pid in result.output


def test_presets_json(project: Project) -> None:
    _custom_project(project)
    data = json.loads(expect(project.run("presets", "--json"), 0).output)
    by_id = {p["id"]: p for p in data}
    assert "ohlcv.custom.crypto.1h" in by_id  # user catalog merged in
    builtin = by_id["ohlcv.synthetic.crypto.1m"]
    assert builtin["catalog"] == "built-in"
    assert HEX.fullmatch(builtin["digest"])
    assert builtin["preset"]["interval_ms"] == 60_000
    assert builtin["preset"]["partition"] == "month"
    assert builtin["conformance"]["name"] == "strict-blocking"
    assert builtin["sla"]["name"] == "baseline"
    assert by_id["ohlcv.custom.crypto.1h"]["catalog"].endswith("presets.yaml")


def test_materialize_reports_the_locked_fingerprint(resolved: Project) -> None:
    result = expect(resolved.run(
        "materialize", "ohlcv.synthetic.crypto.1m", "--symbol", "BTCUSDT",
        "--start", "2024-01-30", "--end", "2024-02-02", "--store", str(resolved.root / "other")), 0)
    report = json.loads(result.output)
    entry = read_lock(resolved.lock).datasets["crypto"].symbols["BTCUSDT"]
    assert report["dataset_fingerprint"] == entry.dataset_fingerprint
    assert report["rows"] == entry.rows
    assert report["coverage_bounds"] == ["2024-01-30T00:00:00Z", "2024-02-02T00:00:00Z"]
    assert report["as_of"] == NOW
    for key in ("conformance_flags", "sla_deadline_ms", "sla_violation", "attempts",
                "checkpoint_key", "retention_class"):
        assert key in report
    equities = json.loads(expect(resolved.run(
        "materialize", "ohlcv.quandl_wiki.us_equity.1d", "--symbol", "MSFT",
        "--start", "2011-01-01", "--end", "2013-01-01"), 0).output)
    assert equities["dataset_fingerprint"] == (
        read_lock(resolved.lock).datasets["equities"].symbols["MSFT"].dataset_fingerprint)
    assert equities["reused_partitions"] == 0


def test_materialize_report_never_prints_credentials(project: Project) -> None:
    result = expect(project.run(
        "materialize", "ohlcv.synthetic.crypto.1h", "--symbol", "BTCUSDT", "--start",
        "2024-01-01", "--end", "2024-01-02", "--store", "memory://alice:hunter2@bucket/store"), 0)
    assert "hunter2" not in result.output


def test_resolve_with_parallel_jobs_pins_the_same_data(project: Project,
                                                       resolved_template: Path) -> None:
    expect(project.run("resolve", "--jobs", "4"), 0)
    parallel = read_lock(project.lock)
    serial = read_lock(resolved_template / "seamless.lock")
    for name, ds in serial.datasets.items():
        for symbol, entry in ds.symbols.items():
            got = parallel.datasets[name].symbols[symbol]
            assert got.dataset_fingerprint == entry.dataset_fingerprint
            assert (got.rows, got.partitions, got.as_of) == (entry.rows, entry.partitions,
                                                             entry.as_of)


def test_materialize_unknown_preset_exits_2(project: Project) -> None:
    result = expect(project.run("materialize", "ohlcv.synthetic.crypto.1mm", "--symbol", "X",
                                "--start", "2024-01-01", "--end", "2024-01-02"), 2)
    data = json.loads(result.output)
    assert data["ok"] is False
    assert "did you mean 'ohlcv.synthetic.crypto.1m'" in data["fix"]


# -- the real interpreter ------------------------------------------------------------------------
def _python(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    env.pop("CI", None)
    return subprocess.run([sys.executable, "-m", "qmtl_lock.cli", *args], cwd=project.root,
                          env=env, capture_output=True, text=True, timeout=120)


def test_subprocess_check_in_sync(resolved: Project) -> None:
    proc = _python(resolved, "check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "seamless.lock is up to date"
    assert proc.stderr == ""


def test_subprocess_drift_and_bad_input(resolved: Project) -> None:
    resolved.edit_manifest("[AAPL, MSFT]", "[AAPL, MSFT, IBM]")
    proc = _python(resolved, "check")
    assert proc.returncode == 1
    assert "equities: symbols not locked yet: IBM" in proc.stdout
    resolved.edit_manifest("version: 1", "version: 1\nextra: 1")
    proc = _python(resolved, "resolve")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: invalid seamless.yaml: unknown key 'extra'")
    assert "seamless.yaml:2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_subprocess_verify_json_on_a_corrupted_store(resolved: Project) -> None:
    _flip_one_value(_partition_objects(resolved, "equities", "AAPL")[1], column="volume", row=0)
    proc = _python(resolved, "verify", "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["ok"] is False
    assert [(p["symbol"], p["partition"]) for p in data["problems"]] == [("AAPL", "2012")]


# -- layout: one lazily loaded module per command ----------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
COMMAND_NAMES = {"init", "resolve", "check", "verify", "show", "diff", "merge-driver", "gc",
                 "presets", "materialize", "schemas", "repair", "pull", "doctor", "pins"}
LIGHT = ("pyarrow", "fsspec", "jsonschema", "deepdiff", "pydantic")


def _import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports: at the top, inside functions, under
    TYPE_CHECKING, through importlib, and ``"module:attribute"`` specs (lazy commands)."""
    graph: dict[str, set[str]] = {}

    def known(name: str) -> str | None:
        while name and name not in sources:
            name = name.rpartition(".")[0]
        return name or None

    for module, text in sources.items():
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in sources
                          else known(node.module) for a in node.names}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.match(
                    r"^[\w.]+:\w+$", node.value):
                found.add(known(node.value.partition(":")[0]))
        graph[module] = {m for m in found if m and m != module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def _qmtl_lock_sources() -> dict[str, str]:
    sources = {}
    for path in sorted((ROOT / "qmtl_lock").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text(encoding="utf-8")
    return sources


def test_the_cycle_finder_sees_deferred_and_type_checking_imports() -> None:
    graph = _import_graph({
        "p.a": "def f():\n    from p.b import g\n",
        "p.b": "if TYPE_CHECKING:\n    import p.c\n",
        "p.c": "TABLE = {'x': 'p.a:f'}\n",
        "p.d": "import p.a\n"})
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert _cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    assert _cycle({**graph, "p.c": set()}) is None


def test_qmtl_lock_has_no_import_cycle() -> None:
    graph = _import_graph(_qmtl_lock_sources())
    from qmtl_lock.cli import COMMANDS

    assert {spec.partition(":")[0] for spec in COMMANDS.values()} <= graph["qmtl_lock.cli"]
    assert _cycle(graph) is None


def test_help_lists_every_command() -> None:
    from click.testing import CliRunner

    from qmtl_lock.cli import COMMANDS, cli

    assert set(COMMANDS) == COMMAND_NAMES
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed == COMMAND_NAMES
    for name in sorted(COMMAND_NAMES):
        assert CliRunner().invoke(cli, [name, "--help"]).exit_code == 0, name
    proc = subprocess.run([sys.executable, "-m", "qmtl_lock.cli", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert all(re.search(rf"^  {re.escape(n)}\s", proc.stdout, re.M) for n in COMMAND_NAMES)


def test_a_command_imports_only_its_own_module(resolved: Project) -> None:
    code = ("import json, sys; from qmtl_lock.cli import cli; from click.testing import CliRunner; "
            f"r = CliRunner().invoke(cli, ['check', '-m', {str(resolved.manifest)!r}]); "
            "print(json.dumps([r.exit_code, sorted(m for m in sys.modules "
            "if m.startswith('qmtl_lock.cli'))]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=resolved.root, capture_output=True,
                          text=True, env={**os.environ, "QMTL_LOCK_NOW": NOW}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [0, ["qmtl_lock.cli", "qmtl_lock.cli.check",
                                           "qmtl_lock.cli.output"]]


def test_command_modules_are_light_at_import() -> None:
    from qmtl_lock.cli import COMMANDS

    modules = sorted({spec.partition(":")[0] for spec in COMMANDS.values()})
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
            f"print(sorted(m for m in {LIGHT!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_only_qmtl_lock_git_runs_git() -> None:
    runs = sorted(p.relative_to(ROOT).as_posix() for folder in ("qmtl_lock", "engine")
                  for p in (ROOT / folder).rglob("*.py")
                  if re.search(r"\[\s*[\"']git[\"']\s*,", p.read_text(encoding="utf-8")))
    assert runs == ["qmtl_lock/git.py"]


def test_gc_and_diff_leave_the_store_layout_to_the_store() -> None:
    """No attribute ``fs`` or ``root`` of a store is touched outside engine/store.py."""
    touched = []
    for name, text in _qmtl_lock_sources().items():
        if name.split(".")[:2] in (["qmtl_lock", "gc"], ["qmtl_lock", "diff"],
                                   ["qmtl_lock", "cli"]):
            touched += [(name, node.attr) for node in ast.walk(ast.parse(text))
                        if isinstance(node, ast.Attribute) and node.attr in ("fs", "root")]
    assert touched == []
