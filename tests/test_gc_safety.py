"""gc never loses what is pinned because git failed, or because a resolve was running.

(1) A git that cannot read the repository is an error that deletes nothing, never an empty
history; outside a repository gc deletes nothing unless ``--no-git``. Every case breaks a real
repository the way it breaks in the field: owned by another user (git's dubious-ownership
check), objects lost or corrupt, HEAD unreadable, git missing from PATH, a git command failing.
(2) A running resolve holds a lease on the store (``Store.lease``); while one is live, gc keeps
every job and everything written since the oldest began; a lease whose holder died goes stale
and gc removes it. Leases are held by real threads and real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gc_repo import T0, Repo, make_repo, snapshot_path
from killing import kill_when
from qmtl_engine import (
    DAY_MS,
    LEASE_TIMEOUT_MS,
    QmtlLockError,
    Store,
    StoredFile,
    StoredJob,
    StoredLease,
    iso,
)

from qmtl_lock.errors import GitError
from qmtl_lock.gc import StoredSnapshot, StoreListing, apply_gc, plan_gc, prepare_gc
from qmtl_lock.git import GitFile
from qmtl_lock.materialize_job import MaterializeSeamlessJob

STALE_JOB = ("jobs/0123abcd.json", "jobs/0123abcd.staged/ab" + "0" * 62 + ".parquet")


@pytest.fixture(autouse=True)
def own_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config: a ``safe.directory = *`` there would hide the refusal."""
    config = tmp_path / "gitconfig"
    config.write_text("", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    return make_repo(tmp_path, monkeypatch)


def _head_differs(repo: Repo) -> set[str]:
    """HEAD pins one range of `a`, the working tree another: returns the files HEAD alone pins."""
    head = repo.resolve()
    repo.commit("pin january")
    working = repo.resolve(a_end="2024-01-05")
    only_head = repo.files_of(head["a"]) - repo.files_of(*working.values())
    assert len(only_head) == 2  # its snapshot and its January object
    return only_head


def _age_store(repo: Repo, hours: float) -> None:
    """Date every file in the store back, as if written ``hours`` ago."""
    when = time.time() - hours * 3600
    for path in (repo.root / ".seamless" / "store").rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def _write_stale_job(repo: Repo) -> set[str]:
    base = repo.root / ".seamless" / "store"
    for rel in STALE_JOB:
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(b"partial")
    return set(STALE_JOB)


# -- (1) git that fails ------------------------------------------------------------------------
def _owned_by_someone_else(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if os.geteuid() != 0:
        pytest.skip("giving the repository to another user needs root")
    for path in [repo.root, *repo.root.rglob("*")]:
        os.chown(path, 12345, 12345, follow_symlinks=False)
    return "dubious ownership"


def _lost_lock_blob(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    blob = repo.git("rev-parse", "HEAD:seamless.lock").strip()
    loose = repo.root / ".git" / "objects" / blob[:2] / blob[2:]
    assert loose.is_file()
    loose.unlink()
    return f"cannot give blob {blob}: it is damaged"


def _lost_commit(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (repo.root / ".git" / "refs" / "heads" / "main").write_text("1" * 40 + "\n")
    return "cannot give the tree of HEAD: it is damaged"


def _corrupt_commit(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    commit = repo.git("rev-parse", "HEAD").strip()
    loose = repo.root / ".git" / "objects" / commit[:2] / commit[2:]
    loose.chmod(0o644)
    loose.write_bytes(b"not zlib at all")
    return "is corrupt"


def _unreadable_head(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (repo.root / ".git" / "HEAD").write_text("garbage\n")
    return f"git does not read {repo.root / '.git'} as a repository"


def _git_missing(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return f"git is not installed (or not on PATH), and {repo.root} is in a git repository"


def _git_command_fails(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A git on PATH whose history listing fails, as a broken pack or a full disk would."""
    real = shutil.which("git")
    assert real is not None
    shim = tmp_path / "bin" / "git"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = rev-list ]; then\n"
                    "  echo 'fatal: cannot read the history today' >&2; exit 128; fi; done\n"
                    f"exec {real} \"$@\"\n", encoding="utf-8")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    return "`git rev-list --all --reflog` failed: fatal: cannot read the history today"


Breaker = Callable[[Repo, Path, pytest.MonkeyPatch], str]
BROKEN_GIT: dict[str, tuple[Breaker, str]] = {  # how it breaks -> (breaker, a word of the fix)
    "dubious ownership": (_owned_by_someone_else, "git config --global --add safe.directory"),
    "lost lock blob": (_lost_lock_blob, "git fsck"),
    "lost commit": (_lost_commit, "git fsck"),
    "corrupt commit": (_corrupt_commit, "git fsck"),
    "unreadable HEAD": (_unreadable_head, "git fsck"),
    "git missing": (_git_missing, "install git"),
    "git command fails": (_git_command_fails, "git status"),
}


def test_a_healthy_repository_keeps_what_head_pins(repo: Repo) -> None:
    """The baseline every broken case below departs from."""
    only_head = _head_differs(repo)
    data = repo.gc("--grace-days", "0", days=40)
    assert data["deleted"] == set()
    [snapshot] = [p for p in only_head if p.startswith("snapshots/")]
    assert data["reasons"][snapshot] == "pinned by HEAD (a/BTCUSDT)"


@pytest.mark.parametrize("case", BROKEN_GIT)
def test_git_that_cannot_read_the_repository_stops_gc_and_deletes_nothing(
        repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    _head_differs(repo)
    breaker, fix = BROKEN_GIT[case]
    said = breaker(repo, tmp_path, monkeypatch)
    before = repo.store_files()
    for args in ([], ["--dry-run"], ["--all-refs"]):
        result = repo.run_gc("--grace-days", "0", *args, days=40, code=2)
        assert said in result.output or args == ["--all-refs"]  # that may fail sooner
        assert "--no-git" in result.output and "Traceback" not in result.output
        assert fix in result.output or args == ["--all-refs"]
    data = json.loads(repo.run_gc("--json", "--grace-days", "0", days=40, code=2).stdout)
    assert (data["ok"], data["error"]) == (False, "GitError")
    assert repo.store_files() == before


def test_dubious_ownership_names_the_command_that_trusts_the_repository(
        repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _head_differs(repo)
    _owned_by_someone_else(repo, tmp_path, monkeypatch)
    with pytest.raises(GitError) as info:
        prepare_gc(repo.root / "seamless.yaml")
    assert "detected dubious ownership in repository at" in info.value.what
    assert info.value.fix == (
        f"if you trust the repository, run `git config --global --add safe.directory "
        f"{repo.root}`, or pass --no-git to keep only what the working-tree lock pins")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("case", BROKEN_GIT)
def test_no_git_keeps_only_the_working_tree_lock_whatever_git_says(
        repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    only_head = _head_differs(repo)
    BROKEN_GIT[case][0](repo, tmp_path, monkeypatch)
    dry = repo.gc("--no-git", "--dry-run", "--grace-days", "0", days=40)
    assert dry["deleted"] == only_head
    data = repo.gc("--no-git", "--grace-days", "0", days=40)
    assert data["deleted"] == only_head
    assert data["kept_locks"] == ["seamless.lock"]
    assert data["warnings"] == []
    repo.verify_ok()


def test_no_git_refuses_the_options_that_read_git(repo: Repo) -> None:
    _head_differs(repo)
    for flag in (["--keep-revs", "main"], ["--all-refs"]):
        result = repo.run_gc("--no-git", *flag, days=0, code=2)
        assert f"--no-git reads no git history, and {flag[0]} asks for it" in result.output


def test_help_documents_no_git() -> None:
    from click.testing import CliRunner

    from qmtl_lock.cli.gc import gc_command

    text = " ".join(CliRunner().invoke(gc_command, ["--help"]).output.split()).replace("- ", "-")
    assert "--no-git Read no git history: keep only what the working-tree seamless.lock pins" \
        in text
    assert "stops (exit 2) when git cannot read one" in text
    assert "Outside a repository it deletes nothing unless --no-git" in text


@pytest.mark.parametrize("git_installed", [True, False], ids=["with git", "without git"])
def test_outside_a_repository_gc_deletes_nothing_unless_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git_installed: bool) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(root)
    repo = Repo(root, monkeypatch)
    first = repo.resolve()
    current = repo.resolve(a_end="2024-01-05")
    only_first = repo.files_of(first["a"]) - repo.files_of(*current.values())
    if not git_installed:
        _git_missing(repo, tmp_path, monkeypatch)
    before = repo.store_files()

    result = repo.run_gc("--grace-days", "0", days=40)
    assert repo.store_files() == before
    assert ("warning: seamless.lock is not in a git repository (or git is not installed)"
            in result.output)
    assert ("warning: there is no git history to tell what earlier locks pinned, so gc deletes "
            "nothing (2 items,") in result.output
    assert "`qmtl-lock gc --no-git` keeps only what the working-tree lock pins" in result.output
    data = repo.gc("--grace-days", "0", days=40)
    assert data["delete"] == [] and data["deleted"] == set()
    assert data["reasons"][snapshot_path(first["a"])] == (
        "unreferenced, named by no lock in the git history, but kept: no git history to tell "
        "what earlier locks pinned")

    data = repo.gc("--no-git", "--grace-days", "0", days=40)
    assert data["deleted"] == only_first
    repo.verify_ok()


def test_git_file_tells_an_absent_lock_from_a_lost_one(repo: Repo) -> None:
    """``cat-file`` says "missing" for both; the tree walk does not."""
    (repo.root / "sub").mkdir()
    (repo.root / "sub" / "seamless.lock").write_text("nested\n", encoding="utf-8")
    repo.git("commit", "-q", "--allow-empty", "-m", "nothing yet")
    before = repo.git("rev-parse", "HEAD").strip()
    repo.commit("a nested lock")
    blob = repo.git("rev-parse", "HEAD:sub/seamless.lock").strip()
    repo.git("tag", "a-blob", blob)  # a tag of a blob: no tree, so no lock to read
    nested = GitFile.of(repo.root / "sub" / "seamless.lock", otherwise="-")
    assert nested.texts_at([before, "HEAD"]) == {before: None, "HEAD": "nested\n"}
    assert GitFile.of(repo.root / "sub" / "other.lock", otherwise="-").text_at("HEAD") is None
    assert GitFile.of(repo.root / "nope" / "x.lock", otherwise="-").text_at("HEAD") is None
    assert [short for short, _ in nested.ref_tips()] == ["main"]
    (repo.root / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    assert nested.text_at(before) is None
    with pytest.raises(GitError, match=f"cannot give blob {blob}"):
        nested.text_at("HEAD")


def test_git_file_a_repository_without_commits_has_no_head(repo: Repo) -> None:
    git = GitFile.find(repo.root / "seamless.lock")
    assert git is not None and not git.has_head()
    repo.git("commit", "-q", "--allow-empty", "-m", "first")
    assert git.has_head()


# -- (2) leases --------------------------------------------------------------------------------
@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (str(tmp_path / "store") if request.param == "file"
           else f"memory://lease-store-{uuid.uuid4().hex}")
    made = Store(url)
    yield made
    if request.param == "memory" and made.fs.exists(made.root):
        made.fs.rm(made.root, recursive=True)


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _readable(store: Store) -> list[StoredLease]:
    return [x for x in store.leases() if x.owner is not None]  # skip one caught mid-refresh


def test_a_lease_is_listed_while_held_refreshed_and_removed_after(store: Store) -> None:
    now = time.time_ns() // 1_000_000
    with store.lease("resolve seamless.yaml", heartbeat_s=0.02) as held:
        [first] = store.leases()
        assert first.path == held.path and first.path.startswith("leases/")
        assert (first.owner, first.pid, first.host) == (
            "resolve seamless.yaml", os.getpid(), socket.gethostname())
        assert first.started_ms == first.heartbeat_ms
        assert first.started_ms is not None and abs(first.started_ms - now) < 60_000
        _wait_for(lambda: any(x.heartbeat_ms != first.heartbeat_ms for x in _readable(store)),
                  "a heartbeat")
        [later] = _readable(store)
        assert later.started_ms == first.started_ms
        assert later.heartbeat_ms is not None and first.heartbeat_ms is not None
        assert later.heartbeat_ms > first.heartbeat_ms
    assert store.leases() == ()
    assert not any(t.name.startswith("qmtl-lock lease") for t in threading.enumerate())


def test_a_lease_is_removed_when_the_block_fails(store: Store) -> None:
    with pytest.raises(RuntimeError, match="resolve failed"), store.lease("resolve"):
        assert len(store.leases()) == 1
        raise RuntimeError("resolve failed")
    assert store.leases() == ()


def test_a_lease_is_created_exclusively(store: Store) -> None:
    lease = store.lease("second holder")
    store.fs.makedirs(f"{store.root}/leases", exist_ok=True)
    store.fs.pipe(f"{store.root}/{lease.path}", b"someone else's")
    with pytest.raises(FileExistsError), lease:
        pass
    assert store.fs.cat(f"{store.root}/{lease.path}") == b"someone else's"


def test_leases_that_cannot_be_read_are_listed_with_their_file_time(store: Store) -> None:
    store.fs.makedirs(f"{store.root}/leases", exist_ok=True)
    for name, data in {"torn.json": b'{"lease_ver', "newer.json": b'{"lease_version": 99}',
                       ".tmp-1-x.json": b"", "notes.txt": b"not a lease"}.items():
        store.fs.pipe(f"{store.root}/leases/{name}", data)
    found = store.leases()
    assert [x.path for x in found] == ["leases/newer.json", "leases/torn.json"]
    now = time.time_ns() // 1_000_000
    for lease in found:
        assert (lease.owner, lease.pid, lease.host) == (None, None, None)
        assert lease.heartbeat_ms is not None and abs(lease.heartbeat_ms - now) < 60_000
        assert lease.started_ms == lease.heartbeat_ms
        assert not lease.is_stale(now)
        assert lease.is_stale(lease.heartbeat_ms + LEASE_TIMEOUT_MS + 1)


def test_remove_lease_leaves_a_lease_whose_holder_woke_up(store: Store) -> None:
    with store.lease("slow resolve", heartbeat_s=0.02):
        [seen] = store.leases()
        _wait_for(lambda: any(x.heartbeat_ms != seen.heartbeat_ms for x in _readable(store)),
                  "a heartbeat")
        assert store.remove_lease(seen) is False
        assert len(store.leases()) == 1
    assert store.remove_lease(seen) is False  # already gone
    with store.lease("paused resolve", heartbeat_s=3600) as held:
        [paused] = store.leases()
        leftover = f"leases/.tmp-{uuid.uuid4().hex}-{held.path.removeprefix('leases/')}"
        store.fs.pipe(f"{store.root}/{leftover}", b"{")  # a heartbeat cut short
        assert store.remove_lease(paused) is True
        assert store.leases() == ()
        assert not store.fs.exists(f"{store.root}/{leftover}")
    # leaving a lease gc already removed is no error


def test_is_stale_is_about_the_last_heartbeat() -> None:
    lease = StoredLease("leases/a.json", "r", 1, "h", started_ms=0, heartbeat_ms=1000)
    assert not lease.is_stale(1000 + LEASE_TIMEOUT_MS)
    assert lease.is_stale(1001 + LEASE_TIMEOUT_MS)
    assert lease.is_stale(1100, timeout_ms=99)
    unknown = StoredLease("leases/b.json", None, None, None, None, None)
    assert not unknown.is_stale(10**15)


HOLD_IN_A_PROCESS = """\
import sys, time
from qmtl_engine import Store
with Store(sys.argv[1]).lease("resolve in another process", heartbeat_s=float(sys.argv[2])) as h:
    print(h.path, flush=True)
    sys.stdin.read() if sys.argv[3] == "until-stdin-closes" else time.sleep(3600)
"""


@contextmanager
def _held(store: Store, holder: str) -> Iterator[tuple[str, int]]:
    """A real lease on ``store``, held by a thread or another process: (its path, holder pid)."""
    if holder == "thread":
        path: list[str] = []
        stop = threading.Event()

        def hold() -> None:
            with store.lease("resolve in a thread", heartbeat_s=0.05) as lease:
                path.append(lease.path)
                stop.wait()

        thread = threading.Thread(target=hold)
        thread.start()
        _wait_for(lambda: bool(path), "the lease")
        try:
            yield path[0], os.getpid()
        finally:
            stop.set()
            thread.join()
        return
    child = subprocess.Popen([sys.executable, "-c", HOLD_IN_A_PROCESS, store.url, "0.05",
                              "until-stdin-closes"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        yield child.stdout.readline().strip(), child.pid
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        child.stdout.close()


def _old_history_and_a_stale_job(repo: Repo) -> set[str]:
    """An expired snapshot only the history names, and a stale job, written an hour ago.
    Returns what gc deletes when no lease is held (at day 40, no grace period)."""
    first = repo.resolve()
    repo.commit("pin")
    current = repo.resolve(a_end="2024-01-05")
    repo.commit("longer")
    job = _write_stale_job(repo)
    _age_store(repo, hours=1)
    return (repo.files_of(first["a"]) - repo.files_of(*current.values())) | job


def _written_during(repo: Repo) -> set[str]:
    """A snapshot no lock names yet, written now, as a running resolve would."""
    report = MaterializeSeamlessJob(preset="ohlcv.synthetic.crypto.1h", symbol="SOLUSDT",
                                    start="2024-03-01", end="2024-03-02", contract_version="v1",
                                    artifact_dir=str(repo.root / ".seamless" / "store")).run()
    return repo.files_of(report.dataset_fingerprint)


@pytest.mark.parametrize("holder", ["thread", "process"])
def test_gc_keeps_jobs_and_new_files_while_a_resolve_holds_a_lease(repo: Repo,
                                                                   holder: str) -> None:
    expendable = _old_history_and_a_stale_job(repo)
    with _held(repo.store, holder) as (path, pid):
        fresh = _written_during(repo)
        result = repo.run_gc("--dry-run", "--grace-days", "0", days=40)
        owner = f"resolve in {'a thread' if holder == 'thread' else 'another process'}"
        assert (f"respecting the lease {path} of {owner} (pid {pid} on {socket.gethostname()}), "
                "started ") in result.output
        data = repo.gc("--grace-days", "0", days=40)
        assert data["deleted"] == expendable - set(STALE_JOB)
        [respected] = data["leases"]["respected"]
        assert (respected["path"], respected["owner"], respected["pid"], respected["host"]) == (
            path, owner, pid, socket.gethostname())
        assert 0 <= respected["age_s"] < 600 and data["leases"]["stale"] == []
        assert data["reasons"]["jobs/0123abcd"] == (
            f"a resolve holds a lease ({owner} (pid {pid} on {socket.gethostname()})): it may be "
            "resuming this job")
        [snapshot] = [rel for rel in fresh if rel.startswith("snapshots/")]  # objects: its own
        assert f"after the lease of {owner} (pid {pid}" in data["reasons"][snapshot]
    data = repo.gc("--grace-days", "0", days=40)  # released: the rest goes
    assert data["deleted"] == fresh | set(STALE_JOB)
    assert data["leases"] == {"respected": [], "stale": []}
    repo.verify_ok()


def test_a_lease_whose_holder_died_protects_until_it_goes_stale(repo: Repo) -> None:
    expendable = _old_history_and_a_stale_job(repo)
    store = repo.store
    kill_when([sys.executable, "-c", HOLD_IN_A_PROCESS, store.url, "3600", "forever"],
              cwd=repo.root,
              env=os.environ, ready=lambda: bool(_readable(store)))
    [dead] = store.leases()
    data = repo.gc("--grace-days", "0", days=40)  # within the timeout it still counts
    assert data["deleted"] == expendable - set(STALE_JOB)
    assert [x["path"] for x in data["leases"]["respected"]] == [dead.path]

    time.sleep(0.3)
    gc = prepare_gc(repo.root / "seamless.yaml", grace_days=0, now_ms=T0 + 41 * DAY_MS,
                    lease_timeout_ms=200)
    assert (gc.plan.leases, gc.plan.stale_leases) == ((), (dead,))
    assert gc.plan.respected_lines() == []
    assert gc.plan.stale_line(dead, "removed").startswith(
        f"removed stale lease {dead.path} of resolve in another process (pid {dead.pid} on "
        f"{socket.gethostname()}), started ")
    assert gc.plan.to_dict()["leases"]["stale"][0]["path"] == dead.path
    result = apply_gc(gc.plan, gc.store, log=lambda _: None)
    assert result.leases_removed == [dead.path]
    assert store.leases() == ()
    assert not set(STALE_JOB) & set(repo.store_files())


def test_a_lease_taken_while_gc_plans_stops_it_before_it_deletes(repo: Repo) -> None:
    _old_history_and_a_stale_job(repo)
    # planned without the gc lock, so that a lease can be taken before apply_gc takes it (under
    # the lock, a new lease waits instead: test_gc_shared.py)
    gc = prepare_gc(repo.root / "seamless.yaml", grace_days=0, now_ms=T0 + 40 * DAY_MS,
                    exclusive=False)
    assert gc.plan.actions
    before = repo.store_files()
    with repo.store.lease("resolve that started late", heartbeat_s=3600):
        with pytest.raises(QmtlLockError, match="took a lease on the store while gc was planning"
                           r" \(resolve that started late, leases/"):
            apply_gc(gc.plan, gc.store)
        assert repo.store_files().keys() - before.keys() == {repo.store.leases()[0].path}
    assert repo.store_files() == before


# -- the pure planner with leases and without history -------------------------------------------
WALL = 1_000 * DAY_MS
FP, OBJ = "sha256:" + "a" * 64, {n: "sha256:" + n * 64 for n in "01"}


def _listing(*leases: StoredLease, written: int) -> StoreListing:
    """One unpinned snapshot and object written at ``written``, an old object, an old job."""
    return StoreListing(
        snapshots={FP: StoredSnapshot(StoredFile("snapshots/a", 10, written), (OBJ["0"],))},
        objects={OBJ["0"]: StoredFile("objects/0", 100, written),
                 OBJ["1"]: StoredFile("objects/1", 100, 0)},
        jobs=[StoredJob("k", StoredFile("jobs/k.json", 1, 0))],
        temporaries=[StoredFile("objects/.tmp-1", 1, written)], leases=leases)


def _lease(started_ms: int | None, heartbeat_ms: int | None,
           owner: str | None = "r") -> StoredLease:
    return StoredLease(f"leases/{started_ms}.json", owner, 7, "box", started_ms, heartbeat_ms)


@pytest.mark.parametrize(("leases", "written", "deleted"), [
    ((), WALL - 3600_000, ["snapshots/a", "objects/0", "objects/1", "jobs/k.json",
                           "objects/.tmp-1"]),
    # live, began after the files: they go, the job stays
    ((_lease(WALL - 60_000, WALL),), WALL - 3600_000,
     ["snapshots/a", "objects/0", "objects/1", "objects/.tmp-1"]),
    # live, began before the files (within the clock slack counts as before)
    ((_lease(WALL - 60_000, WALL),), WALL - 90_000, ["objects/1"]),
    ((_lease(WALL - 3600_000, WALL - 1000), _lease(WALL - 60_000, WALL)), WALL - 1800_000,
     ["objects/1"]),
    # stale: protects nothing
    ((_lease(WALL - 3600_000, WALL - LEASE_TIMEOUT_MS - 1),), WALL - 60_000,
     ["snapshots/a", "objects/0", "objects/1", "jobs/k.json", "objects/.tmp-1"]),
    # unreadable, time unknown: never stale, everything counts as written since it began
    ((_lease(None, None, owner=None),), 0, []),
], ids=["no lease", "lease after the files", "lease before the files", "the oldest lease counts",
        "stale lease", "unreadable lease"])
def test_plan_keeps_what_a_live_lease_may_need(leases: tuple[StoredLease, ...], written: int,
                                               deleted: list[str]) -> None:
    plan = plan_gc(_listing(*leases, written=written), [], {}, now_ms=WALL + 40 * DAY_MS,
                   grace_ms=0, wall_ms=WALL)
    assert plan.paths() == deleted
    live = tuple(x for x in leases if not x.is_stale(WALL))
    assert (plan.leases, plan.stale_leases) == (live, tuple(x for x in leases if x not in live))
    assert len(plan.respected_lines()) == len(live)


def test_plan_without_history_deletes_nothing_and_says_why() -> None:
    plan = plan_gc(_listing(written=0), [], None, now_ms=WALL, grace_ms=0)
    assert plan.actions == ()
    assert {k.path for k in plan.kept} == {"snapshots/a", "objects/0", "objects/1", "jobs/k.json",
                                           "objects/.tmp-1"}
    assert all(k.reason.endswith("but kept: no git history to tell what earlier locks pinned")
               for k in plan.kept)
    assert plan.kept_objects == 2
    assert plan.warnings == (
        "there is no git history to tell what earlier locks pinned, so gc deletes nothing "
        "(5 items, 212 B, would go otherwise); `qmtl-lock gc --no-git` keeps only what the "
        "working-tree lock pins and deletes the rest",)


def test_the_plan_reports_each_lease_it_respects() -> None:
    lease = _lease(WALL - 1000, WALL)
    plan = plan_gc(_listing(lease, written=WALL), [], {}, now_ms=WALL, grace_ms=0, wall_ms=WALL)
    assert plan.to_dict()["leases"] == {"respected": [{
        "path": lease.path, "owner": "r", "pid": 7, "host": "box", "age_s": 1,
        "started": iso(WALL - 1000), "heartbeat": iso(WALL)}], "stale": []}
    assert plan.respected_lines() == [
        f"respecting the lease {lease.path} of r (pid 7 on box), started 1 s ago, last heartbeat "
        f"0 s ago: keeping every job, and anything written since {iso(WALL - 61_000)}"]
