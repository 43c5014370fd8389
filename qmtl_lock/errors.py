"""Every error qmtl-lock raises, under one root.

Engine errors are defined in ``qmtl_engine.errors`` and re-exported here; this module adds the
manifest and lockfile branches. The command line maps each branch to an exit code
(shown on the right)::

    QmtlLockError
    ├── InputError                      exit 2: fix your input
    │   ├── YAMLFileError               a YAML file is malformed or has an invalid value
    │   │   ├── ManifestError           seamless.yaml (file, line, key)
    │   │   └── LockfileError           seamless.lock (file, line, key)
    │   │       └── LockVersionError    the lock was written by a newer qmtl-lock
    │   ├── PresetError                 unknown preset, invalid catalog
    │   ├── RangeError                  impossible time range
    │   ├── ProjectBusy                 another resolve is writing this project's lock
    │   ├── StoreBusy                   a gc holds the store (or another gc runs on it)
    │   └── GitError                    no git, not a repository, unknown revision (diff, gc)
    ├── IntegrityError                  exit 1: data differs from what was pinned
    │   ├── FingerprintMismatch         recomputed fingerprint != locked fingerprint
    │   │   └── ObjectCorrupted         a store object or manifest does not hash to its name
    │   ├── ContractMismatch            the lock pins another contract version
    │   ├── LockOutOfDate               `resolve --locked` would change the lock
    │   └── ObjectMissing               a store object or snapshot is not there
    └── MaterializationError            exit 3: the data could not be produced
        ├── SourceError                 a source failed
        │   └── MissingDependency       an optional extra is not installed
        ├── ConformanceError            blocking conformance flags
        ├── SLAExceeded                 an SLA budget was exceeded under fail_fast
        ├── StoreError                  the store (or the lock, a report) cannot be written or read
        │   └── StoreUnavailable        the store cannot be reached, refused access or failed
        ├── PullFailed                  `pull` could not bring pinned files into the cache
        └── UpstreamChanged             the source no longer reproduces a pinned fingerprint
    RequestsFailed                      several requests of one resolve failed (each listed);
                                        exit: theirs when they agree, else 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmtl_engine import (
    ConformanceError,
    FingerprintMismatch,
    InputError,
    IntegrityError,
    MaterializationError,
    MissingDependency,
    ObjectCorrupted,
    ObjectMissing,
    PresetError,
    QmtlLockError,
    RangeError,
    SLAExceeded,
    SourceError,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    YAMLFileError,
)


class ManifestError(YAMLFileError):
    """seamless.yaml is malformed or asks for something impossible."""


class LockfileError(YAMLFileError):
    """seamless.lock is malformed."""


class LockVersionError(LockfileError):
    """The lock was written by a newer qmtl-lock than this one."""

    def __init__(self, *, path: str, found: object, supported: int,
                 line: int | None = None) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path} has lock_version {found}; this qmtl-lock reads lock_version {supported} "
            "and will not guess at a newer format",
            path=path, line=line,
            fix="upgrade qmtl-lock (pip install -U qmtl-lock); or, to rebuild the lock with this "
            "version, delete seamless.lock and run `qmtl-lock resolve`",
        )


class ContractMismatch(IntegrityError):
    def __init__(self, *, dataset: str, expected: str, actual: str) -> None:
        self.dataset = dataset
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"dataset {dataset!r} is locked with contract version {actual}, "
            f"but the code requires {expected}",
            where=f"seamless.lock, dataset {dataset}",
            fix=f"set contract_version: {expected} in seamless.yaml and run `qmtl-lock resolve`",
        )


class LockOutOfDate(IntegrityError):
    def __init__(self, changes: list[str]) -> None:
        self.changes = changes
        listing = "\n".join(f"    {c}" for c in changes)
        super().__init__(
            f"seamless.lock is out of date and --locked forbids changing it:\n{listing}",
            fix="run `qmtl-lock resolve` without --locked and commit the new lock",
        )


class GitError(InputError):
    """git could not answer: not a repository, an unknown revision, git not installed.

    Raised by :mod:`qmtl_lock.git`, the one module that runs git (``diff --git``, ``gc``).
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None,
                 revision: str | None = None) -> None:
        self.revision = revision
        super().__init__(what, where=where, fix=fix)


class ProjectBusy(InputError):
    """Another resolve is writing this project's seamless.lock and did not finish in time."""

    def __init__(self, *, path: Path, holder: str, waited_s: float) -> None:
        self.path = path
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"another qmtl-lock resolve is writing this project's seamless.lock ({holder}); "
            f"gave up after waiting {waited_s:g} s",
            where=str(path),
            fix="let it finish, then run your command again (or wait longer with "
                "--lock-timeout SECONDS)")


class RequestsFailed(QmtlLockError):
    """Several requests of one resolve failed; each error is kept, in dataset/symbol order.

    Nothing was written to the lock. The exit code is that of the failures when they agree
    (all bad input, say), else 3.
    """

    def __init__(self, failures: list[tuple[str, str, QmtlLockError]], *, total: int) -> None:
        self.failures = failures
        codes = {exc.exit_code for _, _, exc in failures}
        self.exit_code = codes.pop() if len(codes) == 1 else 3
        blocks = []
        fixes: list[str] = []
        for dataset, symbol, exc in failures:
            what = exc.what.replace("\n", "\n    ")  # a refusal's findings, under its line
            blocks.append(f"  {dataset}/{symbol}: {what}")
            if exc.where:
                blocks.append(f"      where: {exc.where}")
            if exc.fix and exc.fix not in fixes:
                fixes.append(exc.fix)
        fix = "; ".join(fixes) if len(fixes) == 1 else "fix each failure above"
        super().__init__(
            f"{len(failures)} of {total} requests failed; seamless.lock was not changed:\n"
            + "\n".join(blocks),
            fix=f"{fix}; then rerun `qmtl-lock resolve` (finished symbols are kept in the "
            "store)")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["failures"] = [{"dataset": d, "symbol": s, **exc.to_dict()}
                            for d, s, exc in self.failures]
        return data


class UpstreamChanged(MaterializationError):
    def __init__(self, *, dataset: str, symbol: str, expected: str, actual: str) -> None:
        self.dataset = dataset
        self.symbol = symbol
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the source no longer reproduces the locked data: locked {expected}, "
            f"fetched {actual}",
            where=f"dataset {dataset}, symbol {symbol}",
            fix=f"if the provider restated its data (or the lock was edited by hand), accept "
            f"the new data with `qmtl-lock resolve --update {dataset}` and review the diff",
        )


class PullFailed(MaterializationError):
    """Pinned files that ``qmtl-lock pull`` could not bring into the cache because the store
    lacks them or holds them corrupted (``problems``: one line each)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"pull could not bring {len(self.problems)} pinned snapshot(s) into the cache:\n"
            + "\n".join(f"  {p}" for p in self.problems),
            fix="run `qmtl-lock verify` to see what the store lacks and `qmtl-lock repair` to "
            "put it back, then `qmtl-lock pull` again")


__all__ = [
    "ConformanceError",
    "ContractMismatch",
    "FingerprintMismatch",
    "GitError",
    "InputError",
    "IntegrityError",
    "LockOutOfDate",
    "LockVersionError",
    "LockfileError",
    "ManifestError",
    "MaterializationError",
    "MissingDependency",
    "ObjectCorrupted",
    "ObjectMissing",
    "PresetError",
    "PullFailed",
    "QmtlLockError",
    "RangeError",
    "SLAExceeded",
    "SourceError",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "UpstreamChanged",
    "YAMLFileError",
]
