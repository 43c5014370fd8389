"""``qmtl-lock diff``: what changed between two locks, down to the changed partitions.

Exit 0 when they are the same, 1 when they differ (like ``git diff --exit-code``), 2 when a lock
cannot be read or git cannot give one.
"""

from __future__ import annotations

from pathlib import Path

import click
from qmtl_engine import InputError

from qmtl_lock.cli.output import EXIT_DRIFT, EXIT_OK, Files, echo, emit_json, json_option, run

LOCK_NAME = "seamless.lock"  # the manifest's lock; named here to keep the pydantic models unloaded


@click.command("diff")
@click.argument("old", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--git", "rev", metavar="REV",
              help="Use the lock at git revision REV as OLD (then the one argument is NEW).")
@click.option("--manifest", "-m", "manifest", default="seamless.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Path to seamless.yaml: its lock is the default NEW, its store gives the "
              "partitions.")
@click.option("--store", "store_url", metavar="URL",
              help="Store with the snapshot manifests (default: the store of seamless.yaml).")
@json_option
def diff_command(old: Path | None, new: Path | None, rev: str | None, manifest: Path,
                 store_url: str | None, as_json: bool) -> None:
    """Show what changed between two locks, down to the changed partitions.

    \b
    qmtl-lock diff                 HEAD's seamless.lock vs the working tree
    qmtl-lock diff --git main      the lock on main vs the working tree
    qmtl-lock diff OLD [NEW]       two lock files (NEW defaults to the working tree)

    Exit 0 when they are the same, 1 when they differ (like `git diff --exit-code`), 2 when a
    lock cannot be read.
    """

    def go() -> int:
        from qmtl_lock.diff import diff, render_text
        from qmtl_lock.diff.load import lock_at_revision, store_for
        from qmtl_lock.lockfile import read_lock

        if rev is not None and new is not None:
            raise InputError("--git REV compares REV with one lock file; got two",
                             fix="use `qmtl-lock diff --git REV [NEW]` or `qmtl-lock diff OLD NEW`")
        old_path, new_path = (None, old) if rev is not None else (old, new)
        new_path = new_path or manifest.with_name(LOCK_NAME)
        notes: list[str] = []
        if old_path is None:
            old_lock, old_label, notes = lock_at_revision(rev or "HEAD", new_path)
        else:
            old_lock, old_label = read_lock(old_path), str(old_path)
        new_lock = read_lock(new_path)
        store, store_notes = store_for(manifest, store_url)
        result = diff(old_lock, new_lock, store=store, old_label=old_label,
                      new_label=str(new_path))
        if store is None:
            result.notes = [n + " (pass --store URL, or --manifest for its store)"
                            if n.startswith("no store") else n for n in result.notes]
        result.notes = notes + store_notes + result.notes
        if as_json:
            emit_json(result.to_dict())
        else:
            echo(render_text(result), nl=False)
        return EXIT_DRIFT if result else EXIT_OK

    run(as_json, go, files=Files(manifest, store_url))
