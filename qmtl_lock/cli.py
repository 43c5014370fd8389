"""The ``qmtl-lock`` command line. It alone maps errors to exit codes (DESIGN §10).

Exit codes: 0 ok; 1 drift or verification failure; 2 bad input; 3 materialization failed.
Heavy modules (pyarrow, fsspec) are imported inside the commands that need them, so ``check``
stays fast enough for a pre-commit hook.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from qmtl_engine.errors import QmtlLockError

from qmtl_lock.commands import diff_command, merge_driver_command
from qmtl_lock.gc_command import gc_command

EXIT_OK, EXIT_DRIFT, EXIT_INPUT, EXIT_MATERIALIZE = 0, 1, 2, 3

manifest_option = click.option(
    "--manifest", "-m", "manifest", default="seamless.yaml", show_default=True,
    type=click.Path(dir_okay=False, path_type=Path), help="Path to seamless.yaml.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _fail(exc: QmtlLockError, as_json: bool) -> NoReturn:
    if as_json:
        _emit_json({"ok": False, **exc.to_dict()})
    else:
        click.echo(f"error: {exc.render()}", err=True)
    sys.exit(exc.exit_code)


def _run(as_json: bool, fn: Callable[[], int]) -> NoReturn:
    try:
        code = fn()
    except QmtlLockError as exc:
        _fail(exc, as_json)
    sys.exit(code)


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _progress(label: str, *, live: bool = True) -> Callable[[int, int], None]:
    """Progress per dataset/symbol: partitions done of total, and rate. ``live`` redraws one
    line as work goes; otherwise (several symbols at once) only finished symbols are shown."""
    import time

    started = time.monotonic()

    def tick(done: int, total: int) -> None:
        if not live and done != total:
            return
        elapsed = max(time.monotonic() - started, 1e-9)
        rate = done / elapsed
        click.echo(f"\r  {label}: {done}/{total} partitions ({rate:.1f}/s)", err=True,
                   nl=done == total)
    return tick


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qmtl-lock")
def cli() -> None:
    """Pin market data the way a lockfile pins packages.

    Declare data in seamless.yaml, pin it with `qmtl-lock resolve`, keep CI honest with
    `qmtl-lock check`, and load it in Python through the lock.
    """


@cli.command()
@click.option("--dir", "directory", default=".", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write seamless.yaml.")
@click.option("--force", is_flag=True, help="Overwrite an existing seamless.yaml.")
def init(directory: Path, force: bool) -> None:
    """Write a starter seamless.yaml and git-ignore the store."""
    from qmtl_lock.init import init as do_init

    def go() -> int:
        for path in do_init(directory, force=force):
            click.echo(f"wrote {path}")
        click.echo("next: qmtl-lock resolve")
        return EXIT_OK

    _run(False, go)


@cli.command()
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
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Symbols materialized at once.")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write Prometheus metrics (text format) here, e.g. for node-exporter.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON materialize reports (flags with first offending times).")
@click.option("--verbose", "-v", is_flag=True, help="Log each partition to stderr.")
@json_option
def resolve(datasets: tuple[str, ...], manifest: Path, update: bool, refresh: bool,
            locked: bool, frozen: bool,
            dry_run: bool, jobs: int, metrics_file: Path | None, report_file: Path | None,
            verbose: bool, as_json: bool) -> None:
    """Materialize what is missing or changed and write seamless.lock."""
    from qmtl_lock.resolve import resolve as do_resolve

    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")

    if locked and frozen:
        _fail(QmtlLockError("--locked and --frozen cannot be used together",
                            fix="use --locked to check the lock, --frozen to trust it"), as_json)

    def go() -> int:
        metrics = None
        if metrics_file is not None:
            from qmtl_engine.metrics import RunMetrics

            metrics = RunMetrics()
        result = do_resolve(manifest, datasets=datasets, update=update, refresh=refresh,
                            locked=locked,
                            frozen=frozen, dry_run=dry_run, jobs=jobs, metrics=metrics,
                            progress=(lambda label: _progress(label, live=jobs == 1))
                            if _interactive() and not as_json else None)
        if metrics is not None and metrics_file is not None:
            metrics.write(metrics_file)
        if report_file is not None:
            report_file.write_text(json.dumps(result.reports, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
        if as_json:
            _emit_json({"ok": True, "wrote": result.wrote, "dry_run": dry_run,
                        "lock": str(result.lock_path),
                        "changes": [c.to_dict() for c in result.changes]})
            return EXIT_OK
        for change in result.changes:
            if change.action != "unchanged" or dry_run:
                click.echo(change.line())
                for step in change.plan:
                    click.echo(f"    {step}")
        if dry_run:
            click.echo("dry run: nothing fetched, seamless.lock not written")
        elif result.wrote:
            click.echo(f"wrote {result.lock_path}")
        else:
            click.echo(f"{result.lock_path} is up to date")
        return EXIT_OK

    _run(as_json, go)


@cli.command()
@manifest_option
@click.option("--strict", is_flag=True, help="Also fail on SLA violations recorded in the lock.")
@json_option
def check(manifest: Path, strict: bool, as_json: bool) -> None:
    """Check that seamless.lock matches seamless.yaml and the presets (reads no data)."""
    from qmtl_lock.check import check as do_check

    def go() -> int:
        result = do_check(manifest, strict=strict)
        if as_json:
            _emit_json({"ok": not result, "drift": [d.to_dict() for d in result.drifts]})
        elif result:
            click.echo(f"{result.lock} is out of date with {result.manifest}:")
            for d in result.drifts:
                click.echo(f"  {d.line()}")
            fixes = sorted({d.fix for d in result.drifts})
            for fix in fixes:
                click.echo(f"fix: {fix}")
        else:
            click.echo(f"{result.lock} is up to date")
        return EXIT_DRIFT if result else EXIT_OK

    _run(as_json, go)


_VERIFY_FIX = {
    "object-missing": "run `qmtl-lock resolve --frozen` to rebuild the pinned data in the store",
    "object-corrupted": "delete each corrupted file named above, then run "
                        "`qmtl-lock resolve --frozen` to fetch it again",
    "fingerprint-mismatch": "the store or the lock was altered; restore seamless.lock from git, "
                            "then run `qmtl-lock resolve --frozen`",
    "lock-mismatch": "restore seamless.lock from git or run `qmtl-lock resolve`",
    "snapshot-missing": "run `qmtl-lock resolve --frozen` to rebuild the pinned data; if it "
                        "reports that the source gives other data, restore seamless.lock from git",
}


@cli.command()
@click.argument("datasets", nargs=-1)
@manifest_option
@json_option
def verify(datasets: tuple[str, ...], manifest: Path, as_json: bool) -> None:
    """Re-read the store and re-hash it against the lock."""
    from qmtl_lock.verify import verify as do_verify

    def go() -> int:
        result = do_verify(manifest, datasets=datasets)
        if as_json:
            _emit_json({"ok": not result, "checked": result.checked, "rows": result.rows,
                        "problems": [p.to_dict() for p in result.problems]})
        elif result:
            click.echo(f"verification failed for {len(result.problems)} problem(s):")
            for p in result.problems:
                click.echo(f"  {p.line()}")
            for fix in sorted({_VERIFY_FIX.get(p.kind, "") for p in result.problems} - {""}):
                click.echo(f"fix: {fix}")
        else:
            click.echo(f"verified {result.checked} snapshot(s), {result.rows} rows: all match "
                       "the lock")
        return EXIT_DRIFT if result else EXIT_OK

    _run(as_json, go)


@cli.command()
@click.argument("dataset", required=False)
@manifest_option
@click.option("--gaps", is_flag=True,
              help="List the missing bars of DATASET as ranges (reads the locked data).")
@json_option
def show(dataset: str | None, manifest: Path, gaps: bool, as_json: bool) -> None:
    """Show what is locked: coverage, rows, fingerprint, flags, expiry."""
    from qmtl_lock.manifest import LOCK_NAME
    from qmtl_lock.show import format_gaps, format_table, gap_ranges, show_rows

    def go() -> int:
        if gaps:
            if dataset is None:
                raise QmtlLockError("--gaps needs a DATASET",
                                    fix="run `qmtl-lock show --gaps DATASET`")
            found = gap_ranges(manifest, dataset)
            if as_json:
                _emit_json(found)
            else:
                click.echo(format_gaps(dataset, found))
            return EXIT_OK
        rows = show_rows(manifest.with_name(LOCK_NAME), dataset)
        if as_json:
            _emit_json(rows)
        else:
            click.echo(format_table(rows))
        return EXIT_OK

    _run(as_json, go)


@cli.command()
@manifest_option
@json_option
def presets(manifest: Path, as_json: bool) -> None:
    """List the presets (built-in and from seamless.yaml) with their definitions."""
    from qmtl_engine.presets import load_registry

    from qmtl_lock.manifest import parse_manifest, read_manifest_text

    def go() -> int:
        catalogs: list[str] = []
        if manifest.exists():
            m, _ = parse_manifest(read_manifest_text(manifest), str(manifest))
            catalogs = [str(manifest.parent / c) for c in m.presets]
        registry = load_registry(catalogs)
        resolved = [registry.get(pid) for pid in registry.ids()]
        if as_json:
            _emit_json([{**p.definition(), "digest": p.digest(), "catalog": p.catalog,
                         "description": p.data.description} for p in resolved])
            return EXIT_OK
        width = max(len(p.id) for p in resolved)
        for p in resolved:
            click.echo(f"{p.id.ljust(width)}  {p.data.source.name:<14} {p.data.calendar:<5} "
                       f"{p.data.description.splitlines()[0] if p.data.description else ''}"
                       .rstrip())
        return EXIT_OK

    _run(as_json, go)


@cli.command()
@click.argument("preset")
@click.option("--symbol", required=True)
@click.option("--start", required=True)
@click.option("--end", required=True, help="A date, a UTC time, or now.")
@click.option("--contract-version", default="v1", show_default=True)
@click.option("--retention-class", default="default", show_default=True)
@click.option("--store", "store", default=".seamless/store", show_default=True,
              help="Store URL (any fsspec URL).")
def materialize(preset: str, symbol: str, start: str, end: str, contract_version: str,
                retention_class: str, store: str) -> None:
    """Materialize one preset and symbol into the store, without a lock; print the report."""
    from qmtl_lock.materialize_job import MaterializeSeamlessJob

    def go() -> int:
        report = MaterializeSeamlessJob(preset=preset, symbol=symbol, start=start, end=end,
                                        contract_version=contract_version,
                                        retention_class=retention_class,
                                        artifact_dir=store).run()
        _emit_json(report.to_dict())
        return EXIT_OK

    _run(True, go)


@cli.command()
@click.option("--write", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write the schemas into this folder instead of printing them.")
def schemas(directory: Path | None) -> None:
    """Print (or write) the JSON Schemas of seamless.yaml, seamless.lock and preset catalogs."""
    from qmtl_lock.schema import generate, write

    if directory is not None:
        for path in write(directory):
            click.echo(f"wrote {path}")
        return
    _emit_json({name: json.loads(text) for name, text in generate().items()})


cli.add_command(diff_command)
cli.add_command(merge_driver_command)
cli.add_command(gc_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
