"""A local read-through cache of what remote stores hold immutably (DESIGN §6).

Partition objects and snapshot manifests are named by their content, so one cache serves every
store, and a file once fetched never changes::

    <cache>/objects/<aa>/<partition digest hex>.parquet
    <cache>/snapshots/<aa>/<fingerprint hex>.json

Nothing here is trusted: the store verifies every cached file on every read, drops one that does
not match its name and fetches it again (:meth:`qmtl_engine.store.Store.check_object`). Mutable
things (resume checkpoints, references, leases, pins) are never cached. Files are written to a
temporary name and moved into place, so two processes filling the cache at once never see half a
file. The cache is an optimisation: a folder that cannot be written costs speed, not a failure
(``qmtl-lock doctor`` says so).

The folder is ``cache:`` in seamless.yaml, else ``$QMTL_LOCK_CACHE``, else
``$XDG_CACHE_HOME/qmtl-lock``, else ``~/.cache/qmtl-lock``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from qmtl_engine.layout import object_key, snapshot_key

CACHE_ENV = "QMTL_LOCK_CACHE"

_log = logging.getLogger("qmtl_lock.cache")


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the cache lives when seamless.yaml does not say (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "qmtl-lock"


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (its folder made) through a temporary file of a unique name
    beside it and a rename, so a reader, or another writer, never sees part of a file. Raises
    OSError, leaving no temporary file behind."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


class ObjectCache:
    """The cache folder ``root``: where each immutable file goes, and safe reads and writes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._warned = False

    def __repr__(self) -> str:
        return f"ObjectCache({str(self.root)!r})"

    def object_file(self, digest: str) -> Path:
        return self.root / object_key(digest)  # the store's layout

    def snapshot_file(self, fingerprint: str) -> Path:
        return self.root / snapshot_key(fingerprint)

    def read(self, path: Path) -> bytes | None:
        """The bytes cached at ``path``, or None when there are none (or they cannot be read)."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn(f"cannot read the cache file {path}: {exc}")
            return None

    def write(self, path: Path, data: bytes) -> bool:
        """Cache ``data`` at ``path`` (atomically); False, after one warning per cache, when the
        folder cannot be written."""
        try:
            write_whole(path, data)
        except OSError as exc:
            self._warn(f"cannot write to the cache {self.root}: {exc}")
            return False
        return True

    def drop(self, path: Path) -> None:
        """Forget a cached file that did not verify (it is fetched again)."""
        _log.warning("cached file %s does not match its name: dropped, fetched again", path)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self._warn(f"cannot remove the bad cache file {path}: {exc}")

    def probe(self) -> None:
        """Write and remove a file in the cache folder (creating it); raises OSError when the
        folder cannot be written."""
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"qmtl-lock doctor\n")
        probe.unlink()

    def _warn(self, text: str) -> None:
        if not self._warned:  # once: a read-only cache would otherwise say it per partition
            self._warned = True
            _log.warning("%s (reads go to the store)", text)


def open_cache(setting: str | os.PathLike[str] | bool | None) -> ObjectCache | None:
    """The cache a store reads through: ``False`` none, ``None`` or ``True`` the default folder
    (:func:`default_cache_dir`), else that folder."""
    if setting is False:
        return None
    if setting is None or setting is True:
        return ObjectCache(default_cache_dir())
    return ObjectCache(Path(setting).expanduser())
