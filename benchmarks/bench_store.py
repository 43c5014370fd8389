"""A store on object storage and the executors (issue 10), against a local single-process run.

1. Store requests per fetched partition: on S3, counted at the server side of a forwarding proxy
   in front of moto's real S3 server on 127.0.0.1; on a local disk, counted as the file-system
   calls Python makes under the store (``sys.addaudithook``: open, link, rename, remove, list).
2. ``--symbols`` symbols x one year of 1-minute bars (default 20): a local single-process
   resolve, an S3 single-process one and an S3 one on a Dask ``LocalCluster`` of two worker
   processes, each as a ratio to the local single-process run, all measured in this run.
3. With ``--latency-ms`` (default 24) added to every store request, ``--slow-symbols`` symbols
   (default 5) x one year: one thread, ``--jobs 4``, and Dask, as ratios to one thread.

Every resolve runs in its own process, as a user runs it (``qmtl-lock resolve``), against a
fresh bucket or folder. The S3 and Dask parts need the ``[s3]`` and ``[dask]`` extras and moto's
server (the ``test`` extra); without them they are skipped with a note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import ENV, NOW, PYTHON, Report, parser, secs, step

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the S3 endpoint of the tests: one definition

MANIFEST = """\
version: 1
store: {store}
datasets:
  bench:
    preset: ohlcv.synthetic.crypto.1m
    symbols: [{symbols}]
    start: 2025-01-01
    end: 2026-01-01
    contract_version: v1
"""

# Counts the file-system calls a local resolve makes under its store (run in the child).
COUNTING = """\
import sys, os
root = os.path.realpath(sys.argv[1]); counts = {}
def hook(event, args):
    if event in ("open", "os.link", "os.rename", "os.replace", "os.remove", "os.listdir",
                 "os.scandir", "os.mkdir", "shutil.rmtree"):
        path = args[0] if args else None
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.fsdecode(path)
            if os.path.realpath(path).startswith(root):
                counts[event] = counts.get(event, 0) + 1
sys.addaudithook(hook)
def report():
    import json
    sys.stderr.write("COUNTS " + json.dumps(counts) + "\\n")
    sys.stderr.flush()
exit_now = os._exit  # the command line leaves with os._exit, past any finally
def leave(code):
    report()
    exit_now(code)
os._exit = leave
from qmtl_lock.cli import main
sys.argv = ["qmtl-lock", "resolve"] + sys.argv[2:]
try:
    main()
finally:
    report()
"""


def symbols(n: int) -> list[str]:
    return [f"S{i:02d}USDT" for i in range(n)]


def project(root: Path, store: str, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "seamless.yaml").write_text(MANIFEST.format(store=store, symbols=", ".join(names)),
                                        encoding="utf-8")
    return root


def resolve(root: Path, *args: str, env: dict[str, str] | None = None,
            count_local: bool = False) -> tuple[float, dict[str, int]]:
    """Seconds of one ``qmtl-lock resolve`` process, and the local store calls it made."""
    full_env = {**ENV, **(env or {})}
    if count_local:
        cmd = [PYTHON, "-c", COUNTING, str(root / ".seamless" / "store"), *args]
    else:
        cmd = [PYTHON, "-m", "qmtl_lock.cli", "resolve", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=full_env, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"resolve failed ({proc.returncode}): {proc.stderr[-2000:]}")
    counts: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("COUNTS "):
            counts = json.loads(line[len("COUNTS "):])
    return seconds, counts


def fetched_partitions(root: Path) -> int:
    text = (root / "seamless.lock").read_text(encoding="utf-8")
    return sum(int(line.split(":")[1]) for line in text.splitlines()
               if line.strip().startswith("partitions:"))


class S3:
    """moto's server, a proxy per run (counting, and adding latency when asked)."""

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer
        from s3_server import S3Endpoint

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = S3Endpoint(f"http://{host}:{port}", self.server)

    def bucket(self, delay_s: float = 0.0) -> tuple[str, Any, dict[str, str]]:
        from s3_server import KEY_ID, REGION, SECRET, S3Proxy

        name = f"bench-{uuid.uuid4().hex[:10]}"
        self.endpoint.client().create_bucket(Bucket=name)
        proxy = S3Proxy(self.endpoint.url.removeprefix("http://"), delay_s=delay_s)
        env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": proxy.url,
               "AWS_EC2_METADATA_DISABLED": "true"}
        return f"s3://{name}/store", proxy, env

    def stop(self) -> None:
        self.server.stop()


def has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--slow-symbols", type=int, default=5)
    p.add_argument("--latency-ms", type=float, default=24.0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    report = Report("store on object storage, and executors (issue 10)")
    s3_ok, dask_ok = has("s3fs", "moto", "boto3"), has("dask", "distributed")
    dask_args = ["--executor", "dask", "--workers", str(args.workers)]
    names = symbols(args.symbols)
    with tempfile.TemporaryDirectory(prefix="qmtl-bench-store-") as tmp:
        base = Path(tmp)
        step(f"local, one process: {len(names)} symbols x 1 year")
        local = project(base / "local", ".seamless/store", names)
        t_local, calls = resolve(local, count_local=True)
        parts = fetched_partitions(local)
        report.row("local store calls per fetched partition", f"{sum(calls.values()) / parts:.2f}",
                   f"{parts} partitions", json.dumps(calls, sort_keys=True))
        report.row("resolve, local store, one process", secs(t_local), "the reference", "1.00x")
        if not s3_ok:
            report.note("S3 parts skipped: pip install 'qmtl-lock[s3]' moto[server] boto3")
        else:
            s3 = S3()
            try:
                step("S3, one process")
                url, proxy, env = s3.bucket()
                remote = project(base / "s3", url, names)
                t_s3, _ = resolve(remote, env=env)
                report.row("S3 requests per fetched partition (at the server)",
                           f"{proxy.total() / parts:.2f}", f"{parts} partitions",
                           json.dumps(dict(sorted(proxy.counts.items()))))
                report.row("resolve, S3 store, one process", secs(t_s3),
                           f"local {secs(t_local)}", f"{t_s3 / t_local:.2f}x")
                proxy.close()
                if dask_ok:
                    step(f"S3, Dask with {args.workers} worker processes")
                    url, proxy, env = s3.bucket()
                    remote = project(base / "s3-dask", url, names)
                    t_dask, _ = resolve(remote, *dask_args, env=env)
                    report.row(f"resolve, S3 store, Dask {args.workers} workers", secs(t_dask),
                               f"local {secs(t_local)}", f"{t_dask / t_local:.2f}x")
                    proxy.close()
                slow(report, s3, base, symbols(args.slow_symbols), args.latency_ms / 1000,
                     dask_args if dask_ok else None)
            finally:
                s3.stop()
        if not dask_ok:
            report.note("Dask parts skipped: pip install 'qmtl-lock[dask]'")
    report.finish(args.json)


def slow(report: Report, s3: S3, base: Path, names: list[str], delay_s: float,
         dask_args: list[str] | None) -> None:
    runs: dict[str, list[str]] = {"one thread": ["--jobs", "1"], "--jobs 4": ["--jobs", "4"]}
    if dask_args is not None:
        runs["Dask"] = dask_args
    times: dict[str, float] = {}
    for label, extra in runs.items():
        step(f"S3 + {delay_s * 1000:.0f} ms per request, {len(names)} symbols: {label}")
        url, proxy, env = s3.bucket(delay_s)
        root = project(base / f"slow-{len(times)}", url, names)
        times[label], _ = resolve(root, *extra, env=env)
        proxy.close()
    first = times["one thread"]
    for label, t in times.items():
        report.row(f"slow store ({delay_s * 1000:.0f} ms/request), {len(names)} symbols, "
                   f"{label}", secs(t), f"one thread {secs(first)}", f"{t / first:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("QMTL_LOCK_NOW", NOW)
    main()
