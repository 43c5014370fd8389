"""``qmtl-lock verify``: re-read the store and re-hash it against the lock."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from qmtl_lock.cli.output import (
    EXIT_DRIFT,
    EXIT_OK,
    Files,
    echo,
    emit_json,
    json_option,
    manifest_option,
    run,
)

if TYPE_CHECKING:
    from qmtl_lock.verify import Problem

# Problems that `qmtl-lock repair` does not fix: the store is fine, the lock is not.
_FIX = {
    "lock-mismatch": "restore seamless.lock from git or run `qmtl-lock resolve`",
}


def fixes(problems: list[Problem], manifest: Path) -> list[str]:
    """What to run for ``problems``: the repair command for damaged or missing store data (one
    command naming each dataset concerned), and the fix of each other kind of problem."""
    from qmtl_lock.repair import REPAIRABLE, repair_command

    damaged = sorted({p.dataset for p in problems if p.kind in REPAIRABLE})
    out = []
    if damaged:
        out.append(f"run `{repair_command(damaged, manifest)}`: it moves corrupted files aside "
                   "and fetches again only the partitions that are bad or missing (if the "
                   "source now gives other data, it says so and replaces nothing)")
    return out + sorted({_FIX.get(p.kind, "") for p in problems} - {""})


@click.command("verify")
@click.argument("datasets", nargs=-1)
@manifest_option
@json_option
def verify_command(datasets: tuple[str, ...], manifest: Path, as_json: bool) -> None:
    """Re-read the store and re-hash it against the lock."""
    from qmtl_lock.verify import verify

    def go() -> int:
        result = verify(manifest, datasets=datasets)
        if as_json:
            data = {"ok": not result, "checked": result.checked, "rows": result.rows,
                    "problems": [p.to_dict() for p in result.problems]}
            if result:
                data["fix"] = fixes(result.problems, manifest)
            emit_json(data)
        elif result:
            echo(f"verification failed for {len(result.problems)} problem(s):")
            for p in result.problems:
                echo(f"  {p.line()}")
            for fix in fixes(result.problems, manifest):
                echo(f"fix: {fix}")
        else:
            echo(f"verified {result.checked} snapshot(s), {result.rows} rows: all match "
                       "the lock")
        return EXIT_DRIFT if result else EXIT_OK

    run(as_json, go, files=Files(manifest))
