"""``qmtl-lock merge-driver``: the git merge driver for seamless.lock, per dataset and symbol.

``python -m qmtl_lock.cli.merge_driver BASE OURS THEIRS`` runs it on its own, for a git config
that should not depend on the console script::

    # .gitattributes
    seamless.lock merge=qmtl-lock
    # once per clone
    git config merge.qmtl-lock.name "qmtl-lock lockfile merge"
    git config merge.qmtl-lock.driver "qmtl-lock merge-driver %O %A %B"

Exit 0 when merged, 1 when the merge has conflicts, 2 when a side cannot be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from qmtl_engine import QmtlLockError

from qmtl_lock.cli.output import EXIT_OK, run

if TYPE_CHECKING:
    from qmtl_lock.lockfile import Lockfile
    from qmtl_lock.merge import Conflict


class MergeConflict(QmtlLockError):
    """Both branches changed the same dataset or symbol entry differently."""

    exit_code = 1

    def __init__(self, conflicts: Sequence[Conflict], *, path: str = "seamless.lock") -> None:
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


def _read_side(path: Path, role: str, *, empty_ok: bool = False) -> Lockfile:
    from qmtl_engine import YAMLFileError, read_yaml_text

    from qmtl_lock.errors import LockfileError
    from qmtl_lock.lockfile import Lockfile, parse_lock

    try:
        text = read_yaml_text(path)
    except YAMLFileError as exc:
        raise LockfileError(f"{role} of seamless.lock: {exc.what}", path=str(path),
                            fix=exc.fix) from None
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

    run(False, go)


if __name__ == "__main__":  # python -m qmtl_lock.cli.merge_driver %O %A %B
    merge_driver_command(prog_name="qmtl-lock merge-driver")
