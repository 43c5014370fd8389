"""Backfill from a Binance-format archive end to end: resolve, kill and resume, extend, retry.

A real HTTP server on 127.0.0.1 serves the archive in the provider's exact format (monthly and
daily zips with .CHECKSUM files; November and December 2024 in milliseconds, January 2025 in
microseconds). A temporary project declares a user preset whose ``base_url`` points at it, and
every claim is proved by counting what the server served.

Run as a script for the throughput figures of a bigger archive::

    python tests/test_backfill.py --months 12
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Project, expect
from http_server import Reply, Server, serve
from killing import kill_when
from qmtl_engine.ranges import MINUTE_MS, TimeRange, iso, to_ms
from qmtl_engine.store import Store
from test_binance_vision import Archive, build_archive, route_archive

from qmtl_lock import Lock
from qmtl_lock.lockfile import SymbolEntry, read_lock
from qmtl_lock.resolve import PinnedNowClock, ResolveResult, resolve

M = MINUTE_MS
SPAN = TimeRange(to_ms("2024-11-01"), to_ms("2025-01-17"))  # what the server holds
T = "2025-01-15T00:00:00Z"  # `now` of the first resolve: January is the open month
T_PLUS_1 = "2025-01-16T00:00:00Z"
# Two minutes after T the last bars of 14 January are final (stabilization_bars: 2): a fixed
# `end: 2025-01-15` is then complete, where at T it still stops at 23:58.
T_FINAL = "2025-01-15T00:02:00Z"
PID = "ohlcv.local_binance.spot.1m"
UNLIMITED = "{requests_per_second: 10000, burst: 10000}"
NOV = "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-11.zip"
DEC = "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip"
JAN = "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-{:02d}.zip"

CATALOG = """\
version: 1
data_presets:
  {pid}:
    kind: ohlcv
    interval_ms: 60000
    stabilization_bars: 2
    contract: {{name: ohlcv, version: v1}}
    calendar: 24x7
    partition: {partition}
    source:
      name: binance_vision
      options:
        market: spot
        base_url: "{url}"
        rate_limit: {rate_limit}
        backoff_initial_ms: 1
        backoff_max_ms: 20
        timeout_s: {timeout}
    sla_preset: baseline
    conformance_preset: {conformance}
"""

MANIFEST = """\
version: 1
presets: [presets.yaml]
datasets:
  btc:
    preset: {pid}
    symbols: [BTCUSDT]
    start: {start}
    end: {end}
    contract_version: v1
"""


def setup_project(root: Path, url: str, *, start: str = "2024-11-01", end: str = "now",
                  partition: str = "month", timeout: float = 5.0,
                  conformance: str = "strict-blocking",
                  rate_limit: str = UNLIMITED) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "presets.yaml").write_text(CATALOG.format(
        pid=PID, url=url, partition=partition, timeout=timeout, conformance=conformance,
        rate_limit=rate_limit))
    manifest = root / "seamless.yaml"
    manifest.write_text(MANIFEST.format(pid=PID, start=start, end=end))
    return manifest


def resolve_at(manifest: Path, now: str, *, update: bool = False) -> ResolveResult:
    return resolve(manifest, clock=PinnedNowClock(to_ms(now)), update=update)


def entry(root: Path) -> SymbolEntry:
    return read_lock(root / "seamless.lock").datasets["btc"].symbols["BTCUSDT"]


def nonzero(flags: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in flags.items() if v}


def say(record_property: Callable[[str, object], None], capsys: pytest.CaptureFixture[str],
        key: str, value: float, text: str) -> None:
    """Report a measurement whatever the capture mode: junit property plus the terminal."""
    record_property(key, value)
    with capsys.disabled():
        print(f"\n[binance_vision backfill] {text}")


@pytest.fixture(scope="module")
def archive() -> Archive:
    return build_archive(["BTCUSDT"], SPAN, M)


@pytest.fixture
def server(archive: Archive) -> Iterator[Server]:
    for srv in serve():
        route_archive(srv, archive)
        yield srv


def zips(server: Server, part: str = "") -> list[str]:
    """The archives fetched, by name (windows run several at once, so in any order)."""
    return sorted(r for r in server.requests if r.endswith(".zip") and part in r)


# -- full resolve ----------------------------------------------------------------------------------
def test_full_resolve_fetches_monthly_then_daily_and_reports_throughput(
        project: Project, server: Server, record_property: Callable[[str, object], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    manifest = setup_project(project.root, server.url, end="2025-01-15")
    started = time.perf_counter()
    resolve_at(manifest, T_FINAL)
    elapsed = time.perf_counter() - started
    e = entry(project.root)
    assert e.rows == (30 + 31 + 14) * 1440
    assert e.partitions == 3
    assert nonzero(e.conformance_flags) == {}  # both timestamp units, no guessing
    assert zips(server, "/monthly/") == [
        "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-11.zip",
        "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip"]
    assert len(zips(server, "/daily/")) == 14  # 1-14 January: not a whole month
    assert server.count() == 2 * (2 + 14)  # and a checksum for each
    rows = e.rows
    say(record_property, capsys, "rows_per_s", rows / elapsed,
        f"full resolve: {rows} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s "
        f"({server.count()} requests)")
    table = Lock.open(project.lock).load("btc", "BTCUSDT")
    assert table.column_names == ["ts", "open", "high", "low", "close", "volume", "trades",
                                  "quote_volume"]


# -- incremental extension -------------------------------------------------------------------------
def test_update_by_one_day_refetches_only_the_open_partition(
        project: Project, server: Server, record_property: Callable[[str, object], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    manifest = setup_project(project.root, server.url)  # end: now
    started = time.perf_counter()
    resolve_at(manifest, T)
    full_s = time.perf_counter() - started
    full_requests = server.count()
    before = entry(project.root)
    assert before.coverage_bounds[1] == to_ms("2025-01-14T23:58")

    # a day later, a plain resolve keeps the pin: nothing is read
    server.requests.clear()
    result = expect(project.run("resolve", env={"QMTL_LOCK_NOW": T_PLUS_1}), 0)
    assert "up to date" in result.output and server.count() == 0

    # resolve --update moves the end and fetches only the open month's days
    started = time.perf_counter()
    result = expect(project.run("resolve", "--update", "--json",
                                env={"QMTL_LOCK_NOW": T_PLUS_1}), 0)
    update_s = time.perf_counter() - started
    [change] = json.loads(result.stdout)["changes"]
    assert change["action"] == "extended"
    assert change["detail"].endswith("fetched 1, reused 2 partitions"), change
    assert zips(server, "/monthly/") == []
    assert zips(server) == [JAN.format(d) for d in range(1, 16)]
    assert server.count() == 30

    after = entry(project.root)
    assert after.coverage_bounds == (to_ms("2024-11-01"),
                                     to_ms("2025-01-15T23:58"))
    assert after.rows == before.rows + 1440
    store = Store(str(project.store))
    old = store.get_snapshot(before.dataset_fingerprint).partitions
    new = store.get_snapshot(after.dataset_fingerprint).partitions
    assert [(p.start, p.end, p.digest) for p in new[:2]] == [
        (p.start, p.end, p.digest) for p in old[:2]]  # closed months: same objects, not rehashed
    assert (new[2].start, new[2].end) == (to_ms("2025-01-01"), to_ms("2025-01-15T23:58"))
    assert new[2].digest != old[2].digest
    say(record_property, capsys, "update_to_full_ratio", update_s / full_s,
        f"one-day update: {update_s:.2f} s vs full {full_s:.2f} s (ratio {update_s / full_s:.2f}); "
        f"requests {server.count()} vs {full_requests}")

    # the extended snapshot is what a fresh resolve at T+1 produces
    clean = setup_project(project.root.parent / "clean", server.url)
    resolve_at(clean, T_PLUS_1)
    assert entry(clean.parent).dataset_fingerprint == after.dataset_fingerprint


# -- kill and resume -------------------------------------------------------------------------------
DAYS = 12  # 2025-01-01 .. 2025-01-12, one partition per day


def _windows_done(store: Path) -> list[str]:
    """The finished windows of the one job in the store: ``jobs/<key>/<start>-<end>.json``."""
    return sorted(p.stem for p in (store / "jobs").glob("*/*.json")
                  if not p.name.startswith(".tmp-"))  # (pathlib's glob matches dot files)


def _done(store: Path) -> int:
    return len(_windows_done(store))


def test_kill_and_resume_fetches_only_unfinished_partitions(project: Project, server: Server,
                                                            archive: Archive) -> None:
    route_archive(server, archive, delay_s=0.06)  # slow enough to be killed midway
    manifest = setup_project(project.root, server.url, start="2025-01-01", end="2025-01-13",
                             partition="day")
    env = {**os.environ, "QMTL_LOCK_NOW": T}
    env.pop("CI", None)
    kill_when([sys.executable, "-m", "qmtl_lock.cli", "resolve"], cwd=project.root, env=env,
              ready=lambda: _done(project.store) >= 3)
    assert not project.lock.exists()
    done = _windows_done(project.store)
    finished_days = sorted(iso(int(k.split("-")[0]))[:10] for k in done)
    assert 3 <= len(finished_days) < DAYS
    served_before = zips(server)
    assert all(any(d in r for r in served_before) for d in finished_days)

    server.requests.clear()
    route_archive(server, archive)  # full speed for the rerun
    resolve_at(manifest, T)
    rerun = zips(server)
    assert len(rerun) == DAYS - len(finished_days)
    assert not [r for r in rerun if any(d in r for d in finished_days)]
    assert server.count() == 2 * (DAYS - len(finished_days))
    e = entry(project.root)
    assert e.partitions == DAYS and e.rows == DAYS * 1440
    assert not [p for p in (project.store / "jobs").rglob("*") if p.is_file()]

    clean = setup_project(project.root.parent / "clean", server.url, start="2025-01-01",
                          end="2025-01-13", partition="day")
    resolve_at(clean, T)
    assert entry(clean.parent).dataset_fingerprint == e.dataset_fingerprint


# -- retries and failures through a resolve --------------------------------------------------------
def test_transient_failures_are_retried_through_a_full_resolve(project: Project,
                                                               server: Server,
                                                               archive: Archive) -> None:
    clean = setup_project(project.root.parent / "clean", server.url, end="2025-01-15")
    resolve_at(clean, T)
    expected = entry(clean.parent).dataset_fingerprint

    files = archive.files
    server.route(NOV, Reply(b"oops", 500), Reply(b"bad gateway", 502), Reply(files[NOV]))
    server.route(DEC + ".CHECKSUM", Reply(b"slow down", 429, {"Retry-After": "0.05"}),
                 Reply(files[DEC + ".CHECKSUM"]))
    body = files[JAN.format(3)]
    server.route(JAN.format(3), Reply(reset=True), Reply(body, truncate_to=len(body) // 2),
                 Reply(body))
    slow = files[JAN.format(5)]
    server.route(JAN.format(5), Reply(slow, delay_s=1.0), Reply(slow))  # past timeout_s
    short = files[JAN.format(7)]
    server.route(JAN.format(7), Reply(short[:100]), Reply(short))  # a zip cut short, same length
    server.requests.clear()
    manifest = setup_project(project.root, server.url, end="2025-01-15", timeout=0.4)
    resolve_at(manifest, T)
    assert entry(project.root).dataset_fingerprint == expected
    assert server.count(NOV) == 3 + 1  # 2 failures, then the zip; and its checksum
    assert server.count(DEC) == 2 + 1  # a 429 on the checksum, then it; and the zip
    assert server.count(JAN.format(3)) == 3 + 1
    assert server.count(JAN.format(5)) == 2 + 1
    assert server.count(JAN.format(7)) == 2 + 1
    assert server.count() == 2 * 16 + 2 + 1 + 2 + 1 + 1


def test_checksum_mismatch_fails_the_resolve_fast(project: Project, server: Server) -> None:
    setup_project(project.root, server.url, end="2025-01-15")
    server.route(DEC + ".CHECKSUM", Reply(b"f" * 64 + b"  BTCUSDT-1m-2024-12.zip\n"))
    result = expect(project.run("resolve", env={"QMTL_LOCK_NOW": T}), 3)
    out = result.output
    assert "checksum mismatch for BTCUSDT-1m-2024-12.zip" in out
    assert "dataset btc" in out and "symbol BTCUSDT" in out
    assert "range [2024-12-01T00:00:00Z, 2025-01-01T00:00:00Z)" in out
    assert f"url {server.url}{DEC}" in out
    assert server.count(DEC) == 2  # the zip once, no retry
    assert not project.lock.exists()


def test_exhausted_retries_fail_the_resolve_and_a_rerun_resumes(project: Project,
                                                                server: Server,
                                                                archive: Archive) -> None:
    setup_project(project.root, server.url, end="2025-01-15")
    server.route(JAN.format(9), Reply(b"down", 503))
    result = expect(project.run("resolve", env={"QMTL_LOCK_NOW": T}), 3)
    assert "gave up after 5 attempts: HTTP 503" in result.output
    assert server.count(JAN.format(9)) == 5 + 1
    server.route(JAN.format(9), Reply(archive.files[JAN.format(9)]))
    server.requests.clear()
    result = expect(project.run("resolve", "--json", env={"QMTL_LOCK_NOW": T}), 0)
    [change] = json.loads(result.stdout)["changes"]
    assert change["detail"].endswith("fetched 1, reused 2 partitions"), change
    assert zips(server, "/monthly/") == []  # the closed months were checkpointed


@pytest.mark.parametrize(("conformance", "code"), [("permissive-dev", 0), ("strict-blocking", 3)])
def test_missing_day_is_a_gap_not_a_crash(project: Project, server: Server, conformance: str,
                                          code: int) -> None:
    setup_project(project.root, server.url, end="2025-01-15", conformance=conformance)
    server.route(JAN.format(4), Reply(b"not found", 404))
    server.route(JAN.format(4) + ".CHECKSUM", Reply(b"not found", 404))
    result = expect(project.run("resolve", env={"QMTL_LOCK_NOW": T_FINAL}), code)
    if code == 0:
        e = entry(project.root)
        assert nonzero(e.conformance_flags) == {"gap_bars": 1440}
        assert e.rows == (30 + 31 + 13) * 1440
    else:
        assert "conformance refused the data: gap_bars=1440" in result.output


# -- the benchmark behind the closing note ---------------------------------------------------------
def benchmark(months: int, *, tmp: Path, repeat: int = 3,
              rate_limit: str | None = None) -> dict[str, float]:
    """Resolve ``months`` closed months plus 14 open days, then update by one day; medians."""
    import statistics

    year, month = divmod(2025 * 12 - months, 12)
    start = f"{year:04d}-{month + 1:02d}-01"
    t0 = time.perf_counter()
    arch = build_archive(["BTCUSDT"], TimeRange(to_ms(start), to_ms("2025-01-17")), M)
    out: dict[str, float] = {"build_s": time.perf_counter() - t0}
    runs: dict[str, list[float]] = {"full_s": [], "update_s": []}
    for srv in serve():
        route_archive(srv, arch)
        for i in range(repeat):
            root = tmp / f"run{i}"
            manifest = setup_project(root, srv.url, start=start,
                                     rate_limit=rate_limit or UNLIMITED)
            srv.requests.clear()
            t0 = time.perf_counter()
            resolve_at(manifest, T)
            runs["full_s"].append(time.perf_counter() - t0)
            out["full_rows"] = float(entry(root).rows)
            out["full_requests"] = float(srv.count())
            srv.requests.clear()
            t0 = time.perf_counter()
            resolve_at(manifest, T_PLUS_1, update=True)
            runs["update_s"].append(time.perf_counter() - t0)
            snap = Store(str(root / ".seamless" / "store")).get_snapshot(
                entry(root).dataset_fingerprint)
            out["update_rows"] = float(snap.partitions[-1].rows)
            out["update_requests"] = float(srv.count())
    out.update({k: statistics.median(v) for k, v in runs.items()})
    out["rows_per_s"] = out["full_rows"] / out["full_s"]
    out["ratio"] = out["update_s"] / out["full_s"]
    return out


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--months", type=int, default=12, help="closed months before 2025-01")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--default-rate-limit", action="store_true",
                        help="use the source's default rate-limit profile, not an unlimited one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = benchmark(args.months, tmp=Path(tmp), repeat=args.repeat,
                      rate_limit="null" if args.default_rate_limit else None)
    print(f"archive: {args.months} closed months + 16 days of 1m spot bars on 127.0.0.1 "
          f"(built in {r['build_s']:.1f} s); medians of {args.repeat} runs")
    print(f"full resolve:   {r['full_rows']:.0f} rows in {r['full_s']:.3f} s = "
          f"{r['rows_per_s']:,.0f} rows/s, {r['full_requests']:.0f} requests")
    print(f"one-day update: {r['update_rows']:.0f} rows re-fetched in {r['update_s']:.3f} s, "
          f"{r['update_requests']:.0f} requests; update/full time = {r['ratio']:.3f}")


if __name__ == "__main__":
    main()


def test_end_now_stops_where_the_archive_does() -> None:
    """Binance publishes a day's file the next day: `end: now` must not ask for today."""
    from qmtl_engine.materialize import closed_before, coverage_end
    from qmtl_engine.presets import load_registry
    from qmtl_engine.ranges import to_ms

    preset = load_registry().get("ohlcv.binance.spot.1m")
    now = to_ms("2025-03-10T15:42:10Z")
    assert closed_before(preset, now) == to_ms("2025-03-10T15:40:00Z")
    assert coverage_end(preset, now) == to_ms("2025-03-10T00:00:00Z")
    synthetic = load_registry().get("ohlcv.synthetic.crypto.1m")
    assert coverage_end(synthetic, now) == closed_before(synthetic, now)
