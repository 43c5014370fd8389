"""``qmtl-lock gc``: the command line of :mod:`qmtl_lock.gc`."""

from __future__ import annotations

from pathlib import Path

import click

from qmtl_lock.cli.output import EXIT_OK, Files, echo, emit_json, manifest_option, run


@click.command("gc")
@manifest_option
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@click.option("--keep-revs", "keep_revs", multiple=True, metavar="REV",
              help="Also keep what seamless.lock pins at this git revision (repeatable).")
@click.option("--all-refs", is_flag=True,
              help="Also keep what seamless.lock pins at every branch and tag.")
@click.option("--no-git", "no_git", is_flag=True,
              help="Read no git history: keep only what the working-tree seamless.lock pins, "
              "plus files within the grace period and what a running resolve may need. Without "
              "it gc deletes nothing outside a git repository, and stops (exit 2) when git "
              "cannot read one.")
@click.option("--archive", metavar="URL",
              help="Move files to this fsspec URL (same relative paths) instead of deleting.")
@click.option("--grace-days", default=7, show_default=True, type=click.IntRange(min=0),
              help="Never touch files written less than this many days ago (a resolve may be "
              "running).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the plan as JSON (the action log goes to stderr).")
def gc_command(manifest: Path, dry_run: bool, keep_revs: tuple[str, ...], all_refs: bool,
               no_git: bool, archive: str | None, grace_days: int, as_json: bool) -> None:
    """Delete store data that no kept lock pins and retention no longer protects.

    Kept: snapshots pinned by the working-tree seamless.lock, by the lock at HEAD, at each
    --keep-revs REV and (with --all-refs) at every branch and tag; snapshots whose newest
    expires_at in the git history is still ahead; the objects of every kept snapshot; anything
    written within the grace period; and every snapshot another project registered with
    `qmtl-lock pins push` (pins/*/*.json in the store). While a resolve holds a lease on the
    store, every job and everything written since the oldest lease began is kept too; leases
    whose holder stopped refreshing them are stale and removed. gc holds the store's gc lock
    (locks/gc.json) while it lists and deletes: a second gc refuses to start and resolves wait.
    Snapshots go first, objects after, each only if unchanged since the listing. Each action is
    logged.

    gc needs the git history to know what earlier commits pinned. If git fails inside a
    repository (it refuses a repository owned by another user, the repository is damaged, git
    is missing) gc stops with exit 2 and deletes nothing. Outside a repository it deletes
    nothing unless --no-git says to keep only what the working-tree lock pins.
    """
    from qmtl_lock.gc import GcRun, apply_gc, describe, prepare_gc
    from qmtl_lock.redact import redact_text

    def say(text: str) -> None:
        echo(text, err=as_json)  # with --json, stdout holds only the JSON plan

    def go() -> int:
        gc = prepare_gc(manifest, keep_revs=keep_revs, all_refs=all_refs, no_git=no_git,
                        grace_days=grace_days, archive=archive, exclusive=not dry_run)
        try:
            changed = report(gc)
        finally:
            gc.release()
        if as_json:
            emit_json({"ok": True, "dry_run": dry_run, "store": redact_text(gc.store.url),
                       "archive": redact_text(archive) if archive else None,
                       **gc.plan.to_dict(), "changed": changed})
        return EXIT_OK

    def report(gc: GcRun) -> list[str]:
        """Log the plan and carry it out (unless a dry run); the files kept as changed."""
        plan = gc.plan
        say(f"gc {redact_text(gc.store.url)}: keeping what {', '.join(plan.kept_locks)} "
            f"pin{'s' if len(plan.kept_locks) == 1 else ''}")
        for warning in plan.warnings:
            echo(f"warning: {warning}", err=True)
        for line in plan.respected_lines():
            say(line)
        for pinned in plan.pinned:
            say(pinned.line())
        changed: list[str] = []
        if dry_run:
            for action in plan.actions:
                say(describe(action, archive=archive, dry_run=True))
            for lease in plan.stale_leases:
                say(plan.stale_line(lease, "would remove"))
        else:
            result = apply_gc(plan, gc.store, archive=archive, log=say)
            changed = result.changed
            for lease in plan.stale_leases:
                say(plan.stale_line(lease, "removed") if lease.path in result.leases_removed
                    else f"kept lease {lease.path}: its holder refreshed it, or it is gone")
        say(plan.summary(dry_run=dry_run, archive=archive))
        return changed

    run(as_json, go, files=Files(manifest))
