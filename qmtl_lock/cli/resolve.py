"""``qmtl-lock resolve``: materialize what is missing or changed and write seamless.lock."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from qmtl_engine import InputError, QmtlLockError

from qmtl_lock.cli.output import (
    EXIT_OK,
    Files,
    echo,
    emit_json,
    fail,
    json_option,
    manifest_option,
    redacted_json,
    run,
)

if TYPE_CHECKING:
    from qmtl_engine import Executor

    from qmtl_lock.resolve import ResolveResult


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


class _ProgressLine:
    """Progress per dataset/symbol on one terminal line: partitions done of total, and rate.

    With several partitions at once, symbols take turns on the line (each tick redraws it,
    cleared of a longer text before); a finished symbol's line stays, and the next draws
    below it."""

    def __init__(self) -> None:
        self._width = 0

    def for_symbol(self, label: str) -> Callable[[int, int], None]:
        import time

        started = time.monotonic()

        def tick(done: int, total: int) -> None:
            elapsed = max(time.monotonic() - started, 1e-9)
            text = f"  {label}: {done}/{total} partitions ({done / elapsed:.1f}/s)"
            echo("\r" + text.ljust(self._width), err=True, nl=done == total)
            self._width = 0 if done == total else len(text)
        return tick


@click.command("resolve")
@click.argument("datasets", nargs=-1)
@manifest_option
@click.option("--update", is_flag=True,
              help="Move `end: now` datasets to the latest closed bar and re-check open data.")
@click.option("--refresh", is_flag=True,
              help="Fetch every partition again, to find data the provider restated.")
@click.option("--locked", is_flag=True, help="Fail (exit 1) if the lock would change.")
@click.option("--frozen", is_flag=True,
              help="Use the lock as it is: only rebuild pinned data missing from the store.")
@click.option("--dry-run", is_flag=True, help="Show the plan; fetch and write nothing.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), metavar="N",
              help="Partitions fetched, checked and stored at once (local executor). "
              "[default: one per core, at most 8]")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local",
              show_default=True,
              help="Where partitions are materialized: here, or on a Dask cluster. The lock is "
              "the same either way.")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="With --executor dask: the scheduler of an existing cluster.")
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="With --executor dask: start N local worker processes for this run.")
@click.option("--lock-timeout", default=600.0, show_default=True, type=click.FloatRange(0),
              metavar="SECONDS",
              help="How long to wait for another resolve of this project to finish.")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write Prometheus metrics (text format) here, e.g. for node-exporter.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON materialize reports (flags with first offending times), "
              "on a failed resolve too.")
@click.option("--verbose", "-v", is_flag=True, help="Log each partition to stderr.")
@json_option
def resolve_command(datasets: tuple[str, ...], manifest: Path, update: bool, refresh: bool,
                    locked: bool, frozen: bool, dry_run: bool, jobs: int | None, executor: str,
                    scheduler: str | None, workers: int | None, lock_timeout: float,
                    metrics_file: Path | None, report_file: Path | None, verbose: bool,
                    as_json: bool) -> None:
    """Materialize what is missing or changed and write seamless.lock.

    Every partition to fetch is a task: on --jobs threads here (--executor local), or on a
    Dask cluster (--executor dask with --scheduler tcp://HOST:PORT, or --workers N to start
    N local worker processes). Workers read credentials from their own environment.
    """
    if verbose:
        _log_to_stderr()
    if locked and frozen:
        fail(QmtlLockError("--locked and --frozen cannot be used together",
                           fix="use --locked to check the lock, --frozen to trust it"), as_json)
    if executor == "local" and (scheduler or workers):
        fail(InputError("--scheduler and --workers choose a Dask cluster",
                        where="--executor local",
                        fix="add --executor dask, or leave them out (--jobs N runs N at once "
                        "here)"), as_json)
    if executor == "dask" and jobs is not None:
        fail(InputError("--jobs sets threads of the local executor", where="--executor dask",
                        fix="use --workers N for a local Dask cluster, or leave --jobs out"),
             as_json)

    def go() -> int:
        for option, path in (("--metrics-file", metrics_file), ("--report", report_file)):
            _check_writable(option, path)  # before any work: the lock and store stay as they are
        plain = not (datasets or update or refresh or frozen or dry_run or as_json
                     or metrics_file or report_file)
        if plain:  # the light path of a no-op resolve: no model built, no data read
            from qmtl_lock.inputs import LOCK_NAME, nothing_to_resolve
            from qmtl_lock.project_lock import writing_lock

            # as the full path does, it waits for another resolve of the project to finish
            with writing_lock(manifest.parent, timeout_s=lock_timeout,
                              on_wait=lambda text: echo(text, err=True)):
                if nothing_to_resolve(manifest):
                    echo(f"{manifest.with_name(LOCK_NAME)} is up to date")
                    return EXIT_OK
        from qmtl_lock.resolve import resolve

        metrics = None
        if metrics_file is not None:
            from qmtl_engine import RunMetrics

            metrics = RunMetrics()
        with _executor(executor, scheduler, workers) as chosen, \
                _report_on_failure(report_file):
            result = resolve(manifest, datasets=datasets, update=update, refresh=refresh,
                             locked=locked, frozen=frozen, dry_run=dry_run, jobs=jobs,
                             metrics=metrics, lock_timeout_s=lock_timeout,
                             on_wait=lambda text: click.echo(text, err=True),
                             progress=_ProgressLine().for_symbol
                             if _interactive() and not as_json else None, executor=chosen)
        if metrics is not None and metrics_file is not None:
            metrics.write(metrics_file)
        if report_file is not None:
            report_file.write_text(redacted_json(result.reports) + "\n", encoding="utf-8")
        _print(result, dry_run=dry_run, as_json=as_json)
        return EXIT_OK

    run(as_json, go, files=Files(manifest))


@contextmanager
def _report_on_failure(report_file: Path | None) -> Iterator[None]:
    """A resolve that fails still writes ``--report``: the symbols that finished, and each
    failure with what it found (the lock is left as it was)."""
    try:
        yield
    except QmtlLockError as exc:
        reports = getattr(exc, "reports", None)
        if report_file is not None and reports is not None:
            report_file.write_text(redacted_json(reports) + "\n", encoding="utf-8")
        raise


@contextmanager
def _executor(name: str, scheduler: str | None, workers: int | None) -> Iterator[Executor | None]:
    """The Dask executor asked for (connected, or its local cluster started), closed after the
    run; None for the local executor, which resolve makes with --jobs threads."""
    if name != "dask":
        yield None
        return
    from qmtl_engine import DaskExecutor  # raises the install hint when dask is missing

    with DaskExecutor(scheduler=scheduler, workers=workers) as dask:
        yield dask


def _check_writable(option: str, path: Path | None) -> None:
    """Refuse an output file that cannot be written, before the resolve changes anything."""
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        raise InputError(
            f"{option} {path}: the folder {folder} does not exist",
            where=option, fix=f"create it first (mkdir -p {folder}) or write the file elsewhere")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{option} {path}: the folder {folder} is not writable", where=option,
                         fix="choose a folder this user can write")


def _log_to_stderr() -> None:
    """``--verbose``: each partition to stderr, with credentials redacted like all output."""
    import logging

    from qmtl_lock.redact import redact_output

    class Redacting(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return redact_output(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Redacting("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _print(result: ResolveResult, *, dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, "wrote": result.wrote, "dry_run": dry_run,
                   "lock": str(result.lock_path),
                   "changes": [c.to_dict() for c in result.changes]})
        return
    # Only what moves is printed, in a dry run too (--json lists every symbol).
    moved = [c for c in result.changes if c.action != "unchanged"]
    for change in moved:
        echo(change.line())
        for step in change.plan:
            echo(f"    {step}")
    if dry_run:
        if not moved:
            echo(f"{result.lock_path} is up to date")
        echo("dry run: nothing fetched, seamless.lock not written")
    elif result.wrote:
        echo(f"wrote {result.lock_path}")
    else:
        echo(f"{result.lock_path} is up to date")
