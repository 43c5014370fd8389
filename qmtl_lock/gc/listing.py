"""What the store holds, as gc plans from it: the store's inventory, the objects each snapshot
names, and the pins projects registered. The store layout itself lives in
:mod:`qmtl_engine.store` alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qmtl_engine import InputError, QmtlLockError

from qmtl_lock.redact import redact_text

if TYPE_CHECKING:
    from qmtl_engine import Store, StoredFile, StoredJob, StoredLease, StoredPin


@dataclass(frozen=True)
class StoredSnapshot:
    file: StoredFile
    objects: tuple[str, ...] | None  # the digests it names; None when it cannot be read


@dataclass(frozen=True)
class StoreListing:
    snapshots: Mapping[str, StoredSnapshot] = field(default_factory=dict)  # by fingerprint
    objects: Mapping[str, StoredFile] = field(default_factory=dict)  # by digest
    jobs: Sequence[StoredJob] = ()
    temporaries: Sequence[StoredFile] = ()  # .tmp-* files of interrupted writes
    leases: Sequence[StoredLease] = ()  # held by running resolves, or left by dead ones


def list_store(store: Store) -> StoreListing:
    """Every lease, snapshot (with the objects it names), object, job and temporary in the store.

    The leases are listed first, so every file of a resolve that held a lease by then is in the
    listing as written after that lease began; one that takes a lease later is caught when
    :func:`~qmtl_lock.gc.apply.apply_gc` looks at the leases again before deleting.
    """
    store.forget_listings()  # s3fs would answer from listings cached before the gc lock
    leases = store.leases()
    found = store.inventory()
    snapshots = {fp: StoredSnapshot(f, _objects_named(store, fp))
                 for fp, f in found.snapshots.items()}
    return StoreListing(snapshots, found.objects, found.jobs, found.temporaries, leases)


def _objects_named(store: Store, fingerprint: str) -> tuple[str, ...] | None:
    try:
        return tuple(p.digest for p in store.get_snapshot(fingerprint).partitions)
    except QmtlLockError:
        return None  # the planner then deletes no object: it cannot tell which are needed


def read_pins(store: Store) -> tuple[StoredPin, ...]:
    """Every project's registered pins (``pins/*/*.json``), listed afresh.

    Raises :class:`InputError` (exit 2) when one cannot be read: gc cannot tell what that
    project pins, so it must not delete anything.
    """
    pins = store.pins()
    for pin in pins:
        if pin.problem is not None:
            raise unreadable_pin(store, pin)
    return pins


def unreadable_pin(store: Store, pin: StoredPin) -> InputError:
    return InputError(
        f"the registered pins {pin.path} cannot be read: {pin.problem}; gc deletes nothing "
        f"while it cannot tell what {pin.label} pins", where=f"store {redact_text(store.url)}",
        fix=f"push them again from that project (`qmtl-lock pins push --project {pin.project} "
        f"--ref {pin.ref}`), or, if that branch is retired, drop them with "
        f"`qmtl-lock pins remove --project {pin.project} --ref {pin.ref}`")
