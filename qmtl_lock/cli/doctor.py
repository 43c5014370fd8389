"""``qmtl-lock doctor``: probe the store: reachable, writable, conditional writes honoured."""

from __future__ import annotations

from pathlib import Path

import click

from qmtl_lock.cli.output import Files, echo, emit_json, json_option, manifest_option, run


@click.command("doctor")
@manifest_option
@json_option
def doctor_command(manifest: Path, as_json: bool) -> None:
    """Probe the store: reachable, writable, conditional writes honoured, cache writable.

    Exits 3 when the store cannot be reached or written, 1 for a warning (a server that
    ignores conditional writes, a cache folder that cannot be written), 0 when all is well.
    """
    from qmtl_lock.doctor import doctor

    def go() -> int:
        report = doctor(manifest)
        if as_json:
            emit_json(report.to_dict())
            return report.exit_code
        echo(f"store {report.store}" + (f" at {report.endpoint}" if report.endpoint else ""))
        for probe in report.probes:
            echo(f"{probe.status:<5} {probe.name:<19} {probe.detail}")
            if probe.fix and probe.status in ("warn", "fail"):
                echo(f"{'':<25} fix: {probe.fix}")
        return report.exit_code

    run(as_json, go, files=Files(manifest))
