"""qmtl-lock: pin market data the way a lockfile pins packages.

Public API::

    from qmtl_lock import Lock, MaterializeSeamlessJob
    lock = Lock.open("seamless.lock")
    table = lock.load("btc_1m", "BTCUSDT")     # fingerprint checked on read

Names are imported lazily so that ``qmtl-lock check`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmtl_lock._version import __version__

_EXPORTS = {
    "Lock": "qmtl_lock.runtime",
    "MaterializeSeamlessJob": "qmtl_lock.materialize_job",
    "MaterializeReport": "qmtl_lock.materialize_job",
    "resolve": "qmtl_lock.resolve",
    "check": "qmtl_lock.check",
    "verify": "qmtl_lock.verify",
    "load_manifest": "qmtl_lock.manifest",
    "read_lock": "qmtl_lock.lockfile",
}
_ERRORS = {
    "QmtlLockError", "InputError", "IntegrityError", "MaterializationError",
    "FingerprintMismatch", "ContractMismatch", "ConformanceError", "SLAExceeded",
    "SourceError", "ManifestError", "LockfileError", "LockVersionError", "ObjectMissing",
    "ObjectCorrupted", "UpstreamChanged", "LockOutOfDate", "PresetError", "RangeError",
    "StoreError",
}

if TYPE_CHECKING:
    from qmtl_lock.check import check
    from qmtl_lock.errors import (
        ConformanceError,
        ContractMismatch,
        FingerprintMismatch,
        InputError,
        IntegrityError,
        LockfileError,
        LockOutOfDate,
        LockVersionError,
        ManifestError,
        MaterializationError,
        ObjectCorrupted,
        ObjectMissing,
        PresetError,
        QmtlLockError,
        RangeError,
        SLAExceeded,
        SourceError,
        StoreError,
        UpstreamChanged,
    )
    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.manifest import load_manifest
    from qmtl_lock.materialize_job import MaterializeReport, MaterializeSeamlessJob
    from qmtl_lock.resolve import resolve
    from qmtl_lock.runtime import Lock
    from qmtl_lock.verify import verify


def __getattr__(name: str) -> Any:
    import importlib

    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("qmtl_lock.errors"), name)
    raise AttributeError(f"module 'qmtl_lock' has no attribute {name!r}")


__all__ = [
    "ConformanceError",
    "ContractMismatch",
    "FingerprintMismatch",
    "InputError",
    "IntegrityError",
    "Lock",
    "LockOutOfDate",
    "LockVersionError",
    "LockfileError",
    "ManifestError",
    "MaterializationError",
    "MaterializeReport",
    "MaterializeSeamlessJob",
    "ObjectCorrupted",
    "ObjectMissing",
    "PresetError",
    "QmtlLockError",
    "RangeError",
    "SLAExceeded",
    "SourceError",
    "StoreError",
    "UpstreamChanged",
    "__version__",
    "check",
    "load_manifest",
    "read_lock",
    "resolve",
    "verify",
]
