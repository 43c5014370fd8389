"""``pins``: register in a shared store what this project's seamless.lock pins, so that gc run
from any project on that store keeps it (DESIGN §6).

``pins push`` writes ``pins/<project>/<ref>.json``: every fingerprint the lock pins (with the
datasets and symbols that pin it), the lock's digest, the project, the ref, the commit and the
time pushed. It is one small file, replaced by the next push of the same project and ref; CI
runs it on protected branches after the lock is committed, and ``pins remove`` drops the pins of
a retired branch. gc keeps every registered pin (:mod:`qmtl_lock.gc`).

Names, when not given:

- the project is the name of the git remote ``origin`` (the last part of its URL, without
  ``.git``), else the name of the work tree's folder; a seamless.yaml below the top of the
  repository adds its folder (``mono-strategies-a`` for ``strategies/a/seamless.yaml`` in
  ``mono``), so two projects of one repository never share a name. Outside git it is the name of
  seamless.yaml's folder.
- the ref is the branch checked out; on a detached HEAD (as CI checks out) ``$GITHUB_REF_NAME``
  or ``$CI_COMMIT_REF_NAME``; otherwise pass ``--ref``.

Both become one key segment: every character other than a letter, a digit, ``.``, ``_`` or
``-`` becomes ``-`` (``release/1.2`` is ``release-1.2``); the file keeps the ref as git named it.

The push takes a lease on the store, like a resolve, so it never lands in the middle of a gc
(it waits for the gc to finish), then checks that every snapshot it pins is in the store.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qmtl_engine import InputError, StoreError, iso

from qmtl_lock.redact import redact_text

if TYPE_CHECKING:
    from qmtl_engine import Store, StoredPin

    from qmtl_lock.git import GitFile
    from qmtl_lock.manifest import LoadedManifest

# CI systems that check out a detached HEAD, and the variable naming the branch they build
REF_VARIABLES = ("GITHUB_REF_NAME", "CI_COMMIT_REF_NAME")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class PinPush:
    """What ``pins push`` registered."""

    project: str
    ref: str
    path: str  # the pin file, as the store names it
    fingerprints: int
    lock_digest: str
    pushed_at: str

    def to_dict(self) -> dict[str, object]:
        return {"project": self.project, "ref": self.ref, "path": self.path,
                "fingerprints": self.fingerprints, "lock_digest": self.lock_digest,
                "pushed_at": self.pushed_at}


def key_name(text: str) -> str:
    """``text`` as one segment of a store key (see the module docstring); "" when nothing is
    left of it."""
    return _UNSAFE.sub("-", text.strip()).strip("-.")[:128]


def push_pins(manifest_path: str | Path = "seamless.yaml", *, project: str | None = None,
              ref: str | None = None, now_ms: int | None = None,
              on_wait: Callable[[str], None] | None = None) -> PinPush:
    """Register what the project's seamless.lock pins in its store, as
    ``pins/<project>/<ref>.json``; see the module docstring for the default names.

    Raises :class:`InputError` (exit 2) for a missing lock or a name that cannot be told or
    used, :class:`~qmtl_engine.StoreBusy` when a gc holds the store too long, and
    :class:`StoreError` (exit 3) when the pins were registered but some snapshot they name is
    not in the store (gc cannot keep what is gone).
    """
    from qmtl_engine import Store, pin_bytes

    from qmtl_lock.gc.keep import lock_pins
    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.resolve import clock_from_env

    loaded, git = _project(manifest_path)
    lock_path = loaded.lock_path
    if not lock_path.exists():
        raise InputError(f"{lock_path} does not exist: there is nothing to register",
                         where=str(lock_path), fix="run `qmtl-lock resolve` and commit the lock")
    pins = lock_pins(read_lock(lock_path))
    digest = "sha256:" + hashlib.sha256(lock_path.read_bytes()).hexdigest()
    name = _name("--project", project if project is not None else default_project(loaded, git))
    raw_ref = ref if ref is not None else default_ref(git)
    ref_key = _name("--ref", raw_ref)
    pushed_at = iso(now_ms if now_ms is not None else clock_from_env().now_ms())
    commit = git.commit("HEAD") if git is not None and git.has_head() else None
    store = Store(loaded.store_url)
    path = store.pin_path(name, ref_key)
    with store.lease(f"pins push {name}@{ref_key}", on_wait=on_wait):
        store.put_pin(name, ref_key, pin_bytes(project=name, ref=raw_ref, fingerprints=pins,
                                               lock_digest=digest, pushed_at=pushed_at,
                                               commit=commit))
        missing = sorted(fp for fp in pins if not store.has_snapshot(fp))
    if missing:
        raise StoreError(
            f"registered the pins of project {name}@{ref_key}, but {len(missing)} of the "
            f"{len(pins)} snapshots the lock pins are not in the store (first {missing[0]}): "
            "gc cannot keep what is gone", url=store.url, path=store.display(path),
            fix="run `qmtl-lock resolve --frozen` against this store to rebuild them, then "
            "`qmtl-lock pins push` again")
    return PinPush(name, ref_key, store.display(path), len(pins), digest, pushed_at)


def list_pins(manifest_path: str | Path = "seamless.yaml") -> tuple[Store, tuple[StoredPin, ...]]:
    """The project's store and every pin registered in it (unreadable ones included, each
    with its ``problem``)."""
    from qmtl_engine import Store

    loaded, _ = _project(manifest_path, need_git=False)
    store = Store(loaded.store_url)
    return store, store.pins()


def remove_pins(manifest_path: str | Path = "seamless.yaml", *, project: str,
                ref: str) -> tuple[Store, bool]:
    """Unregister the pins of ``project`` on ``ref`` (a retired branch); whether there were any.
    ``ref`` may be the branch name or its key (``release/1.2`` or ``release-1.2``)."""
    from qmtl_engine import Store

    loaded, _ = _project(manifest_path, need_git=False)
    store = Store(loaded.store_url)
    return store, store.remove_pin(_name("--project", project), _name("--ref", ref))


def default_project(loaded: LoadedManifest, git: GitFile | None) -> str:
    """The project's name when ``--project`` is not given (see the module docstring)."""
    if git is None:
        return loaded.root.resolve().name
    url = git.remote_url("origin")
    top = git.top()
    base = _repository_name(url) if url else top.name
    below = Path(git.path).parent.as_posix()
    return base if below in ("", ".") else f"{base}-{below}"


def default_ref(git: GitFile | None) -> str:
    """The ref when ``--ref`` is not given: the branch, else the CI's branch variable."""
    branch = git.branch() if git is not None else None
    if branch:
        return branch
    for variable in REF_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    where = "HEAD is detached" if git is not None else "this project is not in a git repository"
    raise InputError(f"cannot tell which ref these pins are for: {where} and none of "
                     f"{', '.join('$' + v for v in REF_VARIABLES)} is set",
                     fix="pass --ref NAME (the branch the lock was committed on)")


def _repository_name(url: str) -> str:
    """``research`` from ``git@github.com:acme/research.git`` or ``https://…/research``."""
    tail = re.split(r"[/:\\]", url.rstrip("/"))[-1]
    return tail.removesuffix(".git")


def _name(option: str, text: str) -> str:
    key = key_name(text)
    if not key:
        raise InputError(f"{option} {text!r} leaves no name for the store key",
                         fix=f"pass {option} with letters or digits in it")
    return key


def _project(manifest_path: str | Path, *, need_git: bool = True,
             ) -> tuple[LoadedManifest, GitFile | None]:
    from qmtl_lock.git import GitFile
    from qmtl_lock.manifest import load_manifest

    loaded = load_manifest(manifest_path)
    git = GitFile.find(loaded.lock_path) if need_git else None
    return loaded, git


def describe_pin(pin: StoredPin) -> str:
    """One line of ``pins list``."""
    if pin.problem is not None:
        return f"{pin.path}: cannot be read: {pin.problem}"
    commit = f", commit {pin.commit[:12]}" if pin.commit else ""
    return (f"{pin.label}: {len(pin.fingerprints)} fingerprint"
            f"{'' if len(pin.fingerprints) == 1 else 's'}, pushed {pin.pushed_at}{commit} "
            f"({pin.path})")


def store_line(store: Store) -> str:
    return f"store {redact_text(store.url)}"
