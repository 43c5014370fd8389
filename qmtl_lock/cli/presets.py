"""``qmtl-lock presets``: list the presets, built-in and from seamless.yaml."""

from __future__ import annotations

from pathlib import Path

import click

from qmtl_lock.cli.output import (
    EXIT_OK,
    Files,
    echo,
    emit_json,
    json_option,
    manifest_option,
    run,
)


@click.command("presets")
@manifest_option
@json_option
def presets_command(manifest: Path, as_json: bool) -> None:
    """List the presets (built-in and from seamless.yaml) with their definitions."""
    from qmtl_engine import load_registry

    from qmtl_lock.manifest import parse_manifest, read_manifest_text

    def go() -> int:
        catalogs: list[str] = []
        if manifest.exists():
            m, _ = parse_manifest(read_manifest_text(manifest), str(manifest))
            catalogs = [str(manifest.parent / c) for c in m.presets]
        registry = load_registry(catalogs)
        resolved = [registry.get(pid) for pid in registry.ids()]
        if as_json:
            emit_json([{**p.definition(), "digest": p.digest(), "catalog": p.catalog,
                        "description": p.data.description} for p in resolved])
            return EXIT_OK
        width = max(len(p.id) for p in resolved)
        for p in resolved:
            echo(f"{p.id.ljust(width)}  {p.data.source.name:<14} {p.data.calendar:<5} "
                 f"{p.data.description.splitlines()[0] if p.data.description else ''}".rstrip())
        return EXIT_OK

    run(as_json, go, files=Files(manifest))
