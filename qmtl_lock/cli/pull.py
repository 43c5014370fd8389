"""``qmtl-lock pull``: bring what the lock pins from a remote store into the local cache."""

from __future__ import annotations

from pathlib import Path

import click

from qmtl_lock.cli.output import EXIT_OK, Files, echo, emit_json, json_option, manifest_option, run


def _size(n: int) -> str:
    """``n`` bytes as people read them: 812 B, 3.4 MB."""
    units = ("B", "KB", "MB", "GB", "TB")
    value, exp = float(n), 0
    while value >= 1000 and exp < len(units) - 1:
        value, exp = value / 1000, exp + 1
    return f"{n} B" if exp == 0 else f"{value:.1f} {units[exp]}"


@click.command("pull")
@click.argument("datasets", nargs=-1)
@manifest_option
@json_option
def pull_command(datasets: tuple[str, ...], manifest: Path, as_json: bool) -> None:
    """Bring what the lock pins from a remote store into the local cache, verified.

    Afterwards loading through the lock and `qmtl-lock verify` read only the cache, so they
    work without the store. A local store has no cache: there is nothing to pull.
    """
    from qmtl_lock.pull import pull

    def go() -> int:
        result = pull(manifest, datasets=datasets)
        if as_json:
            emit_json(result.to_dict())
        elif result.cache is None:
            echo(f"nothing to pull: the store {result.store} is read directly (a local store, "
                 "or `cache: false`)")
        else:
            snaps, objs = result.snapshots, result.objects
            echo(f"pulled {snaps.fetched} snapshot(s) and {objs.fetched} object(s) "
                 f"({_size(result.bytes_fetched)}) from {result.store} into {result.cache}; "
                 f"{snaps.cached} snapshot(s) and {objs.cached} object(s) were already cached "
                 "(verified)")
        return EXIT_OK

    run(as_json, go, files=Files(manifest))
