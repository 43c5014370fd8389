"""``doctor``: probe the store a project names, one verdict per probe.

- ``reachable``: the store answers and its bucket exists (a local store: where its folder is);
- ``writable``: a probe file under ``doctor/`` can be written and removed;
- ``conditional-writes``: creating one key exclusively twice, the second create is refused
  (``If-None-Match: *`` on S3, ``O_EXCL`` on a local disk). Some S3-compatible servers ignore
  the condition: then two writers racing on one mutable key can overwrite each other;
- ``cache``: the local cache of a remote store can be written.

A store that cannot be reached or written fails (exit 3); conditional writes not honoured, or a
cache that cannot be written, are warnings (exit 1): qmtl-lock works, with less protection or
less speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qmtl_engine import QmtlLockError

from qmtl_lock.manifest import load_manifest

if TYPE_CHECKING:
    from qmtl_engine import Store

Status = Literal["ok", "warn", "fail", "skip"]

IGNORED_RISK = ("two writers racing on one mutable key (a checkpoint, a reference) can overwrite "
                "each other, and leases, pins and the gc lock lose their guarantee")
IGNORED_FIX = ("use a store that honours conditional writes (AWS S3 does; for another server, "
               "look up If-None-Match on PUT in its documentation), or let only one machine at "
               "a time resolve or gc into this store")


@dataclass(frozen=True)
class Probe:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass
class DoctorReport:
    store: str  # the URL, without credentials
    endpoint: str | None  # the service of a remote store
    probes: list[Probe] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """3 when the store cannot be reached or written, 1 for a warning, else 0."""
        statuses = {p.status for p in self.probes}
        return 3 if "fail" in statuses else 1 if "warn" in statuses else 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.exit_code == 0, "store": self.store, "endpoint": self.endpoint,
                "probes": [p.to_dict() for p in self.probes]}


def doctor(manifest_path: str | Path = "seamless.yaml") -> DoctorReport:
    """Probe the store of the project of ``manifest_path``. Raises :class:`InputError` for a bad
    manifest or a store option whose variable is not set; every store failure is a probe."""
    from qmtl_lock.redact import redact_text

    store = load_manifest(manifest_path).open_store()
    report = DoctorReport(redact_text(store.url), store.endpoint if store.remote else None)
    probes = report.probes
    probes.append(_reachable(store))
    if probes[-1].status == "fail":
        probes += [Probe(n, "skip", "not tried: the store is not reachable")
                   for n in ("writable", "conditional-writes")]
    else:
        probes.append(_writable(store))
        probes.append(_conditional(store) if probes[-1].status == "ok" else
                      Probe("conditional-writes", "skip", "not tried: the store is not writable"))
    probes.append(_cache(store))
    return report


def _failed(name: str, exc: BaseException) -> Probe:
    if isinstance(exc, QmtlLockError):
        return Probe(name, "fail", exc.what, exc.fix)
    return Probe(name, "fail", f"{type(exc).__name__}: {exc}",
                 "check the store's permissions and space")


def _reachable(store: Store) -> Probe:
    if not store.remote:
        state = "exists" if store.fs.exists(store.root) else "is made on the first write"
        return Probe("reachable", "ok", f"a folder on this machine: {store.root} ({state})")
    try:
        store.check_reachable()
    except QmtlLockError as exc:
        return _failed("reachable", exc)
    bucket = store.root.strip("/").split("/")[0]
    return Probe("reachable", "ok", f"bucket {bucket} at {store.endpoint} answers")


def _writable(store: Store) -> Probe:
    try:
        store.probe_write()
    except (OSError, QmtlLockError) as exc:
        return _failed("writable", exc)
    return Probe("writable", "ok", "wrote and removed a probe file under doctor/")


def _conditional(store: Store) -> Probe:
    try:
        honoured = store.probe_exclusive_create()
    except (OSError, QmtlLockError) as exc:
        return _failed("conditional-writes", exc)
    how = "If-None-Match: *" if store.remote else "O_EXCL"
    if honoured:
        return Probe("conditional-writes", "ok",
                     f"a second exclusive create of one key was refused ({how} honoured)")
    if honoured is None:
        return Probe("conditional-writes", "warn",
                     f"the store refuses conditional writes ({how}) altogether: {IGNORED_RISK}",
                     IGNORED_FIX)
    return Probe("conditional-writes", "warn",
                 f"the store accepted a second exclusive create of one key: it ignores {how}; "
                 f"{IGNORED_RISK}", IGNORED_FIX)


def _cache(store: Store) -> Probe:
    if not store.remote:
        return Probe("cache", "skip", "not used: the store is on this machine")
    if store.cache is None:
        return Probe("cache", "ok", "disabled (`cache: false`): every read goes to the store")
    try:
        store.cache.probe()
    except OSError as exc:
        return Probe("cache", "warn",
                     f"cannot write to the cache folder {store.cache.root}: {exc.strerror or exc}"
                     "; every read goes to the store",
                     "set `cache:` in seamless.yaml (or QMTL_LOCK_CACHE) to a writable folder")
    return Probe("cache", "ok", f"{store.cache.root} is writable")
