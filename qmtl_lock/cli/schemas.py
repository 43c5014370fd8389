"""``qmtl-lock schemas``: the JSON Schemas of the three file formats."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmtl_lock.cli.output import EXIT_OK, echo, emit_json, run


@click.command("schemas")
@click.option("--write", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write the schemas into this folder instead of printing them.")
def schemas_command(directory: Path | None) -> None:
    """Print (or write) the JSON Schemas of seamless.yaml, seamless.lock and preset catalogs."""
    from qmtl_lock.schema import generate, write

    def go() -> int:
        if directory is not None:
            for path in write(directory):
                echo(f"wrote {path}")
        else:
            emit_json({name: json.loads(text) for name, text in generate().items()})
        return EXIT_OK

    run(False, go)
