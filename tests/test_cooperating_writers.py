"""Writers of one request into one store cooperate (DESIGN §6): two projects resolving the same
data into one shared store at the same moment both finish, with one set of objects and locks
that are byte for byte the same."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from qmtl_lock.resolve import resolve

MANIFEST = """\
version: 1
store: {store}
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [BTCUSDT, ETHUSDT]
    start: 2024-01-01
    end: 2024-03-01
    contract_version: v1
"""


@pytest.mark.parametrize("round_", range(3))
def test_two_projects_resolving_one_request_into_one_store(tmp_path: Path, round_: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    store = tmp_path / "shared-store"
    projects = [tmp_path / name for name in ("alice", "bob")]
    for root in projects:
        root.mkdir()
        (root / "seamless.yaml").write_text(MANIFEST.format(store=store), encoding="utf-8")
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def run(root: Path) -> None:
        def progress(label: str):  # type: ignore[no-untyped-def]
            return lambda done, total: None

        try:
            barrier.wait()
            resolve(root / "seamless.yaml", progress=progress, jobs=2)
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(root,)) for root in projects]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    locks = [(root / "seamless.lock").read_bytes() for root in projects]
    assert locks[0] == locks[1]
    objects = sorted(p.name for p in (store / "objects").rglob("*.parquet"))
    assert len(objects) == len(set(objects)) == 4  # two symbols x two months, stored once
    assert not [p for p in (store / "jobs").rglob("*") if p.is_file()]
