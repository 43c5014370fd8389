"""``qmtl-lock verify``: re-read the store and re-hash it against the lock."""

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

_FIX = {
    "object-missing": "run `qmtl-lock resolve --frozen` to rebuild the pinned data in the store",
    "object-corrupted": "delete each corrupted file named above, then run "
                        "`qmtl-lock resolve --frozen` to fetch it again",
    "fingerprint-mismatch": "the store or the lock was altered; restore seamless.lock from git, "
                            "then run `qmtl-lock resolve --frozen`",
    "lock-mismatch": "restore seamless.lock from git or run `qmtl-lock resolve`",
    "snapshot-missing": "run `qmtl-lock resolve --frozen` to rebuild the pinned data; if it "
                        "reports that the source gives other data, restore seamless.lock from git",
}


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
            emit_json({"ok": not result, "checked": result.checked, "rows": result.rows,
                       "problems": [p.to_dict() for p in result.problems]})
        elif result:
            echo(f"verification failed for {len(result.problems)} problem(s):")
            for p in result.problems:
                echo(f"  {p.line()}")
            for fix in sorted({_FIX.get(p.kind, "") for p in result.problems} - {""}):
                echo(f"fix: {fix}")
        else:
            echo(f"verified {result.checked} snapshot(s), {result.rows} rows: all match "
                       "the lock")
        return EXIT_DRIFT if result else EXIT_OK

    run(as_json, go, files=Files(manifest))
