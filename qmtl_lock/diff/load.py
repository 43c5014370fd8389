"""What ``qmtl-lock diff`` compares: the lock at a git revision (or in a file) and the store
that holds the snapshot manifests, with the partition scheme of each preset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qmtl_engine.errors import QmtlLockError

if TYPE_CHECKING:
    from qmtl_engine.ranges import PartitionScheme
    from qmtl_engine.store import Store

    from qmtl_lock.lockfile import Lockfile


def lock_at_revision(rev: str, path: Path) -> tuple[Lockfile, str, list[str]]:
    """The lock stored at ``path`` in git revision ``rev``: (lock, label, notes).

    A lock that does not exist at ``rev`` is an empty lock (every entry counts as added).
    Raises :class:`~qmtl_lock.errors.GitError` without git, outside a repository or for an
    unknown revision.
    """
    from qmtl_lock.git import GitFile
    from qmtl_lock.lockfile import Lockfile, parse_lock

    git = GitFile.of(path, otherwise="compare two files: qmtl-lock diff OLD NEW")
    label = git.label(rev)
    git.commit(rev)
    text = git.text_at(rev)
    if text is None:
        return Lockfile(), label, [f"{label} does not exist: every entry counts as added"]
    return parse_lock(text, label), label, []


def store_and_schemes(manifest: Path, store_url: str | None,
                      ) -> tuple[Store | None, dict[str, PartitionScheme], list[str]]:
    """The store holding the snapshot manifests, the partition scheme of each preset, notes."""
    from qmtl_engine.presets import PresetRegistry, load_registry

    from qmtl_lock.manifest import load_manifest

    notes: list[str] = []
    registry: PresetRegistry | None = None
    url = store_url
    if manifest.exists():
        try:
            loaded = load_manifest(manifest)
            registry = loaded.registry
            url = url or loaded.store_url
        except QmtlLockError as exc:
            notes.append(f"{manifest} could not be read, so its store is not used: {exc.what}")
    schemes: dict[str, PartitionScheme] = {}
    try:
        registry = registry or load_registry()
        for pid in registry.ids():
            schemes[pid] = registry.get(pid).partition
    except QmtlLockError:
        pass  # partition names fall back to a scheme inferred from the windows
    store: Store | None = None
    if url:
        from qmtl_engine.store import Store

        try:
            store = Store(url)
        except (ImportError, ValueError, OSError) as exc:
            notes.append(f"the store {url} cannot be opened: {exc}")
    return store, schemes, notes
