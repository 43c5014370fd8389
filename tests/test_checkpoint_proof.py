"""A resume checkpoint or a planted object never puts wrong data into a snapshot.

The attack of issue 9: after a clean resolve, ETHUSDT's January partition is written into
BTCUSDT's resume checkpoint (``jobs/<key>/<window>.json``), BTCUSDT's snapshot and the lock
are deleted, and ``qmtl-lock resolve`` runs again. Before the fix it pinned ETH's January as
BTC's, and ``verify`` and ``Lock.load`` accepted it. Each poisoning below must end with BTC's own
data pinned, the same fingerprint as the clean resolve, and the refused entry fetched again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from conftest import Project, expect
from qmtl_engine.materialize import Request, checkpoint_seal
from qmtl_engine.ranges import TimeRange
from qmtl_engine.store import SnapshotPartition, Store

from qmtl_lock.lockfile import read_lock
from qmtl_lock.manifest import load_manifest


def request(project: Project, symbol: str) -> Request:
    """The request resolve makes for ``symbol`` of the crypto dataset (for its job key)."""
    ds = load_manifest(project.manifest).datasets["crypto"]
    return Request(ds.preset, symbol, TimeRange(ds.start_ms, ds.end_ms()),
                   ds.spec.contract_version, dataset="crypto",
                   accepted_gaps=ds.accepted_ranges())


@dataclass
class Scene:
    """The store after a clean resolve, and what an attacker can reach in it."""

    store: Store
    key: str  # BTCUSDT's job key
    eth_key: str
    btc: list[SnapshotPartition]  # January, February
    eth: list[SnapshotPartition]
    fingerprints: dict[str, str]

    def write_entry(self, part: SnapshotPartition, *, window: SnapshotPartition | None = None,
                    seal: str | None = None) -> None:
        """Put ``part`` into BTC's checkpoint under ``window``'s span (default: its own)."""
        span = window or part
        entry: dict[str, object] = {"rows": part.rows, "digest": part.digest, "flags": part.flags}
        if seal is not None:
            entry["seal"] = seal
        entry["request"] = "crypto/BTCUSDT"
        self.store.write_checkpoint(self.key, span.start, span.end, entry)

    def plant(self, name: SnapshotPartition, content: SnapshotPartition) -> None:
        """Put ``content``'s rows in the store under ``name``'s digest."""
        table = self.store.read_object(content.digest)
        self.store.fs.pipe_file(self.store.object_path(name.digest), Store._parquet_bytes(table))


def sealed(scene: Scene, part: SnapshotPartition) -> str:
    return checkpoint_seal(scene.key, part)


def _eth_digest_unsealed(s: Scene) -> None:
    s.write_entry(s.eth[0])


def _eth_entry_with_its_own_seal(s: Scene) -> None:  # copied from ETH's checkpoint
    s.write_entry(s.eth[0], seal=checkpoint_seal(s.eth_key, s.eth[0]))


def _btc_entry_edited_to_eth(s: Scene) -> None:  # sealed for BTC, then its digest edited
    s.write_entry(replace(s.btc[0], digest=s.eth[0].digest), seal=sealed(s, s.btc[0]))


def _object_wrong_content(s: Scene) -> None:  # the right entry; ETH's rows under BTC's name
    s.write_entry(s.btc[0], seal=sealed(s, s.btc[0]))
    s.plant(s.btc[0], s.eth[0])


def _planted_object(s: Scene) -> None:  # no entry: the fetch must not keep that file
    s.plant(s.btc[0], s.eth[0])


def _other_window_forged_seal(s: Scene) -> None:  # February's object under January's window
    feb = s.btc[1]
    forged = SnapshotPartition(s.btc[0].start, s.btc[0].end, feb.rows, feb.digest, feb.flags)
    s.write_entry(forged, seal=sealed(s, forged))


def _row_count_forged_seal(s: Scene) -> None:
    forged = replace(s.btc[0], rows=s.btc[0].rows - 1)
    s.write_entry(forged, seal=sealed(s, forged))


POISONINGS: dict[str, tuple[Callable[[Scene], None], str | None]] = {
    # name: (poisoning, why the entry is refused; None: no entry to refuse)
    "eth-digest-unsealed": (_eth_digest_unsealed, "its seal does not match this request"),
    "eth-entry-with-its-seal": (_eth_entry_with_its_own_seal,
                                "its seal does not match this request"),
    "btc-entry-edited-to-eth": (_btc_entry_edited_to_eth, "its seal does not match this request"),
    "object-wrong-content": (_object_wrong_content, "store object is corrupted"),
    "planted-object": (_planted_object, None),
    "other-window-forged-seal": (_other_window_forged_seal,
                                 "outside the window or off the interval grid"),
    "row-count-forged-seal": (_row_count_forged_seal, "rows, the checkpoint says"),
}


@pytest.fixture
def scene(resolved: Project) -> Scene:
    store = Store(str(resolved.store))
    entries = read_lock(resolved.lock).datasets["crypto"].symbols
    prints = {s: e.dataset_fingerprint for s, e in entries.items()}
    return Scene(store, request(resolved, "BTCUSDT").job_key(),
                 request(resolved, "ETHUSDT").job_key(),
                 store.get_snapshot(prints["BTCUSDT"]).partitions,
                 store.get_snapshot(prints["ETHUSDT"]).partitions, prints)


def forget_btc(project: Project, scene: Scene) -> None:
    """Delete BTCUSDT's snapshot and the lock, so only the checkpoint remembers BTC."""
    scene.store.delete(scene.store.snapshot_path(scene.fingerprints["BTCUSDT"]))
    project.lock.unlink()


def btc_plan(output: str) -> list[str]:
    """The plan lines of crypto/BTCUSDT in ``resolve --dry-run`` output."""
    block = output.split("crypto/BTCUSDT:", 1)[1].split("\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("    "):
            break
        lines.append(line.strip())
    return lines


@pytest.mark.parametrize("poisoning", list(POISONINGS))
def test_a_poisoned_checkpoint_or_planted_object_is_never_pinned(
        resolved: Project, scene: Scene, poisoning: str,
        caplog: pytest.LogCaptureFixture) -> None:
    poison, why = POISONINGS[poisoning]
    assert scene.btc[0].digest != scene.eth[0].digest
    poison(scene)
    forget_btc(resolved, scene)

    with caplog.at_level(logging.WARNING, logger="qmtl_lock.engine"):
        january, february = btc_plan(expect(resolved.run("resolve", "--dry-run"), 0).output)
    assert january.startswith("fetch 2024-01 [2024-01-30T00:00:00Z, 2024-02-01T00:00:00Z)")
    assert february.startswith("fetch 2024-02")
    refusals = [m for m in (r.getMessage() for r in caplog.records)
                if "checkpoint entry refused" in m]
    if why is not None:
        assert "(checkpoint refused: " in january and why in january, january
        assert len(refusals) == 1 and "symbol=BTCUSDT partition=2024-01" in refusals[0]
        assert refusals[0].endswith("; fetching it again") and why in refusals[0]
    else:
        assert refusals == []

    result = expect(resolved.run("resolve", "--json"), 0)
    changes = {c["symbol"]: c for c in json.loads(result.stdout)["changes"]}
    assert changes["BTCUSDT"]["detail"].endswith("fetched 2, reused 0 partitions")
    pinned = read_lock(resolved.lock).datasets["crypto"].symbols
    assert pinned["BTCUSDT"].dataset_fingerprint == scene.fingerprints["BTCUSDT"]
    assert pinned["ETHUSDT"].dataset_fingerprint == scene.fingerprints["ETHUSDT"]
    scene.store.check_object(scene.btc[0].digest)  # BTC's January, as its name says
    assert not list((resolved.store / "jobs").rglob("*.parquet"))
    expect(resolved.run("verify"), 0)


def test_a_genuine_checkpoint_entry_is_reused(resolved: Project, scene: Scene) -> None:
    """The control: an entry this request wrote, for its own object, saves the fetch."""
    scene.write_entry(scene.btc[0], seal=sealed(scene, scene.btc[0]))
    forget_btc(resolved, scene)
    january, february = btc_plan(expect(resolved.run("resolve", "--dry-run"), 0).output)
    assert january == ("reuse 2024-01 [2024-01-30T00:00:00Z, 2024-02-01T00:00:00Z) "
                       "(finished before an interruption)")
    assert february.startswith("fetch 2024-02")
    result = expect(resolved.run("resolve", "--json"), 0)
    changes = {c["symbol"]: c for c in json.loads(result.stdout)["changes"]}
    assert changes["BTCUSDT"]["detail"].endswith("fetched 1, reused 1 partitions")
    pinned = read_lock(resolved.lock).datasets["crypto"].symbols["BTCUSDT"]
    assert pinned.dataset_fingerprint == scene.fingerprints["BTCUSDT"]


def test_an_earlier_snapshot_of_another_series_is_not_reused(resolved: Project,
                                                            scene: Scene) -> None:
    """The locked snapshot is reused only for its own series: a lock entry edited to name
    ETHUSDT's snapshot for BTCUSDT does not make BTC's partitions ETH's."""
    text = resolved.lock.read_text()
    resolved.lock.write_text(text.replace(scene.fingerprints["BTCUSDT"],
                                          scene.fingerprints["ETHUSDT"], 1))
    resolved.edit_manifest("end: 2024-02-02", "end: 2024-02-03")  # extend: previous is read
    result = expect(resolved.run("resolve", "--json"), 0)
    changes = {c["symbol"]: c for c in json.loads(result.stdout)["changes"]}
    assert "reused 1 partitions" in changes["ETHUSDT"]["detail"]  # its own January
    assert changes["BTCUSDT"]["action"] == "restated"  # the lock named other data than BTC's
    clean = Store(str(resolved.store)).get_snapshot(
        read_lock(resolved.lock).datasets["crypto"].symbols["BTCUSDT"].dataset_fingerprint)
    assert clean.header.symbol == "BTCUSDT"
    assert clean.partitions[0].digest == scene.btc[0].digest
