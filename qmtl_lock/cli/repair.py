"""``qmtl-lock repair``: put back in the store what verify finds corrupted or missing.

Exit codes: 0 repaired (or nothing to repair); 1 something could not be repaired because the
source now gives other data, or the lock or seamless.yaml is at fault; 3 a source (or
conformance, an SLA, the store) failed, which wins over 1 since running again may then help;
2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from qmtl_lock.cli.output import (
    EXIT_DRIFT,
    EXIT_MATERIALIZE,
    EXIT_OK,
    emit_json,
    json_option,
    manifest_option,
    run,
)

if TYPE_CHECKING:
    from qmtl_lock.repair import RepairResult, SymbolRepair

_HEADLINE = {
    "repaired": "repaired",
    "would-repair": "would repair",
    "source-changed": "NOT repaired: the source now gives other data",
    "failed": "NOT repaired: materialization failed",
    "not-repairable": "NOT repaired",
}


@click.command("repair")
@click.argument("datasets", nargs=-1)
@manifest_option
@click.option("--dry-run", is_flag=True,
              help="Say what would be moved aside and fetched; move and fetch nothing.")
@json_option
def repair_command(datasets: tuple[str, ...], manifest: Path, dry_run: bool,
                   as_json: bool) -> None:
    """Move corrupted store files aside and fetch again only the partitions they held."""
    from qmtl_lock.repair import repair

    def go() -> int:
        result = repair(manifest, datasets=datasets, dry_run=dry_run)
        if as_json:
            emit_json({"ok": _exit_code(result) == EXIT_OK, "dry_run": dry_run,
                       "checked": result.checked,
                       "repairs": [r.to_dict() for r in result.repairs]})
        else:
            _print(result)
        return _exit_code(result)

    run(as_json, go)


def _exit_code(result: RepairResult) -> int:
    if result.count("failed"):
        return EXIT_MATERIALIZE
    if result.count("source-changed", "not-repairable"):
        return EXIT_DRIFT
    return EXIT_OK


def _print(result: RepairResult) -> None:
    if not result.repairs:
        click.echo(f"verified {result.checked} snapshot(s): nothing to repair")
        return
    for r in result.repairs:
        _print_one(r)
    done, total = result.count("repaired", "would-repair"), len(result.repairs)
    if result.dry_run:
        click.echo(f"dry run: {done} of {total} damaged snapshot(s) can be repaired; nothing was "
                   "moved aside or fetched")
    elif done == total:
        click.echo(f"repaired {total} snapshot(s): `qmtl-lock verify` passes for them")
    else:
        click.echo(f"repaired {done} of {total} damaged snapshot(s); see the fix above for the "
                   "others")


def _print_one(r: SymbolRepair) -> None:
    click.echo(f"{r.dataset}/{r.symbol}: {_HEADLINE[r.outcome]}")
    for p in r.problems:
        click.echo(f"  found:       {'partition ' + p.partition + ': ' if p.partition else ''}"
                   f"{p.detail}")
    for src, dest in r.quarantined:
        click.echo(f"  quarantined: {src} -> {dest}" if dest else
                   f"  quarantine:  {src} (would be moved aside)")
    if r.outcome != "not-repairable":
        # What was planned is what was fetched, unless the fetch failed or nothing ran
        verb = "fetched:    " if r.outcome in ("repaired", "source-changed") else "to fetch:   "
        names = ", ".join(r.fetched) or "nothing (every partition is still in the store)"
        stopped = "; stopped by the error below" if r.outcome == "failed" else ""
        click.echo(f"  {verb} {names} ({len(r.fetched)} of {r.partitions} partitions{stopped})")
    if r.detail:
        click.echo(f"  result:      {r.detail}")
    if r.fix:
        click.echo(f"  fix:         {r.fix}")
