"""What resolve prints is what moves (issue 12): a safe normalization such as ``dtype_cast``
(integer volumes cast to float, on every Quandl WIKI row) is counted in the lock, not printed
by each resolve, and ``resolve --update --dry-run`` names only the datasets whose data would move.
"""

from __future__ import annotations

import json

from conftest import EQUITY_ROWS, LATER, MANIFEST, Project, expect

from qmtl_lock.lockfile import read_lock

FOLLOWS_NOW = MANIFEST.replace("start: 2024-01-30\n    end: 2024-02-02",
                               "start: 2024-05-30\n    end: now")


def test_a_safe_normalization_is_counted_in_the_lock_not_printed(project: Project) -> None:
    result = expect(project.run("resolve"), 0)
    assert "dtype_cast" not in result.output
    flags = read_lock(project.lock).datasets["equities"].symbols["AAPL"].conformance_flags
    assert flags["dtype_cast"] == EQUITY_ROWS  # Quandl writes volumes as integers
    again = expect(project.run("resolve"), 0)
    assert again.output == "seamless.lock is up to date\n"


def test_update_dry_run_names_only_what_would_move(project: Project) -> None:
    project.write_manifest(FOLLOWS_NOW)
    expect(project.run("resolve"), 0)
    quiet = expect(project.run("resolve", "--update", "--dry-run"), 0)
    assert quiet.output == ("seamless.lock is up to date\n"
                            "dry run: nothing fetched, seamless.lock not written\n")

    later = expect(project.run("resolve", "--update", "--dry-run", env={"QMTL_LOCK_NOW": LATER}),
                   0)
    moving = [line for line in later.output.splitlines() if not line.startswith("    ")]
    assert [line.split()[:2] for line in moving[:-1]] == [
        ["extended", "crypto/BTCUSDT:"], ["extended", "crypto/ETHUSDT:"]]
    assert "equities" not in later.output  # its fixed end is final: nothing to move
    assert moving[-1] == "dry run: nothing fetched, seamless.lock not written"

    as_json = json.loads(expect(project.run("resolve", "--update", "--dry-run", "--json"),
                                0).output)
    assert {(c["dataset"], c["symbol"], c["action"]) for c in as_json["changes"]} == {
        ("crypto", "BTCUSDT", "unchanged"), ("crypto", "ETHUSDT", "unchanged"),
        ("equities", "AAPL", "unchanged"), ("equities", "MSFT", "unchanged")}


def test_update_of_a_fresh_clone_restores_what_does_not_move(project: Project) -> None:
    """In a fresh clone (no store yet) --update rebuilds the fixed-end datasets' pinned
    snapshots: that is a restore, said as such, not an update."""
    import shutil

    expect(project.run("resolve"), 0)
    shutil.rmtree(project.root / ".seamless")
    plan = expect(project.run("resolve", "--update", "--dry-run"), 0)
    heads = [line.split(":")[0] for line in plan.output.splitlines()
             if not line.startswith("    ")]
    assert heads[:-1] == [f"restored  {name}" for name in (
        "crypto/BTCUSDT", "crypto/ETHUSDT", "equities/AAPL", "equities/MSFT")]
    assert all("snapshot missing from the store; would fetch" in line
               for line in plan.output.splitlines() if line.startswith("restored"))
    before = project.lock.read_bytes()
    run = expect(project.run("resolve", "--update"), 0)
    assert [line.split(":")[0] for line in run.output.splitlines()[:-1]] == heads[:-1]
    assert "snapshot rebuilt in the store" in run.output
    assert project.lock.read_bytes() == before
