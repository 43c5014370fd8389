"""``qmtl-lock pins push|list|remove``: the command line of :mod:`qmtl_lock.pins`."""

from __future__ import annotations

from pathlib import Path

import click

from qmtl_lock.cli.output import EXIT_OK, Files, echo, emit_json, json_option, manifest_option, run


@click.group("pins")
def pins_group() -> None:
    """Register this project's pins in a shared store, so gc elsewhere keeps them.

    `pins push` writes pins/<project>/<ref>.json into the store: every fingerprint the
    committed seamless.lock pins. Run it in CI on protected branches, after the lock is
    committed; gc from any project on the store then keeps those snapshots. `pins remove`
    drops the pins of a retired branch.
    """


@pins_group.command("push")
@manifest_option
@click.option("--project", metavar="NAME",
              help="The project's name in the store. Default: the git remote origin's "
              "repository name (with the folder of seamless.yaml if it is below the top), else "
              "the folder's name.")
@click.option("--ref", metavar="REF",
              help="The branch these pins are for. Default: the branch checked out, else "
              "$GITHUB_REF_NAME or $CI_COMMIT_REF_NAME.")
@json_option
def push_command(manifest: Path, project: str | None, ref: str | None, as_json: bool) -> None:
    """Register what seamless.lock pins as pins/<project>/<ref>.json in the store."""
    from qmtl_lock.pins import push_pins

    def go() -> int:
        pushed = push_pins(manifest, project=project, ref=ref,
                           on_wait=lambda text: echo(text, err=True))
        if as_json:
            emit_json({"ok": True, **pushed.to_dict()})
        else:
            echo(f"registered {pushed.fingerprints} fingerprint"
                 f"{'' if pushed.fingerprints == 1 else 's'} of project "
                 f"{pushed.project}@{pushed.ref} in {pushed.path}")
        return EXIT_OK

    run(as_json, go, files=Files(manifest))


@pins_group.command("list")
@manifest_option
@json_option
def list_command(manifest: Path, as_json: bool) -> None:
    """List the pins registered in the store, by project and ref."""
    from qmtl_lock.pins import describe_pin, list_pins, store_line

    def go() -> int:
        store, pins = list_pins(manifest)
        if as_json:
            emit_json({"ok": True, "pins": [
                {"path": p.path, "project": p.project, "ref": p.ref,
                 "fingerprints": len(p.fingerprints), "pushed_at": p.pushed_at,
                 "commit": p.commit, "lock_digest": p.lock_digest, "problem": p.problem}
                for p in pins]})
            return EXIT_OK
        echo(f"{store_line(store)}: {len(pins)} registered pin{'' if len(pins) == 1 else 's'}")
        for pin in pins:
            echo(f"  {describe_pin(pin)}")
        return EXIT_OK

    run(as_json, go, files=Files(manifest))


@pins_group.command("remove")
@manifest_option
@click.option("--project", metavar="NAME", required=True, help="The project, as `pins list` "
              "names it.")
@click.option("--ref", metavar="REF", required=True, help="The ref, as `pins list` names it.")
@json_option
def remove_command(manifest: Path, project: str, ref: str, as_json: bool) -> None:
    """Unregister the pins of one project and ref (a retired branch): gc may then delete what
    only they kept."""
    from qmtl_lock.pins import remove_pins, store_line

    def go() -> int:
        store, removed = remove_pins(manifest, project=project, ref=ref)
        if as_json:
            emit_json({"ok": True, "removed": removed, "project": project, "ref": ref})
        elif removed:
            echo(f"removed the pins of project {project}@{ref} from the {store_line(store)}")
        else:
            echo(f"no pins of project {project}@{ref} in the {store_line(store)}: nothing to "
                 "remove (`qmtl-lock pins list` shows what is registered)")
        return EXIT_OK

    run(as_json, go, files=Files(manifest))
