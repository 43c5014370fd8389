"""The ``diff`` and ``merge-driver`` commands (team workflow).

``diff_command`` and ``merge_driver_command`` are click commands, registered on the ``qmtl-lock``
group by :mod:`qmtl_lock.cli`. ``python -m qmtl_lock.commands BASE OURS THEIRS`` runs the merge
driver on its own, for a git config that should not depend on the console script::

    # .gitattributes
    seamless.lock merge=qmtl-lock
    # once per clone
    git config merge.qmtl-lock.name "qmtl-lock lockfile merge"
    git config merge.qmtl-lock.driver "qmtl-lock merge-driver %O %A %B"

Exit codes as everywhere (DESIGN §10): 0 equal or merged, 1 the locks differ or the merge has
conflicts, 2 bad input (an unreadable lock, an unknown git revision, bad arguments).
This module imports no heavy module at import time: ``qmtl-lock check`` loads it with the group.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from qmtl_engine.errors import InputError, QmtlLockError

if TYPE_CHECKING:
    from qmtl_lock.lockfile import Lockfile
    from qmtl_lock.merge import Conflict

EXIT_OK, EXIT_DIFFERENT = 0, 1
LOCK_NAME = "seamless.lock"


# -- errors ----------------------------------------------------------------------------------
class MergeConflict(QmtlLockError):
    """Both branches changed the same dataset or symbol entry differently."""

    exit_code = 1

    def __init__(self, conflicts: Sequence[Conflict], *, path: str = LOCK_NAME) -> None:
        self.conflicts = list(conflicts)
        self.path = path
        listing = "\n".join(f"    {c.line()}" for c in self.conflicts)
        n = len(self.conflicts)
        super().__init__(
            f"{path}: {n} conflicting change{'s' if n != 1 else ''}; the merge kept our "
            f"version of the lock:\n{listing}",
            fix="resolve the conflicts in seamless.yaml (merge what both branches asked for), "
            "then run `qmtl-lock resolve` to rebuild seamless.lock from it, "
            "`git add seamless.yaml seamless.lock` and `git commit`",
        )


# -- plumbing shared by the two commands (cli.py keeps its own; no import cycle) --------------
def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _run(as_json: bool, fn: Callable[[], int]) -> NoReturn:
    try:
        code = fn()
    except QmtlLockError as exc:
        if as_json:
            _emit_json({"ok": False, **exc.to_dict()})
        else:
            click.echo(f"error: {exc.render()}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code)


# -- diff ------------------------------------------------------------------------------------
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
        from qmtl_lock.diff.load import lock_at_revision, store_and_schemes
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
        store, schemes, store_notes = store_and_schemes(manifest, store_url)
        result = diff(old_lock, new_lock, store=store, schemes=schemes, old_label=old_label,
                      new_label=str(new_path))
        if store is None:
            result.notes = [n + " (pass --store URL, or --manifest for its store)"
                            if n.startswith("no store") else n for n in result.notes]
        result.notes = notes + store_notes + result.notes
        if as_json:
            _emit_json(result.to_dict())
        else:
            click.echo(render_text(result), nl=False)
        return EXIT_DIFFERENT if result else EXIT_OK

    _run(as_json, go)


# -- merge driver ----------------------------------------------------------------------------
def _read_side(path: Path, role: str, *, empty_ok: bool = False) -> Lockfile:
    from qmtl_lock.errors import LockfileError
    from qmtl_lock.lockfile import Lockfile, parse_lock

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LockfileError(f"cannot read {role} of seamless.lock: {exc}", path=str(path),
                            fix="run the driver as git does: qmtl-lock merge-driver %O %A %B"
                            ) from None
    if empty_ok and not text.strip():
        return Lockfile()  # both branches added the lock: git passes an empty ancestor
    return parse_lock(text, f"{path} ({role} of seamless.lock)")


@click.command("merge-driver")
@click.argument("base", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("ours", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("theirs", type=click.Path(dir_okay=False, path_type=Path))
def merge_driver_command(base: Path, ours: Path, theirs: Path) -> None:
    """Git merge driver for seamless.lock: merges per dataset and symbol.

    Git runs it as `qmtl-lock merge-driver %O %A %B` and reads the result from %A (OURS).
    Exit 0 when the merge is clean. When both branches changed the same dataset or symbol
    differently, OURS is left as it was (still a valid lock), each conflict is named on stderr,
    and the exit code is 1: fix seamless.yaml, run `qmtl-lock resolve`, `git add seamless.lock`.

    \b
    Set up once per clone:
      echo 'seamless.lock merge=qmtl-lock' >> .gitattributes
      git config merge.qmtl-lock.driver "qmtl-lock merge-driver %O %A %B"
    """

    def go() -> int:
        from qmtl_lock.lockfile import write_lock
        from qmtl_lock.merge import merge

        result = merge(_read_side(base, "the common ancestor", empty_ok=True),
                       _read_side(ours, "our version"), _read_side(theirs, "their version"))
        if not result.clean:
            raise MergeConflict(result.conflicts)
        write_lock(ours, result.lock)
        return EXIT_OK

    _run(False, go)


if __name__ == "__main__":  # python -m qmtl_lock.commands %O %A %B
    merge_driver_command(prog_name="qmtl-lock merge-driver")
