"""The store a project's seamless.yaml names, read as cheaply as it can be."""

from __future__ import annotations

from pathlib import Path

from qmtl_lock.inputs import StoreSetting, store_setting_in


def project_store(manifest: Path) -> StoreSetting:
    """The store (and cache) of seamless.yaml at ``manifest``, reading only ``store`` and
    ``cache`` (:func:`~qmtl_lock.inputs.store_setting_in`), as a strategy's start-up and
    ``diff`` want it: the manifest's models would cost more than the rest. A file that cannot
    be read that way goes through the full reader, whose error says what is wrong with it.
    Raises OSError when the file cannot be read at all."""
    setting = store_setting_in(manifest.read_bytes(), manifest)
    if setting is not None:
        return setting
    from qmtl_lock.manifest import manifest_store_setting, parse_manifest, read_manifest_text

    parsed = parse_manifest(read_manifest_text(manifest), str(manifest))[0]
    return manifest_store_setting(parsed, manifest.parent)
