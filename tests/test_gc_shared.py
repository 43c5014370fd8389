"""gc on a store that several projects (real git repositories) share, on a local disk and on a
real S3 endpoint: registered pins of other projects survive; the race "gc lists → another
project resolves the same content → gc deletes" cannot happen; one gc at a time under
``locks/gc.json`` (a stale one is taken over); deletes are conditional; unreadable pins stop gc.

Interleavings are forced with events the code under test signals (a resolve tells ``on_wait``
when it starts waiting for gc), never with sleeps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from gc_repo import T0, snapshot_path
from killing import kill_when
from qmtl_engine import DAY_MS, QmtlLockError, Store, StoreBusy
from shared_projects import Project, alpha_moves_on, files_of, store_paths, two_projects

from qmtl_lock.gc import apply_gc, prepare_gc
from qmtl_lock.resolve import resolve

DAY40 = T0 + 40 * DAY_MS


@pytest.fixture
def projects(tmp_path: Path, store_url: str,
             monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Project]:
    return two_projects(tmp_path, store_url, monkeypatch)


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- pins of another project ---------------------------------------------------------------------
def test_the_pins_of_another_project_survive_gc(projects: tuple[Project, Project]) -> None:
    alpha, beta = projects
    first = alpha_moves_on(alpha)
    assert beta.resolve() == first  # beta pins what alpha dropped: the same snapshots
    beta.commit("pin")
    beta.run("pins", "push")
    old = files_of(alpha.store, first["a"]) - files_of(alpha.store, *alpha.pins().values())
    assert old

    dry = alpha.run("gc", "--dry-run", "--grace-days", "0", days=40).output
    assert "kept 2 snapshots pinned by project beta@main (pins/beta/main.json)" in dry
    data = alpha.gc("--grace-days", "0", days=40)
    assert data["deleted"] == set()
    assert data["pins"] == [{"label": "project beta@main", "path": "pins/beta/main.json",
                             "kept_snapshots": 2, "missing_snapshots": 0}]
    reasons = {k["path"]: k["reason"] for k in data["kept"]}
    assert reasons[snapshot_path(first["a"])] == "pinned by project beta@main (a/BTCUSDT)"
    beta.verify_ok()

    # beta retires its branch: its pins go, and so does what only they kept
    beta.run("pins", "remove", "--project", "beta", "--ref", "main")
    data = alpha.gc("--grace-days", "0", days=40)
    assert data["deleted"] == old
    assert data["pins"] == []
    alpha.verify_ok()


# -- the race: gc lists, another project resolves, gc deletes -----------------------------------
def test_a_resolve_that_starts_while_gc_runs_waits_and_keeps_its_data(
        projects: tuple[Project, Project]) -> None:
    alpha, beta = projects
    first = alpha_moves_on(alpha)
    beta.write()  # the request alpha dropped; beta has no lock and has pushed no pins yet
    gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)  # lists under the gc lock
    doomed = files_of(alpha.store, first["a"]) - files_of(alpha.store, *alpha.pins().values())
    assert doomed <= set(gc.plan.paths())

    waiting = threading.Event()
    said: list[str] = []
    failed: list[BaseException] = []

    def beta_resolves() -> None:
        try:
            resolve(beta.manifest, on_wait=lambda text: (said.append(text), waiting.set()))
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)
            waiting.set()

    thread = threading.Thread(target=beta_resolves)
    thread.start()
    try:
        assert waiting.wait(60), "beta's resolve never reached the store"
        assert not failed, failed
        assert not (beta.root / "seamless.lock").exists()  # it waits: nothing named yet
        result = apply_gc(gc.plan, gc.store, log=lambda _: None)
    finally:
        thread.join(120)
    assert not failed, failed
    assert said == [f"waiting for gc to finish on the store {alpha.store_url} (gc "
                    f"{alpha.manifest} (pid {os.getpid()} on {socket.gethostname()}), since "
                    f"{said[0].split('since ')[1].split(',')[0]}, last heartbeat 0 s ago)…"]
    assert doomed <= {path for a in result.done for path in a.files}  # gc did delete them
    assert beta.pins() == first  # and beta, once gc was done, wrote them again
    beta.verify_ok()
    alpha.verify_ok()
    assert "locks/gc.json" not in store_paths(alpha.store)


@pytest.mark.parametrize("store_url", ["local"], indirect=True)  # one waiting loop for every store
def test_a_resolve_gives_up_waiting_for_a_gc_that_runs_on(
        projects: tuple[Project, Project]) -> None:
    alpha, _ = projects
    alpha.write()
    store = alpha.store
    with store.gc_lock("gc elsewhere"):
        with pytest.raises(StoreBusy, match=r"a gc has held the store for longer than 0.2 s "
                           r"\(gc elsewhere \(pid \d+ on .*\), since .*\); resolve x gave up "
                           "waiting and wrote nothing") as caught, store.lease("resolve x",
                                                                              wait_s=0.2):
            pass
        assert caught.value.exit_code == 2 and "locks/gc.json" in str(caught.value)
        assert not any(p.startswith("leases/") for p in store_paths(store))  # stepped back
    assert store_paths(store) == set()


# -- one gc at a time ----------------------------------------------------------------------------
HOLD_GC_LOCK = """\
import sys, time
from qmtl_engine import Store
lock = Store(sys.argv[1]).gc_lock("gc in another process", heartbeat_s=float(sys.argv[2]))
with lock:
    print("held", flush=True)
    sys.stdin.read() if sys.argv[3] == "until-stdin-closes" else time.sleep(3600)
"""


@contextmanager
def _gc_in_a_process(store_url: str) -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", HOLD_GC_LOCK, store_url, "0.05",
                              "until-stdin-closes"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=os.environ)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "held"
        yield child.pid
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        child.stdout.close()


def test_a_second_gc_refuses_while_one_runs(projects: tuple[Project, Project]) -> None:
    alpha, beta = projects
    alpha_moves_on(alpha)
    beta.resolve()
    before = store_paths(alpha.store)
    with _gc_in_a_process(alpha.store_url) as pid:
        out = alpha.run("gc", "--grace-days", "0", days=40, code=2).output
        assert (f"another gc is running on this store: gc in another process (pid {pid} on "
                f"{socket.gethostname()}), since ") in out
        assert "let it finish, then run `qmtl-lock gc` again" in out
        assert {p for p in store_paths(alpha.store) if not p.startswith("locks/")} == before
        with pytest.raises(StoreBusy, match="another gc is running"):
            prepare_gc(beta.manifest, grace_days=0, now_ms=DAY40)
        # a dry run takes no lock: it plans, and says a gc is running
        dry = alpha.run("gc", "--dry-run", "--grace-days", "0", days=40)
        assert (f"warning: a gc is running on this store (gc in another process (pid {pid} "
                in dry.output)
    assert store_paths(alpha.store) == before  # released by its holder
    alpha.gc("--grace-days", "0", days=40)  # now gc runs


def test_a_stale_gc_lock_is_taken_over(projects: tuple[Project, Project]) -> None:
    alpha, _ = projects
    first = alpha_moves_on(alpha)
    store = alpha.store
    kill_when([sys.executable, "-c", HOLD_GC_LOCK, alpha.store_url, "3600", "forever"],
              cwd=alpha.root, env=os.environ,
              ready=lambda: store.gc_lock_holder() is not None)
    found = store.gc_lock_holder()
    assert found is not None
    dead = found[0]
    assert dead.owner == "gc in another process" and dead.pid is not None

    with pytest.raises(StoreBusy, match="another gc is running"):  # within the timeout it holds
        prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)
    _wait_for(lambda: dead.is_stale(time.time_ns() // 1_000_000, 1500), "the lock to age")
    gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40, lease_timeout_ms=1500)
    assert gc.lock is not None and gc.lock.took_over == dead
    assert (f"took over the stale gc lock of gc in another process (pid {dead.pid} on "
            f"{socket.gethostname()})") in " ".join(gc.plan.warnings)
    result = apply_gc(gc.plan, gc.store, log=lambda _: None)
    assert snapshot_path(first["a"]) in {a.path for a in result.done}
    assert store.gc_lock_holder() is None
    alpha.verify_ok()


def test_a_gc_paused_past_the_timeout_loses_its_lock_and_stops(store_url: str) -> None:
    store = Store(store_url)
    paused = store.gc_lock("paused gc", heartbeat_s=3600, timeout_ms=1500).acquire()
    try:
        paused.ensure_held()  # fresh: held
        _wait_for(lambda: _stale(store, 1500), "the lock to go stale")
        with store.gc_lock("next gc", heartbeat_s=3600, timeout_ms=1500) as successor:
            assert successor.took_over is not None and successor.took_over.owner == "paused gc"
            with pytest.raises(StoreBusy, match=r"gc lost the store's gc lock \(its last "
                               r"heartbeat is \d+\.\d s old, past the 1.5 s after which writers "
                               r"ignore it\), so it stopped deleting"):
                paused.ensure_held()
            paused.beat()  # a late heartbeat never writes over the successor's lock
            holder = store.gc_lock_holder()
            assert holder is not None and holder[0].owner == "next gc"
            assert holder[0].token == successor.token
            successor.ensure_held()
        assert store.gc_lock_holder() is None
    finally:
        paused.release()  # not its lock any more: leaves nothing behind, removes nothing
    assert store.gc_lock_holder() is None


def _stale(store: Store, timeout_ms: int) -> bool:
    found = store.gc_lock_holder()
    return found is not None and found[0].is_stale(time.time_ns() // 1_000_000, timeout_ms)


def test_a_gc_lock_heartbeat_checks_it_is_still_the_holders(store_url: str) -> None:
    store = Store(store_url)
    with store.gc_lock("gc", heartbeat_s=3600) as lock:
        first = store.gc_lock_holder()
        assert first is not None and first[0].token == lock.token
        time.sleep(0.002)  # a heartbeat in a later millisecond
        lock.beat()
        later = store.gc_lock_holder()
        assert later is not None and later[0].token == lock.token
        assert later[0].heartbeat_ms is not None and first[0].heartbeat_ms is not None
        assert later[0].heartbeat_ms > first[0].heartbeat_ms
        assert later[0].started_ms == first[0].started_ms
        store.remove("locks/gc.json")  # someone removed it by hand
        lock.beat()
        with pytest.raises(StoreBusy, match=r"locks/gc\.json was removed or replaced by "
                           "another process"):
            lock.ensure_held()
    assert store.gc_lock_holder() is None


# -- conditional deletes --------------------------------------------------------------------------
def _put(store: Store, path: str, data: bytes) -> None:
    """Write a file into the store as a foreign writer would (folders only on a local disk)."""
    full = f"{store.root}/{path}"
    if not store.url.startswith("s3://"):
        store.fs.makedirs(full.rpartition("/")[0], exist_ok=True)
    store.fs.pipe_file(full, data)


def _change(store: Store, path: str) -> None:
    """Rewrite a listed file with other bytes and (local disk) another file time."""
    full = f"{store.root}/{path}"
    store.fs.pipe_file(full, b"rewritten by another writer")
    if not store.url.startswith("s3://"):
        os.utime(full, (time.time() + 5, time.time() + 5))


def test_remove_keeps_a_file_changed_since_the_listing(store_url: str) -> None:
    store = Store(store_url)
    for name in ("a", "b"):
        _put(store, f"objects/{name}.bin", b"first bytes")
    listed = {f.path: f for f in _all_files(store)}
    if store_url.startswith("s3://"):
        assert all(f.etag for f in listed.values())  # the condition is S3's own If-Match
    _change(store, "objects/b.bin")
    assert store.remove("objects/a.bin", unless_changed_from=listed["objects/a.bin"]) is True
    assert store.remove("objects/b.bin", unless_changed_from=listed["objects/b.bin"]) is False
    assert store_paths(store) == {"objects/b.bin"}
    with pytest.raises(FileNotFoundError):
        store.remove("objects/a.bin", unless_changed_from=listed["objects/a.bin"])


def _all_files(store: Store) -> list[Any]:
    store.forget_listings()
    return list(store._listed("objects").values())


def test_gc_keeps_a_file_changed_after_it_listed_it(projects: tuple[Project, Project]) -> None:
    alpha, _ = projects
    first = alpha_moves_on(alpha)
    gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)
    objects = [a for a in gc.plan.actions if a.kind == "object"]
    assert objects
    changed = objects[0].path
    _change(alpha.store, changed)
    lines: list[str] = []
    result = apply_gc(gc.plan, gc.store, log=lines.append)
    assert result.changed == [changed]
    assert f"kept {changed}: changed since gc listed it (another writer)" in lines
    assert snapshot_path(first["a"]) in {a.path for a in result.done}
    assert changed in store_paths(alpha.store)
    assert {a.path for a in result.done} == set(gc.plan.paths()) - {changed}


@pytest.mark.parametrize("store_url", ["local"], indirect=True)  # S3: test_remove_keeps…
def test_a_changed_snapshot_keeps_every_object_too(projects: tuple[Project, Project]) -> None:
    alpha, _ = projects
    first = alpha_moves_on(alpha)
    before = store_paths(alpha.store)
    gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)
    snapshot = snapshot_path(first["a"])
    _change(alpha.store, snapshot)
    result = apply_gc(gc.plan, gc.store, log=lambda _: None)
    assert result.done == []
    assert set(result.changed) == set(gc.plan.paths())
    assert store_paths(alpha.store) == before


# -- pins that cannot be read, or that appear while gc plans ---------------------------------------
@pytest.mark.parametrize(("store_url", "data", "problem"), [
    ("local", b'{"pin_vers', "it is not JSON"),
    ("s3", b'{"pin_vers', "it is not JSON"),
    ("local", b'{"pin_version": 99, "fingerprints": {}}',
     "it has pin_version 99; this qmtl-lock reads version 1"),
    ("local", b'{"pin_version": 1, "project": "x", "ref": "main", "fingerprints": '
     b'{"sha256:12": []}}', "it is malformed (a fingerprint is not sha256:<64 hex>)"),
], ids=["torn", "torn-s3", "newer", "malformed"], indirect=["store_url"])
def test_gc_refuses_to_delete_when_a_pin_cannot_be_read(
        projects: tuple[Project, Project], data: bytes, problem: str) -> None:
    alpha, _ = projects
    alpha_moves_on(alpha)
    store = alpha.store
    _put(store, "pins/gamma/main.json", data)
    before = store_paths(store)
    for args in (("gc",), ("gc", "--dry-run")):
        out = alpha.run(*args, "--grace-days", "0", days=40, code=2).output
        assert (f"the registered pins pins/gamma/main.json cannot be read: {problem}"
                in " ".join(out.split()))
        assert "gc deletes nothing while it cannot tell what project gamma@main pins" in out
        assert "qmtl-lock pins remove --project gamma --ref main" in out
    assert store_paths(store) == before


@pytest.mark.parametrize("store_url", ["local"], indirect=True)  # S3 pins: the survive test
def test_pins_that_go_bad_or_appear_while_gc_plans_stop_it(
        projects: tuple[Project, Project]) -> None:
    alpha, beta = projects
    first = alpha_moves_on(alpha)
    assert beta.resolve() == first
    beta.commit("pin")
    store = alpha.store
    before = store_paths(store)

    gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)
    assert snapshot_path(first["a"]) in gc.plan.paths()
    beta.store.put_pin("beta", "main", _pin_of(beta))  # registered behind gc's back
    with pytest.raises(QmtlLockError, match=r"project beta@main registered pins while gc was "
                       r"planning \(pins/beta/main.json names 1 snapshot\(s\) gc was about to "
                       r"delete, first sha256:[0-9a-f]{64}\); gc deleted nothing"):
        apply_gc(gc.plan, gc.store)
    assert store.gc_lock_holder() is None  # released

    store.remove_pin("beta", "main")
    gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)
    _put(store, "pins/beta/main.json", b"{")
    with pytest.raises(QmtlLockError, match=r"the registered pins pins/beta/main\.json cannot "
                       "be read"):
        apply_gc(gc.plan, gc.store)
    assert store_paths(store) == before | {"pins/beta/main.json"}


def _pin_of(project: Project) -> bytes:
    from qmtl_engine import pin_bytes

    from qmtl_lock.gc.keep import lock_pins
    from qmtl_lock.lockfile import read_lock

    return pin_bytes(project="beta", ref="main",
                     fingerprints=lock_pins(read_lock(project.root / "seamless.lock")),
                     lock_digest="sha256:" + "0" * 64, pushed_at="2026-01-01T00:00:00Z",
                     commit=None)


# -- S3: no bucket is ever made, and a lease or gc lock is one request each way --------------------
def test_leases_and_gc_locks_on_s3_make_no_bucket_and_use_single_puts(s3: Any) -> None:
    client = s3.endpoint.client()
    buckets = {b["Name"] for b in client.list_buckets()["Buckets"]}
    missing = Store("s3://qmtl-no-such-bucket/store")
    with pytest.raises(FileNotFoundError), missing.lease("resolve"):
        pass
    with pytest.raises(FileNotFoundError):
        missing.gc_lock("gc").acquire()
    assert {b["Name"] for b in client.list_buckets()["Buckets"]} == buckets

    store = Store(s3.url("team-store"))
    s3.proxy.reset()
    lock = store.gc_lock("gc", heartbeat_s=3600).acquire()
    assert s3.proxy.counts["PUT"] == 1  # If-None-Match: *, no temporary, no copy
    lock.beat()
    assert s3.proxy.counts["PUT"] == 2  # If-Match on its own ETag
    lock.release()
    assert s3.proxy.counts["PUT"] == 2 and s3.proxy.counts["DELETE"] == 1
    s3.proxy.reset()
    with store.lease("resolve", heartbeat_s=3600):
        assert s3.proxy.counts["PUT"] == 1  # the lease, then a look for a gc lock (a GET)
        assert s3.proxy.counts["GET"] >= 1
    assert s3.proxy.counts["PUT"] == 1
    assert s3.proxy.counts["DELETE"] + s3.proxy.counts["POST"] == 1  # s3fs deletes in bulk
    assert s3.keys() == []


def test_the_gc_lock_record_names_its_holder(store_url: str) -> None:
    store = Store(store_url)
    with store.gc_lock("gc seamless.yaml") as lock:
        found = store.gc_lock_holder()
        assert found is not None
        record, listed = found
        assert (record.owner, record.pid, record.host, record.token) == (
            "gc seamless.yaml", os.getpid(), socket.gethostname(), lock.token)
        assert listed.path == "locks/gc.json" and listed.size > 0
        data = json.loads(store.fs.cat_file(f"{store.root}/locks/gc.json"))
        assert data["gc_lock_version"] == 1
    assert store.gc_lock_holder() is None


# -- a resolve already running when gc began, relying on content it found stored ------------------
def _age(store: Store, paths: set[str], days: float) -> None:
    """Make files look ``days`` old, as content from a resolve long ago would (local disk)."""
    then = time.time() - days * 86400
    for rel in paths:
        os.utime(os.path.join(store.root, rel), (then, then))


def _old_unpinned_content(alpha: Project, beta: Project) -> tuple[dict[str, str], set[str]]:
    """alpha's first pins, whose files only alpha's history names, made to look three days old;
    beta declared to want that same data. Returns the pins and those files."""
    first = alpha_moves_on(alpha)
    doomed = files_of(alpha.store, first["a"]) - files_of(alpha.store, *alpha.pins().values())
    _age(alpha.store, doomed, days=3)
    beta.write()
    return first, doomed


def _beta_request(beta: Project) -> Any:
    from qmtl_engine import TimeRange

    from qmtl_lock.manifest import load_manifest

    ds = load_manifest(beta.manifest).datasets["a"]
    return ds.engine_request("BTCUSDT", TimeRange(ds.start_ms, ds.end_ms()), follows_now=False)


@pytest.mark.parametrize("store_url", ["local"], indirect=True)  # file times set by hand
def test_a_resolve_running_before_gc_keeps_what_it_found_stored(
        projects: tuple[Project, Project]) -> None:
    """beta's resolve holds its lease before gc starts, and finds alpha's old, unpinned
    snapshot already stored (the same content): once its lease names it, gc keeps it."""
    from qmtl_engine import Engine

    alpha, beta = projects
    first, doomed = _old_unpinned_content(alpha, beta)
    store = beta.store
    with store.lease(owner=f"resolve {beta.manifest}"):
        result = Engine(store).materialize(_beta_request(beta))
        assert result.fingerprint == first["a"] and result.bytes_written == 0
        gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)
        reasons = {k.path: k.reason for k in gc.plan.kept}
        assert doomed.isdisjoint(gc.plan.paths())
        snap = snapshot_path(first["a"])
        assert reasons[snap].startswith("a running resolve relies on it (resolve ")
        apply_gc(gc.plan, gc.store, log=lambda _: None)
    assert doomed <= store_paths(alpha.store)
    store.get_snapshot(first["a"])


@pytest.mark.parametrize("store_url", ["local"], indirect=True)
def test_a_resolve_that_comes_to_rely_on_old_content_while_gc_plans_stops_the_gc(
        projects: tuple[Project, Project]) -> None:
    """The same resolve, but it finds the old content after gc listed: it names it in its lease,
    sees gc's lock and waits; gc, looking at the leases again before deleting, deletes nothing;
    then the resolve goes on and its snapshot is whole."""
    from qmtl_engine import Engine

    alpha, beta = projects
    first, doomed = _old_unpinned_content(alpha, beta)
    store = beta.store
    done: list[Any] = []
    with store.lease(owner=f"resolve {beta.manifest}") as lease:
        gc = prepare_gc(alpha.manifest, grace_days=0, now_ms=DAY40)  # under the gc lock
        assert doomed <= set(gc.plan.paths())
        thread = threading.Thread(
            target=lambda: done.append(Engine(store).materialize(_beta_request(beta))))
        thread.start()
        # the resolve has named the snapshot in its lease, and now waits for this gc
        _wait_for(lambda: any(p.startswith("snapshots/")
                              for x in store.leases() if x.path == lease.path
                              for p in x.protects), "the resolve to protect what it found")
        with pytest.raises(QmtlLockError, match="came to rely on"):
            apply_gc(gc.plan, gc.store, log=lambda _: None)
        thread.join(60)
    assert done and done[0].fingerprint == first["a"]
    assert doomed <= store_paths(alpha.store)
    for part in store.get_snapshot(first["a"]).partitions:
        store.check_object(part.digest)
