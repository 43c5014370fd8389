"""The inputs that decide seamless.lock, read as bytes, and the light path their digest gives.

What ``check`` reads is seamless.yaml, the preset catalogs it loads (the built-in one and those
under ``presets:``), seamless.lock, and the code that reads them (the release and its source
files, :func:`code_stamp`). When resolve (or
check's full path) finds a lock in sync with its inputs, and a plain resolve would leave it as it
is (:func:`qmtl_lock.check.lock_digest` says when), it records the digest of all of these, the
lock's whole text included, in ``.seamless/in-sync.digests`` beside seamless.yaml. When the digest
of what is on disk now is recorded there, no byte that check reads has changed since: check has no
drift to report and a plain resolve nothing to do but look for the pinned snapshots, and both
answer without building a model (pydantic's import alone costs more than the rest of ``check``).
When anything differs, or nothing is recorded (a fresh clone), they take the full path, which
reports exactly what changed.

The digests live beside the store's folder rather than in the lock, so that the lock's format
and bytes stay as they are: a digest line in the lock would change with every qmtl-lock release
and every edit of the built-in catalog (failing ``resolve --locked``), and two branches that each
change the lock would always conflict on it. The folder is local state (``qmtl-lock init``
git-ignores it): a digest there was computed on this machine, never taken from a pull request.

This module imports nothing heavy; :func:`find_manifest` and the file names live here so that the
command line can use them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmtl_lock._version import __version__

if TYPE_CHECKING:
    from qmtl_engine import Store

MANIFEST_NAME = "seamless.yaml"
LOCK_NAME = "seamless.lock"
DEFAULT_STORE = ".seamless/store"
STATE_DIR = ".seamless"  # the project's local state beside seamless.yaml (git-ignored)
DIGESTS_NAME = "in-sync.digests"
KEEP_DIGESTS = 8  # the last few, so that switching between branches keeps the light path

# Bumped when what the digest covers changes, so that no old digest can match a new scheme.
_SCHEME = b"qmtl-lock inputs digest 1"
_FINGERPRINT = re.compile(rb"^ +dataset_fingerprint: (sha256:[0-9a-f]{64})$", re.MULTILINE)
_VIOLATION = re.compile(rb"^ +violation: (.*)$", re.MULTILINE)
_STORE_LINE = re.compile(rb"^store:[ \t]+([^\s#'\"{}\[\]&*!|>%@`,?-][^\s#]*)[ \t]*(?:#.*)?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def line_ends(raw: bytes) -> bytes:
    """``raw`` with ``\\n`` line ends, as Python reads text files (git may rewrite them on
    checkout, ``core.autocrlf``, and resolve compares the lock's text read that way)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def text_bytes(raw: bytes) -> bytes:
    """A YAML input as its reader sees it: no leading byte-order mark, ``\\n`` line ends."""
    return line_ends(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)


@dataclass(frozen=True)
class Inputs:
    """The bytes that decide a lock, besides the lock itself (see the module docstring)."""

    manifest: bytes
    catalogs: tuple[tuple[str, bytes], ...]  # user catalogs, as seamless.yaml names them
    builtin: bytes  # the built-in catalog

    @property
    def catalog_names(self) -> list[str]:
        return [name for name, _ in self.catalogs]

    def digest(self, lock_text: bytes) -> str:
        """``sha256:…`` of these inputs and the lock's text. Every part is length-prefixed, so
        no two different inputs run together alike."""
        parts = [_SCHEME, __version__.encode(), code_stamp(), self.manifest, self.builtin,
                 str(len(self.catalogs)).encode()]
        for name, data in self.catalogs:
            parts += [name.encode(), data]
        parts.append(line_ends(lock_text))
        h = hashlib.sha256()
        for part in parts:
            h.update(b"%d:" % len(part))
            h.update(part)
        return "sha256:" + h.hexdigest()


def code_stamp() -> bytes:
    """The Python files of qmtl-lock and of its engine, by path, size and modification time.
    The code decides check's verdict as much as the files do, and a checkout is edited without
    a new version: a digest recorded by other code must not match. Stat calls only (a few
    hundred microseconds); the digests stay on this machine, so times may go into them."""
    import qmtl_engine

    found: list[str] = []
    for root in (Path(__file__).parent, Path(qmtl_engine.__file__).parent):
        _stat_sources(str(root), found)
    return "\n".join(sorted(found)).encode()


def _stat_sources(folder: str, found: list[str]) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir() and entry.name != "__pycache__":
                _stat_sources(entry.path, found)
            elif entry.name.endswith(".py"):
                st = entry.stat()
                found.append(f"{entry.path} {st.st_size} {st.st_mtime_ns}")


def read_inputs(manifest: Path) -> Inputs | None:
    """The inputs of the project of ``manifest`` as they are on disk now; None when a file
    cannot be read or the catalog list cannot be told (the full path then reports why)."""
    from qmtl_engine import builtin_catalog_bytes

    try:
        text = text_bytes(manifest.read_bytes())
        names = _catalog_names(text, manifest)
        if names is None:
            return None
        # as qmtl_lock.manifest loads them: relative to the folder of seamless.yaml
        catalogs = tuple((n, text_bytes((manifest.parent / n).read_bytes())) for n in names)
        return Inputs(text, catalogs, text_bytes(builtin_catalog_bytes()))
    except OSError:
        return None


def _catalog_names(text: bytes, manifest: Path) -> list[str] | None:
    """The ``presets:`` list of seamless.yaml. Without the word there is none, so most projects
    skip the YAML parse. A list told wrongly (an escaped key) cannot hide anything: resolve
    records the digest of the list the full loader used, which would then differ."""
    if b"presets" not in text:
        return []
    data = _yaml_mapping(text, manifest)
    names = data.get("presets", []) if data is not None else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def _yaml_mapping(text: bytes, path: Path) -> dict[str, Any] | None:
    """``text`` read by the engine's loader (the one the full path uses); None unless it is a
    mapping."""
    from qmtl_engine import YAMLFileError, load_yaml

    try:
        data = load_yaml(text.decode("utf-8"), str(path)).data
    except (YAMLFileError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class CurrentLock:
    """A lock recorded in sync with the inputs on disk."""

    inputs: Inputs
    text: bytes  # the lock's text

    def fingerprints(self) -> set[str]:
        """Every ``dataset_fingerprint`` the lock pins. Its text is what resolve rendered, so
        each entry's fingerprint is on a line of its own; a matching line elsewhere (a key of a
        ``live:`` block) only adds a name to look up."""
        return {m.decode() for m in _FINGERPRINT.findall(line_ends(self.text))}

    def may_record_violation(self) -> bool:
        """False only when every ``violation:`` line of the lock says null (so no SLA entry
        records one, whatever else such a line belongs to)."""
        return any(m.group(1) != b"null" for m in _VIOLATION.finditer(line_ends(self.text)))


def digests_path(manifest: Path) -> Path:
    return manifest.parent / STATE_DIR / DIGESTS_NAME


def recorded_digests(manifest: Path) -> list[str]:
    """The digests recorded in sync for the project of ``manifest``, newest first."""
    try:
        lines = digests_path(manifest).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in lines if _DIGEST.match(line)]


def record_digest(manifest: Path, digest: str, *, create: bool) -> None:
    """Record ``digest`` as in sync (atomically; the oldest beyond :data:`KEEP_DIGESTS` go).
    Without ``create`` nothing is written unless the project's state folder exists. A folder
    that cannot be written only costs the light path, so that is not an error."""
    path = digests_path(manifest)
    if not create and not path.parent.is_dir():
        return
    kept = [digest, *(d for d in recorded_digests(manifest) if d != digest)][:KEEP_DIGESTS]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(f"{d}\n" for d in kept), encoding="ascii")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def current_lock(manifest: Path) -> CurrentLock | None:
    """The lock beside ``manifest`` when the digest of it and of the inputs as they are now is
    recorded in sync, so that ``check`` finds no drift; None otherwise."""
    recorded = recorded_digests(manifest)
    if not recorded:
        return None
    try:
        text = manifest.with_name(LOCK_NAME).read_bytes()
    except OSError:
        return None
    inputs = read_inputs(manifest)
    if inputs is None or inputs.digest(text) not in recorded:
        return None
    return CurrentLock(inputs, text)


def nothing_to_resolve(manifest: Path) -> bool:
    """True when a plain ``qmtl-lock resolve`` (no datasets named, no option that changes what it
    does) would change nothing and fetch nothing: the lock is current and the store holds every
    snapshot it pins. Reads no data, only looks the snapshot manifests up."""
    current = current_lock(manifest)
    if current is None:
        return False
    text = current.inputs.manifest
    url = plain_store(text)  # lock_digest made sure that this is the store, when it is not None
    setting = (store_setting_in(text, manifest) if url is None
               else StoreSetting(resolve_store_url(url, manifest.parent)))
    if setting is None:
        return False
    fingerprints = sorted(current.fingerprints())
    root = setting.local_root()
    if root is not None:  # a folder: looked up without fsspec, which costs more than the rest
        from qmtl_engine import snapshot_key

        return all(os.path.isfile(os.path.join(root, snapshot_key(fp))) for fp in fingerprints)
    store = setting.open()
    return all(store.has_snapshot(fp) for fp in fingerprints)


def plain_store(text: bytes) -> str | None:
    """The ``store`` of seamless.yaml ``text`` when one line at the left margin names it with a
    plain value (``store: .seamless/store``, maybe with a comment), as ``qmtl-lock init`` writes
    it; else None. Read without YAML, which a no-op resolve then need not import; resolve records
    no digest when this says anything but what the manifest's model holds."""
    lines = [line for line in text.split(b"\n") if line.startswith(b"store")]
    match = _STORE_LINE.match(lines[0]) if len(lines) == 1 else None
    return match.group(1).decode("utf-8", "replace") if match else None


@dataclass(frozen=True)
class StoreSetting:
    """The store a project names (``store:`` in seamless.yaml, a URL or ``{url, options}``) and
    the cache it reads through (``cache:``), relative paths taken from seamless.yaml's folder.

    ``options`` are as written: keys ending in ``_env`` still name environment variables, which
    the engine reads only when :meth:`open` builds the store. ``cache`` is a folder, None for
    the default one, False for none.
    """

    url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    cache: str | bool | None = None

    def local_root(self) -> str | None:
        """The folder of a store on this machine's disk named by a plain path or ``file://``
        URL with no options; None for any other store."""
        if self.options:
            return None
        url = self.url.removeprefix("file://")
        return url if url.startswith("/") and "://" not in url else None

    def open(self) -> Store:
        """The engine's store (raises InputError for an option whose variable is not set)."""
        from qmtl_engine import Store

        return Store(self.url, storage_options=dict(self.options), cache=self.cache)


def store_setting(store: str | Mapping[str, Any], cache: str | bool | None,
                  base: Path) -> StoreSetting:
    """The :class:`StoreSetting` for the values of ``store:`` and ``cache:`` in the
    seamless.yaml of folder ``base`` (``store`` a URL or path, or ``{url, options}``)."""
    if isinstance(store, str):
        url, options = store, {}
    else:
        url, options = str(store.get("url", DEFAULT_STORE)), dict(store.get("options") or {})
    if isinstance(cache, str):
        folder = Path(cache).expanduser()
        cache = str(folder if folder.is_absolute() else (base / folder).resolve())
    return StoreSetting(resolve_store_url(url, base), options, cache)


def store_setting_in(text: bytes, manifest: Path) -> StoreSetting | None:
    """The store that seamless.yaml (``text``, read from ``manifest``) names, as
    :attr:`qmtl_lock.manifest.LoadedManifest.store_setting` gives it, without validating the
    rest; None when the file is not YAML or its ``store`` or ``cache`` is not of their types."""
    data = _yaml_mapping(text_bytes(text), manifest)
    if data is None:
        return None
    store, cache = data.get("store", DEFAULT_STORE), data.get("cache")
    if isinstance(store, dict):
        if not isinstance(store.get("url"), str) or not isinstance(store.get("options", {}),
                                                                     dict):
            return None
    elif not isinstance(store, str):
        return None
    if cache is not None and not isinstance(cache, str | bool):
        return None
    return store_setting(store, cache, manifest.parent)


def resolve_store_url(url: str, base: Path) -> str:
    """The store a project names: URLs and absolute paths as they are, a relative path taken
    from the folder of seamless.yaml (so commands run from anywhere find the same store)."""
    if "://" in url or url.startswith("/"):
        return url
    return str((base / url).resolve())


def find_manifest(start: Path | None = None) -> Path | None:
    """The nearest seamless.yaml in ``start`` (default: the current folder) or its parents,
    as git and uv find their files; None when there is none up to the file system's root."""
    start = start or Path(".")
    here = start.resolve()
    for folder in (here, *here.parents):
        candidate = folder / MANIFEST_NAME
        if candidate.is_file():  # as the user would write it from ``start``: ../seamless.yaml
            return start / os.path.relpath(candidate, here)
    return None
