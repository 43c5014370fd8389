"""``qmtl-lock gc`` against real git repositories: it keeps exactly what the kept locks pin, what
retention still protects and what is younger than the grace period, and nothing else.

Time: ``QMTL_LOCK_NOW`` starts at today's midnight (UTC), so that file times, which gc compares
with the grace period, are real; each gc run moves the clock forward by whole days.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gc_repo import T0, Repo, at, make_repo, manifest
from gc_repo import leftovers as _leftovers
from gc_repo import snapshot_path as _snap
from qmtl_engine.ranges import DAY_MS
from qmtl_engine.store import Store, StoredFile, StoredJob

from qmtl_lock.gc import (
    KeptLock,
    Retention,
    StoredSnapshot,
    StoreListing,
    plan_gc,
    retention_from_locks,
)
from qmtl_lock.lockfile import read_lock
from qmtl_lock.manifest import load_manifest
from qmtl_lock.resolve import resolve


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    return make_repo(tmp_path, monkeypatch)


# -- (1) the current lock ----------------------------------------------------------------------
def test_nothing_the_current_lock_or_head_pins_is_ever_deleted(repo: Repo) -> None:
    first = repo.resolve()
    repo.commit("pin january")
    head = repo.resolve(a_end="2024-01-05")
    repo.commit("longer range")
    working = repo.resolve(a_end="2024-01-07")  # not committed: HEAD still pins `head`
    keep = repo.files_of(*working.values(), *head.values())
    for days in (0, 40, 3650):
        data = repo.gc("--grace-days", "0", days=days)
        assert not data["deleted"] & keep
        assert keep <= set(repo.store_files())
        assert data["kept_locks"] == ["seamless.lock", "HEAD"]
    assert data["reasons"][_snap(working["a"])] == "pinned by seamless.lock (a/BTCUSDT)"
    assert data["reasons"][_snap(head["a"])] == "pinned by HEAD (a/BTCUSDT)"
    assert _snap(first["a"]) not in repo.store_files()  # only in history, and expired
    repo.verify_ok()


# -- (2) branch switch ---------------------------------------------------------------------------
def test_branch_switch_keeps_the_other_branch_only_when_asked_or_unexpired(repo: Repo) -> None:
    main = repo.resolve()
    repo.commit("pin")
    repo.git("checkout", "-q", "-b", "feature")
    feature = repo.resolve(a_end="2024-01-05")
    repo.commit("feature: longer range")
    repo.git("checkout", "-q", "main")
    assert repo.pins() == main
    only_feature = repo.files_of(feature["a"]) - repo.files_of(*main.values())
    assert len(only_feature) == 2  # its snapshot and its January partition

    for args in (["--all-refs"], ["--keep-revs", "feature"]):
        data = repo.gc(*args, days=40)
        assert data["deleted"] == set()
        assert data["reasons"][_snap(feature["a"])] == "pinned by feature (a/BTCUSDT)"

    data = repo.gc(days=10)  # research-short: retained for 30 days after as_of
    assert data["deleted"] == set()
    assert data["reasons"][_snap(feature["a"])] == (
        f"unreferenced, but retained until {at(30)} (research-short)")

    data = repo.gc(days=40)
    assert data["deleted"] == only_feature
    reasons = {a["path"]: a["reason"] for a in data["delete"]}
    assert reasons[_snap(feature["a"])] == f"unreferenced, expired {at(30)} (research-short)"
    repo.verify_ok()


# -- (3) rebase / amend ------------------------------------------------------------------------
def _drop_commit(repo: Repo, how: str) -> tuple[str, dict[str, str]]:
    """Pin, commit a new range of `a`, then drop that commit; return (dropped fp, current pins)."""
    repo.resolve()
    repo.commit("pin")
    dropped = repo.resolve(a_end="2024-01-05")["a"]
    repo.commit("longer range")
    gone = repo.git("rev-parse", "HEAD").strip()
    if how == "amend":
        repo.resolve(a_end="2024-01-07")
        repo.commit("even longer range", "--amend")
    else:  # a later commit changes `b`; the rebase drops the middle commit
        repo.resolve(a_end="2024-01-05", b_end="2024-02-05")
        repo.commit("longer b")
        repo.git("rebase", "-q", "--onto", "HEAD~2", "HEAD~1")
    assert gone not in repo.git("rev-list", "--all").split()
    assert dropped.removeprefix("sha256:") not in repo.git("log", "--all", "-p")
    return dropped, repo.pins()


@pytest.mark.parametrize("how", ["amend", "rebase"])
def test_commit_dropped_by_rebase_or_amend(repo: Repo, how: str) -> None:
    dropped, current = _drop_commit(repo, how)
    assert dropped not in current.values()
    all_files = set(repo.store_files())

    for days in (1, 10):  # the reflog still remembers the dropped commit's expires_at
        data = repo.gc(days=days)
        assert data["deleted"] == set()
        assert data["reasons"][_snap(dropped)] == (
            f"unreferenced, but retained until {at(30)} (research-short)")

    data = repo.gc(days=40)
    assert data["deleted"] == all_files - repo.files_of(*current.values())
    assert _snap(dropped) in data["deleted"]
    repo.verify_ok()


def test_a_dropped_commit_the_reflog_forgot_has_only_the_grace_period(repo: Repo) -> None:
    dropped, current = _drop_commit(repo, "amend")
    repo.git("reflog", "expire", "--expire=now", "--expire-unreachable=now", "--all")
    only_dropped = repo.files_of(dropped) - repo.files_of(*current.values())

    data = repo.gc(days=1)
    assert data["deleted"] == set()
    assert data["reasons"][_snap(dropped)].startswith(
        "unreferenced, named by no lock in the git history, but written ")

    data = repo.gc(days=10)
    assert data["deleted"] == only_dropped  # the first pin is still retained by history
    repo.verify_ok()


# -- (4) retention classes ---------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "ttl"), [("research-short", 30), ("regulatory-long", 2557)])
def test_expired_class_deletes_unreferenced_and_keeps_referenced(repo: Repo, cls: str,
                                                                 ttl: int) -> None:
    first = repo.resolve(cls=cls)
    repo.commit("pin")
    current = repo.resolve(cls=cls, a_end="2024-01-05")
    repo.commit("longer")
    assert read_lock(repo.root / "seamless.lock").datasets["a"].symbols[
        "BTCUSDT"].expires_at == T0 + ttl * DAY_MS

    only_first = repo.files_of(first["a"]) - repo.files_of(*current.values())
    data = repo.gc(days=ttl - 1)
    assert data["deleted"] == set()
    data = repo.gc(days=ttl + 1)
    assert data["deleted"] == only_first
    assert repo.files_of(*current.values()) <= set(repo.store_files())
    repo.verify_ok()


def test_class_without_ttl_keeps_data_only_while_a_kept_lock_pins_it(repo: Repo) -> None:
    first = repo.resolve(cls="default")
    repo.commit("pin")
    current = repo.resolve(cls="default", a_end="2024-01-05")
    repo.commit("longer")
    only_first = repo.files_of(first["a"]) - repo.files_of(*current.values())
    assert repo.gc(days=1)["deleted"] == set()  # grace period
    data = repo.gc(days=8)
    assert data["deleted"] == only_first
    assert data["delete"][0]["reason"] == (
        "unreferenced, and retention class default keeps data only while a kept lock pins it")


def test_manifest_overrides_and_adds_retention_classes(repo: Repo) -> None:
    extra = ("retention_classes:\n"
             "  research-short: {ttl_days: 3, description: shorter here}\n"
             "  scratch: {ttl_days: 1}\n")
    loaded_text = manifest(extra=extra)
    (repo.root / "seamless.yaml").write_text(loaded_text, encoding="utf-8")
    registry = load_manifest(repo.root / "seamless.yaml").registry
    assert registry.retention_ttl_days("research-short") == 3
    assert registry.retention_ttl_days("scratch") == 1
    assert registry.retention_ttl_days("regulatory-long") == 2557  # built-ins stay

    first = repo.resolve(extra=extra)
    repo.commit("pin")
    lock = read_lock(repo.root / "seamless.lock")
    assert lock.datasets["a"].symbols["BTCUSDT"].expires_at == T0 + 3 * DAY_MS
    current = repo.resolve(extra=extra, a_end="2024-01-05")
    repo.commit("longer")
    only_first = repo.files_of(first["a"]) - repo.files_of(*current.values())
    assert repo.gc("--grace-days", "1", days=2)["deleted"] == set()
    data = repo.gc("--grace-days", "1", days=4)
    assert data["deleted"] == only_first


def test_manifest_retention_class_errors_name_the_line(tmp_path: Path) -> None:
    from qmtl_lock.errors import ManifestError

    path = tmp_path / "seamless.yaml"
    path.write_text(manifest(extra="retention_classes:\n  scratch: {ttl_days: 0}\n"))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.line == 4
    assert info.value.key == "retention_classes.scratch.ttl_days"
    path.write_text(manifest(cls="scratch"))
    with pytest.raises(ManifestError, match="unknown retention class 'scratch'"):
        load_manifest(path)


# -- (5) dry run, never-locked data and stale jobs --------------------------------------------
def test_dry_run_deletes_nothing_and_lists_exactly_what_a_run_deletes(repo: Repo) -> None:
    first = repo.resolve()
    repo.commit("pin")
    current = repo.resolve(a_end="2024-01-05")
    repo.commit("longer")
    leftovers = _leftovers(repo)

    young = repo.gc("--dry-run", days=1)
    assert young["deleted"] == set()  # all within the grace period, or retained
    assert {k["kind"] for k in young["kept"]} == {"snapshot", "job"}

    before = repo.store_files()
    text = repo.run_gc("--dry-run", days=40).stdout
    dry = repo.gc("--dry-run", days=40)
    assert repo.store_files() == before
    expected = leftovers | (repo.files_of(first["a"]) - repo.files_of(*current.values()))
    assert dry["deleted"] == expected
    for action in dry["delete"]:
        assert f"would delete {action['path']}: {action['reason']}\n" in text
    assert text.rstrip().endswith("dry run: nothing changed")

    real = repo.gc(days=40)
    assert real["delete"] == dry["delete"]
    assert real["deleted"] == expected
    assert set(repo.store_files()) == set(before) - expected
    # snapshots go before objects, so a crash midway never orphans a kept snapshot
    kinds = [a["kind"] for a in real["delete"]]
    assert kinds == sorted(kinds, key=["snapshot", "object", "job", "temporary"].index)
    repo.verify_ok()


# -- (6) archive ---------------------------------------------------------------------------------
def test_archive_moves_files_to_any_fsspec_url(repo: Repo) -> None:
    import fsspec

    repo.resolve()
    repo.commit("pin")
    repo.resolve(a_end="2024-01-05")
    repo.commit("longer")
    before = repo.store_files()
    name = f"archive-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        result = repo.run_gc("--json", "--archive", f"memory://{name}", days=40)
        data = json.loads(result.stdout)
        moved = {a["path"] for a in data["delete"]}
        assert len(moved) == 2
        assert data["archive"] == f"memory://{name}"
        after = repo.store_files()
        for rel in moved:
            assert rel not in after
            assert fs.cat(f"/{name}/{rel}") == before[rel]
            assert f"archived {rel} -> memory://{name}/{rel}: " in result.stderr
        assert set(after) == set(before) - moved
        assert sorted(fs.find(f"/{name}")) == sorted(f"/{name}/{rel}" for rel in moved)
    finally:
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)
    repo.verify_ok()


def test_archive_inside_the_store_is_refused(repo: Repo) -> None:
    repo.resolve()
    result = repo.run_gc("--archive", str(repo.root / ".seamless" / "store" / "old"), days=40,
                         code=2)
    assert "overlaps the store" in result.output


# -- bad input -----------------------------------------------------------------------------------
def test_git_options_outside_a_repository_exit_2(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("QMTL_LOCK_NOW", at(0))
    monkeypatch.chdir(root)
    (root / "seamless.yaml").write_text(manifest(), encoding="utf-8")
    repo = Repo(root, monkeypatch)
    result = repo.run_gc(days=0, code=2)
    assert "seamless.lock does not exist" in result.output
    resolve(root / "seamless.yaml")
    for flag in (["--keep-revs", "main"], ["--all-refs"]):
        result = repo.run_gc(*flag, days=0, code=2)
        assert f"{flag[0]} needs a git repository" in result.output
    data = repo.gc(days=40)  # without git, the current lock alone is kept
    assert data["deleted"] == set()
    assert data["kept_locks"] == ["seamless.lock"]


def test_unknown_revision_exits_2(repo: Repo) -> None:
    repo.resolve()
    repo.commit("pin")
    result = repo.run_gc("--keep-revs", "no-such-branch", days=0, code=2)
    assert "unknown git revision 'no-such-branch'" in result.output
    data = json.loads(repo.run_gc("--json", "--keep-revs", "--bad", days=0, code=2).stdout)
    assert data["ok"] is False and data["error"] == "GitError"


def test_keep_rev_without_a_lock_is_a_warning(repo: Repo) -> None:
    repo.git("commit", "-q", "--allow-empty", "-m", "before the lock")
    repo.git("tag", "empty")
    repo.resolve()
    repo.commit("pin")
    result = repo.run_gc("--keep-revs", "empty", days=0)
    assert "warning: empty has no seamless.lock: it keeps nothing" in result.output


# -- the pure planner ----------------------------------------------------------------------------
FP = {n: "sha256:" + n * 64 for n in "abcd"}
OBJ = {n: "sha256:" + n * 64 for n in "0123"}
OLD = 0  # file times: long ago


def _listing(objects: dict[str, tuple[str, ...] | None]) -> StoreListing:
    return StoreListing(
        snapshots={FP[n]: StoredSnapshot(StoredFile(f"snapshots/{n}", 10, OLD), objs)
                   for n, objs in objects.items()},
        objects={OBJ[n]: StoredFile(f"objects/{n}", 100, OLD) for n in "0123"},
        jobs=[StoredJob("k", StoredFile("jobs/k.json", 1, None))])


def test_plan_keeps_objects_of_every_kept_snapshot() -> None:
    listing = _listing({"a": (OBJ["0"], OBJ["1"]), "b": (OBJ["1"], OBJ["2"])})
    plan = plan_gc(listing, [KeptLock("seamless.lock", {FP["a"]: ("x/Y",)})], {},
                   now_ms=100 * DAY_MS, grace_ms=7 * DAY_MS)
    assert plan.paths() == ["snapshots/b", "objects/2", "objects/3"]
    assert plan.actions[1].reason == "named only by snapshots this gc removes"
    assert plan.actions[2].reason == "named by no kept snapshot"
    assert plan.kept_objects == 2
    assert [k.path for k in plan.kept] == ["snapshots/a", "jobs/k"]  # job: file time unknown


def test_plan_an_unreadable_kept_snapshot_blocks_object_deletion() -> None:
    listing = _listing({"a": None, "b": (OBJ["1"],)})
    history = {FP["a"]: Retention(200 * DAY_MS, "research-long")}
    plan = plan_gc(listing, [], history, now_ms=100 * DAY_MS, grace_ms=0)
    assert plan.paths() == ["snapshots/b"]
    assert "cannot be read" in plan.warnings[0]


def test_history_lock_that_cannot_be_parsed_keeps_what_it_names() -> None:
    conflicted = (f"<<<<<<< HEAD\n        dataset_fingerprint: {FP['a']}\n=======\n"
                  f"        dataset_fingerprint: {FP['b']}\n>>>>>>> feature\n")
    history = retention_from_locks([("abc123", conflicted)])
    assert history[FP["a"]].unreadable_in == "abc123"
    plan = plan_gc(_listing({"a": (), "b": (), "c": ()}), [], history, now_ms=100 * DAY_MS,
                   grace_ms=0)
    assert plan.paths(kind="snapshot") == ["snapshots/c"]
    kept, warning = KeptLock.from_text("feature", conflicted)
    assert set(kept.pins) == {FP["a"], FP["b"]} and warning is not None


def test_newest_expiry_wins() -> None:
    r = Retention(5, "research-short").merge(Retention(None, "default")).merge(
        Retention(9, "research-long")).merge(Retention(7, "x"))
    assert (r.expires_at, r.retention_class) == (9, "research-long")


def test_changing_a_ttl_is_drift_and_resolve_moves_expiry(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from qmtl_lock.check import check
    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.resolve import resolve

    monkeypatch.setenv("QMTL_LOCK_NOW", "2024-06-01T00:00:00Z")
    body = """\
version: 1
retention_classes:
  scratch: {{ttl_days: {ttl}}}
datasets:
  d:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [X]
    start: 2024-01-01
    end: 2024-01-03
    contract_version: v1
    retention_class: scratch
"""
    manifest = tmp_path / "seamless.yaml"
    manifest.write_text(body.format(ttl=3), encoding="utf-8")
    resolve(manifest)
    first = read_lock(tmp_path / "seamless.lock").entry("d", "X")
    manifest.write_text(body.format(ttl=10), encoding="utf-8")
    assert [d.kind for d in check(manifest).drifts] == ["retention"]
    resolve(manifest)
    second = read_lock(tmp_path / "seamless.lock").entry("d", "X")
    assert first is not None and second is not None
    assert second.as_of == first.as_of
    assert second.expires_at == first.as_of + 10 * 86_400_000
    assert not check(manifest)


# -- the store's side: inventory, remove, copy (the layout lives in engine/store.py) ------------
HEX_A, HEX_B, HEX_C = "aa" + "1" * 62, "bb" + "2" * 62, "cc" + "3" * 62
STORE_FILES = {
    f"snapshots/aa/{HEX_A}.json": b"{}",
    f"objects/bb/{HEX_B}.parquet": b"obj",
    f"objects/bb/.tmp-0a1b-{HEX_B}.parquet": b"t",  # an interrupted write
    f"objects/cc/{HEX_B}.parquet": b"wrong shard",  # not written by qmtl-lock: never listed
    "objects/README.txt": b"someone else's",
    "jobs/k1.json": b"{}",
    f"jobs/k1.staged/{HEX_C}.parquet": b"stage",
    f"jobs/k2.staged/{HEX_A}.parquet": b"st",
    "jobs/.tmp-9-k3.json": b"",
}


@pytest.fixture(params=["file", "memory"])
def filled_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (str(tmp_path / "store") if request.param == "file"
           else f"memory://gc-store-{uuid.uuid4().hex}")
    store = Store(url)
    for rel, data in STORE_FILES.items():
        store.fs.makedirs(f"{store.root}/{rel.rpartition('/')[0]}", exist_ok=True)
        store.fs.pipe(f"{store.root}/{rel}", data)
    yield store
    if request.param == "memory":
        store.fs.rm(store.root, recursive=True)


def test_inventory_lists_what_qmtl_lock_wrote_with_sizes_and_times(filled_store: Store) -> None:
    found = filled_store.inventory()
    assert {fp: (f.path, f.size) for fp, f in found.snapshots.items()} == {
        f"sha256:{HEX_A}": (f"snapshots/aa/{HEX_A}.json", 2)}
    assert {d: (f.path, f.size) for d, f in found.objects.items()} == {
        f"sha256:{HEX_B}": (f"objects/bb/{HEX_B}.parquet", 3)}
    assert [(j.key, j.name, j.staged_folder, j.checkpoint and j.checkpoint.path,
             [f.path for f in j.staged]) for j in found.jobs] == [
        ("k1", "jobs/k1", "jobs/k1.staged", "jobs/k1.json", [f"jobs/k1.staged/{HEX_C}.parquet"]),
        ("k2", "jobs/k2", "jobs/k2.staged", None, [f"jobs/k2.staged/{HEX_A}.parquet"])]
    assert sorted(f.path for f in found.temporaries) == [
        "jobs/.tmp-9-k3.json", f"objects/bb/.tmp-0a1b-{HEX_B}.parquet"]
    now_ms = time.time() * 1000
    every = [*found.snapshots.values(), *found.objects.values(), *found.temporaries]
    assert all(f.mtime_ms is not None and abs(f.mtime_ms - now_ms) < 600_000 for f in every)


def test_remove_remove_folder_and_copy_to_work_on_listed_paths(filled_store: Store,
                                                               tmp_path: Path) -> None:
    obj = f"objects/bb/{HEX_B}.parquet"
    archive = Store(str(tmp_path / "archive"))
    filled_store.copy_to(obj, archive)
    assert archive.inventory().objects[f"sha256:{HEX_B}"].size == 3
    assert not archive.inventory().temporaries  # copied under a temporary name, then moved
    filled_store.remove(obj)
    assert f"sha256:{HEX_B}" not in filled_store.inventory().objects
    with pytest.raises(FileNotFoundError):
        filled_store.remove(obj)
    filled_store.remove_folder("jobs/k1.staged")
    filled_store.remove_folder("jobs/k1.staged")  # already gone: nothing to do
    assert [j.key for j in filled_store.inventory().jobs if j.staged] == ["k2"]
    for outside in ("../elsewhere", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="not a path inside the store"):
            filled_store.remove(outside)


def test_overlapping_stores(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    assert store.overlaps(Store(str(tmp_path / "store" / "old")))
    assert store.overlaps(Store(str(tmp_path)))
    assert not store.overlaps(Store(str(tmp_path / "store-archive")))
    assert not store.overlaps(Store(f"memory://{tmp_path}/store"))


def test_archive_keeps_a_jobs_staged_objects_together(repo: Repo) -> None:
    """A stale job's staged folder moves file by file and the folder goes after."""
    import fsspec

    repo.resolve()
    base = repo.root / ".seamless" / "store"
    staged = base / "jobs" / "feedbeef.staged" / f"{HEX_C}.parquet"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"partial")
    name = f"archive-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        data = json.loads(repo.run_gc("--json", "--archive", f"memory://{name}",
                                      days=40).stdout)
        assert [a["path"] for a in data["delete"] if a["kind"] == "job"] == [
            "jobs/feedbeef.staged"]
        assert fs.cat(f"/{name}/jobs/feedbeef.staged/{HEX_C}.parquet") == b"partial"
        assert not (base / "jobs" / "feedbeef.staged").exists()
    finally:
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)
