"""Failures that used to be tracebacks: each is now one message (what, where, fix) with its
documented exit code (2 bad input, 3 materialization or storage failed, 130 interrupted).

Storage faults are real ones the kernel enforces for root (tests/fs_faults.py); sources run
against a real HTTP server or a closed port on 127.0.0.1; a few cases run the real console entry
point in a subprocess, whose stderr must hold no traceback and whose exit code must be the
command's own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import NOW, Project, expect
from fs_faults import fill, immutable, read_only_bind, tmpfs
from http_server import Reply, Server, serve
from qmtl_engine import SourceError
from qmtl_engine.clock import SystemClock
from qmtl_engine.http import HttpClient, wait_budget
from qmtl_engine.presets import SLAPreset
from qmtl_engine.sla import SLATimer

from qmtl_lock.cli import cli
from qmtl_lock.cli.output import EXIT_INTERRUPTED, run

ROOT = Path(__file__).resolve().parents[1]
LONGER = ("end: 2024-02-02", "end: 2024-02-03")  # resolve must fetch, write the store and lock


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Exception ignored" not in text, text


def cli_subprocess(cwd: Path, *args: str, preexec: Callable[[], None] | None = None,
                   prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The real console entry point (``main()``), in a fresh interpreter."""
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    env.pop("CI", None)
    code = f"{prelude}from qmtl_lock.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120, preexec_fn=preexec, check=False)


# -- storage faults ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """A real fault, the manifest to resolve under it, and the words the user must read."""

    id: str
    make: Callable[[Project, ExitStack], Path]  # sets the fault up; returns the manifest
    what: str
    where: str  # {store}, {lock} and {root} are filled in
    fix: str


def _lock_immutable(p: Project, stack: ExitStack) -> Path:
    stack.enter_context(immutable(p.lock))
    return p.manifest


def _project_immutable(p: Project, stack: ExitStack) -> Path:
    stack.enter_context(immutable(p.root))  # the lock's temporary file cannot be created
    return p.manifest


def _store_read_only_bind(p: Project, stack: ExitStack) -> Path:
    stack.enter_context(read_only_bind(p.store))
    return p.manifest


def _store_immutable(p: Project, stack: ExitStack) -> Path:
    stack.enter_context(immutable(p.store, recursive=True))
    return p.manifest


def _store_on_read_only_tmpfs(p: Project, stack: ExitStack) -> Path:
    stack.enter_context(tmpfs(p.root / "ro", read_only=True))
    p.edit_manifest("store: .seamless/store", "store: ro/store")
    return p.manifest


def _store_on_full_disk(p: Project, stack: ExitStack) -> Path:
    fill(stack.enter_context(tmpfs(p.root / "small", size="256k")))
    p.edit_manifest("store: .seamless/store", "store: small/store")
    return p.manifest


def _lock_on_full_disk(p: Project, stack: ExitStack) -> Path:
    """The project (manifest and lock) on a full disk; the store, elsewhere, has room."""
    folder = stack.enter_context(tmpfs(p.root / "full", size="256k"))
    p.edit_manifest("store: .seamless/store", f"store: {p.store}")
    shutil.copy(p.manifest, folder / "seamless.yaml")
    shutil.copy(p.lock, folder / "seamless.lock")
    fill(folder)
    return folder / "seamless.yaml"


FAULTS = [
    Fault("lock-immutable", _lock_immutable,
          "access to seamless.lock was refused: operation not permitted", "{lock}",
          "chattr -i"),
    Fault("project-folder-immutable", _project_immutable,
          "access to seamless.lock was refused: operation not permitted", "{lock}",
          "chattr -i"),
    Fault("store-read-only-bind-mount", _store_read_only_bind,
          "cannot write to the store: read-only file system", "store {root}/.seamless/store",
          "remount it read-write"),
    Fault("store-immutable", _store_immutable,
          "access to the store was refused: operation not permitted",
          "store {root}/.seamless/store", "`store:` in seamless.yaml"),
    Fault("store-on-read-only-tmpfs", _store_on_read_only_tmpfs,
          "cannot write to the store: read-only file system", "store {root}/ro/store",
          "remount it read-write"),
    Fault("store-disk-full", _store_on_full_disk,
          "cannot write to the store: no space left on the device", "store {root}/small/store",
          "free space on the device holding {root}/small/store"),
    Fault("lock-disk-full", _lock_on_full_disk,
          "cannot write to seamless.lock: no space left on the device",
          "{root}/full/seamless.lock", "free space on the device holding {root}/full"),
]


@pytest.fixture
def faults() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.id)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_storage_fault_is_one_message_and_exit_3(resolved: Project, faults: ExitStack,
                                                  fault: Fault, as_json: bool) -> None:
    resolved.edit_manifest(*LONGER)
    manifest = fault.make(resolved, faults)
    lock = manifest.with_name("seamless.lock")
    before = lock.read_bytes()
    result = expect(resolved.run("resolve", "-m", str(manifest), *(["--json"] if as_json
                                                                  else [])), 3)
    names = {"store": str(resolved.store), "lock": str(lock), "root": str(resolved.root)}
    if as_json:
        error = json.loads(result.stdout)
        assert (error["ok"], error["error"]) == (False, "StoreError")
        what, where, fix = error["what"], error["where"], error["fix"]
    else:
        assert result.stdout == ""
        text = result.stderr
        assert text.startswith(f"error: {fault.what}\n"), text
        what, where, fix = fault.what, text, text
    assert what == fault.what
    assert fault.where.format(**names) in where
    assert fault.fix.format(**names) in fix and "rerun `qmtl-lock resolve`" in fix
    no_traceback(result.output)
    assert lock.read_bytes() == before  # the previous lock is intact


def test_storage_fault_through_the_console_script(resolved: Project, faults: ExitStack) -> None:
    resolved.edit_manifest(*LONGER)
    faults.enter_context(read_only_bind(resolved.store))
    before = resolved.lock.read_bytes()
    proc = cli_subprocess(resolved.root, "resolve")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: cannot write to the store: read-only file system")
    no_traceback(proc.stderr)
    assert resolved.lock.read_bytes() == before


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))


def test_file_size_limit_is_one_message(resolved: Project) -> None:
    resolved.edit_manifest(*LONGER)
    before = resolved.lock.read_bytes()
    proc = cli_subprocess(resolved.root, "resolve", preexec=_limit_file_size)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: cannot write to the store: file too large"), proc.stderr
    assert f"store {resolved.store}" in proc.stderr and "ulimit -f" in proc.stderr
    no_traceback(proc.stderr)
    assert resolved.lock.read_bytes() == before


@pytest.mark.parametrize(("args", "name"), [
    (["init", "--dir", "{dir}"], "seamless.yaml"),
    (["schemas", "--write", "{dir}/schemas"], "schemas"),
], ids=["init", "schemas-write"])
def test_writing_into_a_read_only_folder_is_one_message(project: Project, faults: ExitStack,
                                                        args: list[str], name: str) -> None:
    folder = faults.enter_context(tmpfs(project.root / "ro", read_only=True))
    result = expect(project.run(*[a.format(dir=folder) for a in args]), 3)
    assert result.stderr.startswith(f"error: cannot write to {name}: read-only file system\n")
    assert f"where: {folder}/{name}" in result.stderr and "remount it read-write" in \
        result.stderr
    no_traceback(result.output)


def test_a_read_only_store_file_system_is_one_message(resolved: Project) -> None:
    """fsspec's http file system cannot write: a StoreError, not a NotImplementedError."""
    resolved.edit_manifest("store: .seamless/store", "store: http://127.0.0.1:9/store")
    result = expect(resolved.run("resolve"), 3)
    assert "the store's file system cannot do what qmtl-lock needs" in result.stderr
    assert "where: store http://127.0.0.1:9/store" in result.stderr


# -- output files are checked before any work ------------------------------------------------
@pytest.mark.parametrize("option", ["--metrics-file", "--report"])
def test_missing_output_folder_is_refused_before_any_work(resolved: Project, option: str) -> None:
    resolved.edit_manifest(*LONGER)
    lock, store = resolved.lock.read_bytes(), files_of(resolved.store)
    target = resolved.root / "no" / "such" / "out.txt"
    result = expect(resolved.run("resolve", option, str(target)), 2)
    assert result.stderr.startswith(
        f"error: {option} {target}: the folder {target.parent} does not exist"), result.stderr
    assert f"mkdir -p {target.parent}" in result.stderr
    assert resolved.lock.read_bytes() == lock and files_of(resolved.store) == store


# -- store URLs whose fsspec package is missing ------------------------------------------------
def test_gcs_store_without_gcsfs_says_what_to_install(resolved: Project) -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here, so gcs:// does not fail")
    resolved.edit_manifest("store: .seamless/store", "store: gcs://bucket/prefix?token=abc")
    for args in (["resolve"], ["verify"], ["show", "crypto", "--gaps"]):
        result = expect(resolved.run(*args), 3)
        assert result.stderr == (
            "error: cannot open the store: Please install gcsfs to access Google Storage\n"
            "  where: store gcs://bucket/prefix?token=<redacted>\n"
            "  fix:   pip install gcsfs\n"), args


def test_s3_store_without_s3fs_points_at_our_extra(resolved: Project) -> None:
    """A fresh interpreter in which s3fs cannot be imported (``sys.modules[name] = None`` is
    Python's documented way to make an import fail)."""
    resolved.edit_manifest("store: .seamless/store", "store: s3://bucket/prefix")
    proc = cli_subprocess(resolved.root, "resolve",
                          prelude="import sys; sys.modules['s3fs'] = None; ")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == ("error: cannot open the store: Install s3fs to access S3\n"
                           "  where: store s3://bucket/prefix\n"
                           "  fix:   pip install 'qmtl-lock[s3]'\n")


def test_unknown_store_protocol_is_bad_input(resolved: Project) -> None:
    resolved.edit_manifest("store: .seamless/store", "store: nosuchfs://u:pw@host/x")
    result = expect(resolved.run("resolve"), 2)
    assert result.stderr.startswith("error: cannot open the store: Protocol not known: nosuchfs")
    assert "where: store nosuchfs://<redacted>@host/x" in result.stderr and "pw" not in \
        result.stderr


# -- network sources ---------------------------------------------------------------------------
CATALOG = """\
version: 1
data_presets:
  ohlcv.loopback.spot.1d:
    kind: ohlcv
    interval_ms: 86400000
    stabilization_bars: 1
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    partition: month
    source:
      name: binance_vision
      options:
        market: spot
        base_url: "{url}"
        verify_checksum: false
        max_attempts: 2
        backoff_initial_ms: 1
        backoff_max_ms: 2
        rate_limit: {{requests_per_second: 10000, burst: 10000}}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""
NETWORK_MANIFEST = """\
version: 1
store: .seamless/store
presets: [presets.yaml]
datasets:
  btc:
    preset: ohlcv.loopback.spot.1d
    symbols: [BTCUSDT]
    start: 2024-01-01
    end: 2024-01-02
    contract_version: v1
"""
DAY_ZIP = "/data/spot/daily/klines/BTCUSDT/1d/BTCUSDT-1d-2024-01-01.zip"


def network_project(project: Project, url: str) -> None:
    (project.root / "presets.yaml").write_text(CATALOG.format(url=url), encoding="utf-8")
    project.write_manifest(NETWORK_MANIFEST)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


def test_unreachable_endpoint_is_one_message(project: Project) -> None:
    port = closed_port()
    network_project(project, f"http://127.0.0.1:{port}")
    result = expect(project.run("resolve"), 3)
    text = result.stderr
    assert text.startswith("error: gave up after 2 attempts: URLError:"), text
    assert "Connection refused" in text
    assert (f"where: dataset btc, source binance_vision, symbol BTCUSDT, range "
            f"[2024-01-01T00:00:00Z, 2024-01-02T00:00:00Z), url http://127.0.0.1:{port}{DAY_ZIP}"
            in text)
    assert "fix:   the archive did not answer reliably: rerun `qmtl-lock resolve` later" in text
    no_traceback(result.output)
    assert not project.lock.exists()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


def test_retry_after_longer_than_allowed_fails_at_once(project: Project, server: Server) -> None:
    server.route(DAY_ZIP, Reply(b"slow down", 429, {"Retry-After": "3600"}))
    network_project(project, server.url)
    started = time.monotonic()
    result = expect(project.run("resolve"), 3)
    assert time.monotonic() - started < 1.0
    assert server.count(DAY_ZIP) == 1  # no retry, no sleep
    text = result.stderr
    assert text.startswith(
        "error: the server answered HTTP 429 and asks to wait 3600 s before retrying "
        "(Retry-After), longer than this fetch may wait (the SLA budget left for this fetch "
        "is "), text
    assert (f"  where: dataset btc, source binance_vision, symbol BTCUSDT, range "
            f"[2024-01-01T00:00:00Z, 2024-01-02T00:00:00Z), url {server.url}{DAY_ZIP}\n"
            in text)  # the engine names what the HTTP client could not know
    assert "fix:   rerun after " in text and "max_retry_after_s" in text


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.mark.parametrize(("asked", "limit", "budget", "why"), [
    ("3600", 120.0, None, "max_retry_after_s is 120 s"),
    ("30", 20.0, None, "max_retry_after_s is 20 s"),
    ("30", 120.0, 5.0, "the SLA budget left for this fetch is 5 s"),
], ids=["default-limit", "option-limit", "budget"])
def test_http_client_refuses_a_long_retry_after(server: Server, asked: str, limit: float,
                                                budget: float | None, why: str) -> None:
    server.route("/a?token=s3cr3t-value", Reply(b"busy", 503, {"Retry-After": asked}))
    sleeps = Sleeps()
    http = HttpClient(max_retry_after_s=limit, sleep=sleeps, source="loopback")
    with wait_budget(budget), pytest.raises(SourceError) as info:
        http.get(server.url + "/a?token=s3cr3t-value")
    err = info.value
    assert sleeps.calls == [] and server.count("/a") == 1
    assert err.what == (f"the server answered HTTP 503 and asks to wait {asked} s before "
                        f"retrying (Retry-After), longer than this fetch may wait ({why})")
    assert err.where == f"source loopback, url {server.url}/a?token=<redacted>"
    assert "s3cr3t-value" not in str(err)


def test_a_retry_after_within_the_limits_is_still_honoured(server: Server) -> None:
    server.route("/a", Reply(b"busy", 429, {"Retry-After": "4"}), Reply(b"ok"))
    sleeps = Sleeps()
    with wait_budget(10.0):
        assert HttpClient(sleep=sleeps).get(server.url + "/a") == b"ok"
    assert sleeps.calls == [4.0]


def test_the_sla_timer_bounds_the_wait_of_each_fetch(server: Server) -> None:
    """Under the baseline SLA (45 s of backfill), a 60 s Retry-After is refused, although the
    client alone would wait up to 120 s."""
    server.route("/a", Reply(b"busy", 429, {"Retry-After": "60"}))
    timer = SLATimer(SLAPreset(max_wait_backfill_ms=45_000), SystemClock(), dataset="d",
                     symbol="S")
    with timer.phase("backfill"), pytest.raises(SourceError, match="SLA budget left for this "
                                                                   "fetch is 45 s"):
        HttpClient(sleep=Sleeps()).get(server.url + "/a")


# -- interrupts and unexpected errors, in-process ---------------------------------------------
def _body_raising(make: Callable[[], BaseException]) -> click.Command:
    @click.command()
    def command() -> None:
        def go() -> int:
            raise make()
        run(False, go)
    return command


def _interrupted_import() -> BaseException:
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        try:
            raise ImportError("cannot import name 'x' (interrupted)")  # what a torn import says
        except ImportError as exc:
            return exc


def _source_error_from_system_error() -> BaseException:
    """What the engine made of a C extension that was interrupted: a SourceError (exit 3)."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError("<built-in method> returned a result with an exception set")  # noqa: B904
    except SystemError as exc:
        try:
            raise SourceError(f"SystemError: {exc}", source="files") from exc
        except SourceError as error:
            return error


@pytest.mark.parametrize("make", [KeyboardInterrupt, _interrupted_import,
                                  _source_error_from_system_error],
                         ids=["keyboard-interrupt", "import-error-during-interrupt",
                              "source-error-wrapping-it"])
def test_an_interrupt_in_any_form_exits_130(make: Callable[[], BaseException]) -> None:
    result = CliRunner().invoke(_body_raising(make), [], catch_exceptions=False)
    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stderr.startswith("interrupted; seamless.lock and the store are intact")
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_an_unexpected_error_is_one_message_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMTL_LOCK_DEBUG", raising=False)
    result = CliRunner().invoke(_body_raising(lambda: KeyError("colour")), [],
                                catch_exceptions=False)
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[0] == "error: unexpected KeyError: 'colour'"
    assert lines[1].startswith("  where: ") and "test_failures.py" in lines[1]
    assert lines[2].startswith("  fix:   this is a bug in qmtl-lock") and len(lines) == 3
    monkeypatch.setenv("QMTL_LOCK_DEBUG", "1")
    debug = CliRunner().invoke(_body_raising(lambda: KeyError("colour")), [])
    assert debug.exit_code == 3 and "Traceback" in debug.stderr  # asked for


# -- the console script: exit codes are the command's own -------------------------------------
def test_verify_exit_codes_through_the_console_script(resolved: Project) -> None:
    ok = cli_subprocess(resolved.root, "verify")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("verified 4 snapshot(s)") and ok.stderr == ""
    resolved.object_files()[0].write_bytes(b"not parquet")
    bad = cli_subprocess(resolved.root, "verify", "--json")
    assert bad.returncode == 1, bad.stderr
    assert json.loads(bad.stdout)["ok"] is False
    no_traceback(bad.stderr)


def test_usage_errors_and_help_keep_clicks_codes(tmp_path: Path) -> None:
    assert cli_subprocess(tmp_path, "--version").returncode == 0
    unknown = cli_subprocess(tmp_path, "no-such-command")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
    both = cli_subprocess(tmp_path, "resolve", "--locked", "--frozen")
    assert both.returncode == 2 and "cannot be used together" in both.stderr


# -- Ctrl-C at random moments of a real resolve -----------------------------------------------
def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:  # already gone
        return True


def _resolve_interrupted_after(root: Path, delay: float) -> subprocess.CompletedProcess[str]:
    """A real resolve, sent SIGINT ``delay`` seconds after its command began (pydantic_core
    is loaded by the first thing resolve does, after the SIGINT handler is in place)."""
    env = {**os.environ, "QMTL_LOCK_NOW": NOW}
    env.pop("CI", None)
    proc = subprocess.Popen([sys.executable, "-m", "qmtl_lock.cli", "resolve"], cwd=root,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _loaded(proc.pid, "pydantic_core") and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_at_random_moments_exits_130_with_state_intact(resolved: Project,
                                                              tmp_path: Path) -> None:
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see when the command has started")
    resolved.edit_manifest(*LONGER)
    template = tmp_path / "template"
    shutil.copytree(resolved.root, template)
    old = resolved.lock.read_bytes()
    expect(resolved.run("resolve"), 0)
    new = resolved.lock.read_bytes()  # what a finished resolve writes
    rng = random.Random(20240601)
    outcomes = []
    for i in range(8):
        root = tmp_path / f"run{i}"
        shutil.copytree(template, root)
        delay = rng.uniform(0.0, 0.9)
        proc = _resolve_interrupted_after(root, delay)
        outcomes.append((round(delay, 3), proc.returncode))
        assert proc.returncode in (0, EXIT_INTERRUPTED), (delay, proc.returncode, proc.stderr)
        no_traceback(proc.stderr)
        lock = (root / "seamless.lock").read_bytes()
        if proc.returncode == EXIT_INTERRUPTED:
            assert proc.stderr.strip().splitlines()[-1].startswith("interrupted; ")
            assert lock in (old, new), delay
        else:
            assert lock == new, delay
        # the store still serves the lock, and a rerun resumes to the same result
        rerun = CliRunner().invoke(cli, ["resolve", "-m", str(root / "seamless.yaml")],
                                   catch_exceptions=False)
        assert rerun.exit_code == 0, rerun.output
        assert (root / "seamless.lock").read_bytes() == new
    assert any(code == EXIT_INTERRUPTED for _, code in outcomes), outcomes



# Where Python on its own loses a Ctrl-C: inside an import whose caller guards it broadly (as
# libraries guard optional imports), and inside a finalizer. Each command says "busy" on stdout
# when the moment has come, then works for 0.4 s; it must never reach "finished".
SWALLOWING_IMPORT = {
    "slow_module.py": "import sys, time\n"
                      "print('busy', flush=True)\n"
                      "end = time.monotonic() + 0.4\n"
                      "while time.monotonic() < end:\n"
                      "    pass\n",
    "guarded.py": "try:\n"
                  "    import slow_module\n"
                  "except BaseException:  # what some libraries do around optional imports\n"
                  "    slow_module = None\n",
    "body.py": "def work():\n"
               "    import guarded\n",
}
FINALIZER = {
    "body.py": "import time\n"
               "class Handle:\n"
               "    def __del__(self):\n"
               "        print('busy', flush=True)\n"
               "        end = time.monotonic() + 0.4\n"
               "        while time.monotonic() < end:\n"
               "            pass\n"
               "def work():\n"
               "    handle = Handle()\n"
               "    del handle\n",
}
COMMAND = """\
import click
from qmtl_lock.cli.output import console_main, echo, run

@click.command()
def command() -> None:
    def go() -> int:
        import body
        body.work()
        echo("finished")
        return 0
    run(False, go)

console_main(command)
"""


@pytest.mark.parametrize("modules", [SWALLOWING_IMPORT, FINALIZER],
                         ids=["import-that-swallows", "finalizer"])
def test_a_ctrl_c_python_would_lose_still_stops_the_command(tmp_path: Path,
                                                            modules: dict[str, str]) -> None:
    for name, text in {**modules, "command.py": COMMAND}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "command.py"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == "busy\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, (out, err)
    assert "finished" not in out
    assert err.startswith("interrupted; ") and err.count("\n") == 1, err
