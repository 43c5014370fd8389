"""What the locks tell gc to keep: the pins of each kept lock (this project's, and those other
projects registered in the store), and how long the locks in the git history retain each
snapshot. Built from lock values, lock texts and pin records; no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qmtl_engine import QmtlLockError

from qmtl_lock.lockfile import parse_lock

if TYPE_CHECKING:
    from qmtl_engine import StoredPin

    from qmtl_lock.lockfile import Lockfile

# A lock that cannot be parsed (a newer lock_version, a committed merge conflict) still names
# its fingerprints: gc keeps what such a lock might pin rather than guess it pins nothing.
_FINGERPRINT_IN_TEXT = re.compile(r"dataset_fingerprint:\s*[\"']?(sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class KeptLock:
    """A lock whose snapshots gc must keep, and what it pins (fingerprint -> dataset/symbol)."""

    label: str
    pins: Mapping[str, tuple[str, ...]]
    registered: str | None = None  # the pin file in the store, for a project's registered pins

    @classmethod
    def from_lock(cls, label: str, lock: Lockfile) -> KeptLock:
        return cls(label, lock_pins(lock))

    @classmethod
    def from_pin(cls, pin: StoredPin) -> KeptLock:
        """What a project registered in the store (``qmtl-lock pins push``)."""
        return cls(pin.label, dict(pin.fingerprints), registered=pin.path)

    @classmethod
    def from_text(cls, label: str, text: str) -> tuple[KeptLock, str | None]:
        """Parse a lock read from git; one that cannot be parsed still keeps every fingerprint
        its text names. Returns the lock and a warning, if any."""
        try:
            return cls.from_lock(label, parse_lock(text, label)), None
        except QmtlLockError:
            found = sorted(set(_FINGERPRINT_IN_TEXT.findall(text)))
            return cls(label, {fp: ("unreadable lock",) for fp in found}), (
                f"the seamless.lock at {label} could not be parsed; keeping the {len(found)} "
                "fingerprint(s) its text names")


def lock_pins(lock: Lockfile) -> dict[str, tuple[str, ...]]:
    """Every fingerprint ``lock`` pins -> the ``dataset/symbol`` entries that pin it."""
    pins: dict[str, list[str]] = {}
    for name, ds in sorted(lock.datasets.items()):
        for symbol, entry in sorted(ds.symbols.items()):
            pins.setdefault(entry.dataset_fingerprint, []).append(f"{name}/{symbol}")
    return {fp: tuple(who) for fp, who in pins.items()}


@dataclass(frozen=True)
class Retention:
    """How long the locks in the git history said one snapshot is kept."""

    expires_at: int | None  # the newest expires_at any lock gave it; None: no class with a TTL
    retention_class: str | None  # the class behind expires_at
    unreadable_in: str | None = None  # named by a lock at this revision that could not be parsed

    def merge(self, other: Retention) -> Retention:
        newer = other if other.expires_at is not None and (
            self.expires_at is None or other.expires_at > self.expires_at) else self
        return Retention(newer.expires_at, newer.retention_class,
                         self.unreadable_in or other.unreadable_in)


def retention_from_locks(locks: Iterable[tuple[str, str]]) -> dict[str, Retention]:
    """``(revision, lock text)`` pairs -> the :class:`Retention` of every snapshot they name."""
    found: dict[str, Retention] = {}

    def add(fp: str, r: Retention) -> None:
        found[fp] = found[fp].merge(r) if fp in found else r

    for rev, text in locks:
        try:
            lock = parse_lock(text, rev)
        except QmtlLockError:
            for fp in set(_FINGERPRINT_IN_TEXT.findall(text)):
                add(fp, Retention(None, None, unreadable_in=rev))
            continue
        for ds in lock.datasets.values():
            for entry in ds.symbols.values():
                add(entry.dataset_fingerprint, Retention(entry.expires_at, entry.retention_class))
    return found
