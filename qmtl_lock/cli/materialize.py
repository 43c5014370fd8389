"""``qmtl-lock materialize``: one preset and symbol into the store, without a lock."""

from __future__ import annotations

from pathlib import Path

import click

from qmtl_lock.cli.output import EXIT_OK, Files, emit_json, manifest_option, run


@click.command("materialize")
@click.argument("preset")
@click.option("--symbol", required=True)
@click.option("--source-symbol", metavar="NAME",
              help="The name the source knows the symbol by (XBTUSDT for BTCUSD), as a "
              "dataset's `source_symbol`.")
@click.option("--start", required=True)
@click.option("--end", required=True, help="A date, a UTC time, or now.")
@click.option("--contract-version", default="v1", show_default=True)
@click.option("--retention-class", default="default", show_default=True)
@click.option("--store", "store", default=".seamless/store", show_default=True,
              help="Store URL (any fsspec URL).")
@manifest_option
@click.option("--presets", "catalogs", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False),
              help="A preset catalog to merge over the project's (repeatable).")
def materialize_command(preset: str, symbol: str, source_symbol: str | None, start: str,
                        end: str, contract_version: str, retention_class: str, store: str,
                        manifest: Path, catalogs: tuple[str, ...]) -> None:
    """Materialize one preset and symbol into the store, without a lock; print the report.

    The presets are the built-in ones, those of the catalogs under `presets:` in the nearest
    seamless.yaml, and those of each --presets FILE."""
    from qmtl_lock.materialize_job import MaterializeSeamlessJob

    def go() -> int:
        report = MaterializeSeamlessJob(preset=preset, symbol=symbol, start=start, end=end,
                                        contract_version=contract_version,
                                        retention_class=retention_class,
                                        artifact_dir=store, presets=catalogs,
                                        manifest=manifest, source_symbol=source_symbol).run()
        emit_json(report.to_dict())
        return EXIT_OK

    run(True, go, files=Files(store=store))
