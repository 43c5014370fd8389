"""``qmtl-lock materialize``: one preset and symbol into the store, without a lock."""

from __future__ import annotations

import click

from qmtl_lock.cli.output import EXIT_OK, Files, emit_json, run


@click.command("materialize")
@click.argument("preset")
@click.option("--symbol", required=True)
@click.option("--start", required=True)
@click.option("--end", required=True, help="A date, a UTC time, or now.")
@click.option("--contract-version", default="v1", show_default=True)
@click.option("--retention-class", default="default", show_default=True)
@click.option("--store", "store", default=".seamless/store", show_default=True,
              help="Store URL (any fsspec URL).")
def materialize_command(preset: str, symbol: str, start: str, end: str, contract_version: str,
                        retention_class: str, store: str) -> None:
    """Materialize one preset and symbol into the store, without a lock; print the report."""
    from qmtl_lock.materialize_job import MaterializeSeamlessJob

    def go() -> int:
        report = MaterializeSeamlessJob(preset=preset, symbol=symbol, start=start, end=end,
                                        contract_version=contract_version,
                                        retention_class=retention_class,
                                        artifact_dir=store).run()
        emit_json(report.to_dict())
        return EXIT_OK

    run(True, go, files=Files(store=store))
