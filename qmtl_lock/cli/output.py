"""What every command shares: exit codes, JSON output, one-message errors, the common options.

This module alone maps errors to exit codes (DESIGN §10): 0 ok; 1 drift or verification failure
(or locks that differ, or a merge with conflicts); 2 bad input; 3 materialization failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from qmtl_engine import QmtlLockError

EXIT_OK, EXIT_DRIFT, EXIT_INPUT, EXIT_MATERIALIZE = 0, 1, 2, 3

def _nearest_manifest(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    """Without ``--manifest``, the nearest seamless.yaml here or in a parent folder."""
    if value is not None:
        return value
    from qmtl_lock.inputs import MANIFEST_NAME, find_manifest  # light: no pydantic models

    return find_manifest() or Path(MANIFEST_NAME)


manifest_option = click.option(
    "--manifest", "-m", "manifest", default=None, show_default="the nearest seamless.yaml here "
    "or in a parent folder", type=click.Path(dir_okay=False, path_type=Path),
    callback=_nearest_manifest, help="Path to seamless.yaml.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def fail(exc: QmtlLockError, as_json: bool) -> NoReturn:
    """Print one error (what, where, fix) and exit with its code."""
    if as_json:
        emit_json({"ok": False, **exc.to_dict()})
    else:
        click.echo(f"error: {exc.render()}", err=True)
    sys.exit(exc.exit_code)


def run(as_json: bool, fn: Callable[[], int]) -> NoReturn:
    """Run a command's body and exit with the code it returns, or with its error's."""
    try:
        code = fn()
    except QmtlLockError as exc:
        fail(exc, as_json)
    sys.exit(code)
