"""What ``qmtl-lock diff`` compares: the lock at a git revision (or in a file) and the store
that holds the snapshot manifests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qmtl_engine import QmtlLockError

if TYPE_CHECKING:
    from qmtl_engine import Store

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


def store_for(manifest: Path, store_url: str | None) -> tuple[Store | None, list[str]]:
    """The store holding the snapshot manifests (``--store``, else the manifest's), and notes.

    Only the manifest's ``store`` (and ``cache``) is read: the rest of it does not matter to a
    diff, and the models would cost more than the diff itself."""
    from qmtl_lock.inputs import StoreSetting
    from qmtl_lock.project_store import project_store

    notes: list[str] = []
    setting = StoreSetting(store_url) if store_url else None
    if manifest.exists() and not store_url:
        try:
            setting = project_store(manifest)
        except OSError as exc:
            notes.append(f"{manifest} could not be read, so its store is not used: {exc}")
        except QmtlLockError as exc:
            notes.append(f"{manifest} could not be read, so its store is not used: {exc.what}")
    store: Store | None = None
    if setting is not None:
        from qmtl_lock.redact import redact_text

        try:
            store = setting.open()
        except QmtlLockError as exc:  # a missing fsspec backend, an unknown protocol
            notes.append(f"the store {redact_text(setting.url)} cannot be opened: {exc.what}"
                         + (f" ({exc.fix})" if exc.fix else ""))
        except (ImportError, ValueError, OSError) as exc:
            notes.append(f"the store {redact_text(setting.url)} cannot be opened: {exc}")
    return store, notes
