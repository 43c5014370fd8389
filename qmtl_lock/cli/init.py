"""``qmtl-lock init``: write a starter seamless.yaml."""

from __future__ import annotations

from pathlib import Path

import click

from qmtl_lock.cli.output import EXIT_OK, echo, run


@click.command("init")
@click.option("--dir", "directory", default=".", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write seamless.yaml.")
@click.option("--force", is_flag=True, help="Overwrite an existing seamless.yaml.")
def init_command(directory: Path, force: bool) -> None:
    """Write a starter seamless.yaml and git-ignore the store."""
    from qmtl_lock.init import init

    def go() -> int:
        for path in init(directory, force=force):
            echo(f"wrote {path}")
        echo("next: qmtl-lock resolve")
        return EXIT_OK

    run(False, go)
