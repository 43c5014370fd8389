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
        conformance = registry.conformance_presets()
        slas = registry.sla_presets()
        if as_json:
            # One list; `kind` tells data presets from the conformance and SLA presets they name.
            emit_json([{"kind": "data_preset", **p.definition(), "digest": p.digest(),
                        "adjustment": p.adjustment, "catalog": p.catalog,
                        "description": p.data.description}
                       for p in resolved]
                      + [{"kind": "conformance_preset", "id": name,
                          **c.model_dump(mode="json"), "catalog": where}
                         for name, c, where in conformance]
                      + [{"kind": "sla_preset", "id": name, **s.model_dump(mode="json"),
                          "catalog": where} for name, s, where in slas])
            return EXIT_OK
        width = max(len(p.id) for p in resolved)
        for p in resolved:
            adjusted = f"[{p.adjustment}] " if p.adjustment != "raw" else ""
            echo(f"{p.id.ljust(width)}  {p.data.source.name:<14} {p.data.calendar:<5} "
                 f"{adjusted}"
                 f"{p.data.description.splitlines()[0] if p.data.description else ''}".rstrip())
        echo("conformance presets (a dataset may pick one with `conformance_preset:`):")
        width = max(len(name) for name, _, _ in [*conformance, *slas])
        for name, c, _ in conformance:
            blocks = f"blocks {', '.join(c.block)}" if c.block else "blocks nothing"
            jumps = (f"; price_jump beyond {c.price_jump_threshold:g}"
                     if c.price_jump_threshold is not None else "")
            echo(f"  {name.ljust(width)}  {blocks}"
                 + ("; partial ok" if c.partial_ok else "") + jumps)
        echo("SLA presets (a dataset may pick one with `sla_preset:`):")
        for name, s, _ in slas:
            deadline = (f"deadline {s.total_deadline_ms // 1000}s"
                        if s.total_deadline_ms else "no deadline")
            echo(f"  {name.ljust(width)}  {deadline}, min coverage {s.min_coverage:g}, "
                 f"on violation {s.on_violation.value}")
        return EXIT_OK

    run(as_json, go, files=Files(manifest))

