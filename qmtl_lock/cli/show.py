"""``qmtl-lock show``: what is locked, and the gaps of one dataset."""

from __future__ import annotations

from pathlib import Path

import click
from qmtl_engine import QmtlLockError

from qmtl_lock.cli.output import (
    EXIT_OK,
    Files,
    echo,
    emit_json,
    json_option,
    manifest_option,
    run,
)


@click.command("show")
@click.argument("dataset", required=False)
@manifest_option
@click.option("--gaps", is_flag=True,
              help="List the missing bars of DATASET as ranges (reads the locked data).")
@json_option
def show_command(dataset: str | None, manifest: Path, gaps: bool, as_json: bool) -> None:
    """Show what is locked: coverage, rows, fingerprint, flags, expiry."""
    from qmtl_lock.manifest import LOCK_NAME
    from qmtl_lock.show import format_gaps, format_table, gap_ranges, show_rows

    def go() -> int:
        if gaps:
            if dataset is None:
                raise QmtlLockError("--gaps needs a DATASET",
                                    fix="run `qmtl-lock show --gaps DATASET`")
            found = gap_ranges(manifest, dataset)
            if as_json:
                emit_json(found)
            else:
                echo(format_gaps(dataset, found))
            return EXIT_OK
        rows = show_rows(manifest.with_name(LOCK_NAME), dataset)
        if as_json:
            emit_json(rows)
        else:
            echo(format_table(rows))
        return EXIT_OK

    run(as_json, go, files=Files(manifest))
