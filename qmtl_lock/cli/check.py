"""``qmtl-lock check``: the lock against the manifest and presets, reading no data.

Meant for pre-commit hooks and CI, so this module and what the command imports stay light.
"""

from __future__ import annotations

from pathlib import Path

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


@click.command("check")
@manifest_option
@click.option("--strict", is_flag=True, help="Also fail on SLA violations recorded in the lock.")
@json_option
def check_command(manifest: Path, strict: bool, as_json: bool) -> None:
    """Check that seamless.lock matches seamless.yaml and the presets (reads no data)."""
    from qmtl_lock.check import check

    def go() -> int:
        result = check(manifest, strict=strict)
        if as_json:
            emit_json({"ok": not result, "drift": [d.to_dict() for d in result.drifts]})
        elif result:
            echo(f"{result.lock} is out of date with {result.manifest}:")
            for d in result.drifts:
                echo(f"  {d.line()}")
            for fix in sorted({d.fix for d in result.drifts}):
                echo(f"fix: {fix}")
        else:
            echo(f"{result.lock} is up to date")
        return EXIT_DRIFT if result else EXIT_OK

    run(as_json, go, files=Files(manifest))
