"""Reading pinned data: the engine's strategy path (DESIGN §2).

A strategy reads only snapshots that a lock pins, and gets no byte that was not re-hashed against
the name it is stored under. This module is that path and nothing else: it needs the store, the
fingerprint and the ranges, never sources, conformance, calendars, SLAs or retry machinery, so
the first ``Lock.load`` of a process does not pay for materialization. It never imports pandas
either (pyarrow does, for ``to_numpy`` and for scalars made from Python values).

There is one check for each thing a read can find wrong, and ``load`` and ``verify`` share it:

- the snapshot manifest against its name: :meth:`Store.get_snapshot`;
- each object against its name, and its rows against the manifest: :func:`check_partition`;
- what a lock entry says against the snapshot it pins: :func:`pin_mismatch`.

Every error names the dataset and symbol (when the caller gives them) and the partition.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from qmtl_engine.errors import FingerprintMismatch, IntegrityError, QmtlLockError
from qmtl_engine.ranges import TimeRange
from qmtl_engine.store import Snapshot, SnapshotPartition, Store

if TYPE_CHECKING:  # pyarrow loads when data is read, not when a lock is opened
    import pyarrow as pa

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class VerifyOutcome:
    """Every problem :meth:`PinnedReader.verify` found, and what it hashed."""

    problems: list[QmtlLockError] = field(default_factory=list)
    snapshot: Snapshot | None = None
    rows: int = 0
    bytes_hashed: int = 0


def check_partition(store: Store, snapshot: Snapshot, part: SnapshotPartition, *,
                    dataset: str | None = None, symbol: str | None = None) -> pa.Table:
    """Read one partition of ``snapshot``, verified, or raise naming dataset, symbol, partition.

    The object is checked by :meth:`Store.check_object` (read, canonicalize, hash, compare with
    its name: :class:`ObjectMissing` or :class:`ObjectCorrupted`); its row count must be the
    manifest's (:class:`FingerprintMismatch` otherwise).
    """
    name = snapshot.partition_name(part)
    try:
        table = store.check_object(part.digest, partition=name)
    except IntegrityError as exc:
        exc.locate(dataset=dataset, symbol=symbol)
        raise
    if table.num_rows != part.rows:  # a manifest that hashes to its name but lies about rows
        raise FingerprintMismatch(
            expected=part.digest,
            actual=f"<{table.num_rows} rows where the snapshot manifest says {part.rows}>",
            dataset=dataset, symbol=symbol, partition=name)
    return table


def pin_mismatch(snapshot: Snapshot, *, symbol: str, preset: str | None,
                 coverage: tuple[int, int], rows: int, partitions: int) -> list[str]:
    """The fields of a pin (what a lock entry says about a snapshot) that the snapshot contradicts.

    Names, in this order: ``coverage_bounds``, ``rows``, ``partitions``, ``symbol``, ``preset``.
    An empty list means the pin describes this snapshot.
    """
    h = snapshot.header
    agrees = {
        "coverage_bounds": (h.coverage_start, h.coverage_end) == tuple(coverage),
        "rows": sum(p.rows for p in snapshot.partitions) == rows,
        "partitions": len(snapshot.partitions) == partitions,
        "symbol": h.symbol == symbol,
        "preset": h.preset == preset,
    }
    return [name for name, ok in agrees.items() if not ok]


class PinnedReader:
    """The engine in strategy mode: reads snapshots out of one store, verifying every byte.

    It has no way to fetch or write; ``Engine(mode="strategy")`` delegates its reads here.
    """

    mode: Literal["strategy"] = "strategy"

    def __init__(self, store: Store) -> None:
        self.store = store

    def snapshot(self, fingerprint: str, *, dataset: str | None = None,
                 symbol: str | None = None) -> Snapshot:
        """The manifest of ``fingerprint``, checked against its name by the store."""
        try:
            return self.store.get_snapshot(fingerprint)
        except IntegrityError as exc:
            exc.locate(dataset=dataset, symbol=symbol)
            raise

    def iter_verified(self, fingerprint: str, *, dataset: str | None = None,
                      symbol: str | None = None, window: TimeRange | None = None,
                      snapshot: Snapshot | None = None,
                      ) -> Iterator[tuple[SnapshotPartition, pa.Table]]:
        """Yield each partition of snapshot ``fingerprint``, verified, in order.

        With ``window``, only the partitions that overlap it are read (each still verified).
        Pass ``snapshot`` when it was already read with :meth:`snapshot` or
        :meth:`Store.get_snapshot`; one of another fingerprint raises
        :class:`FingerprintMismatch`.
        """
        snap = snapshot if snapshot is not None else self.snapshot(
            fingerprint, dataset=dataset, symbol=symbol)
        if snap.fingerprint != fingerprint:
            raise FingerprintMismatch(
                expected=fingerprint, actual=snap.fingerprint, dataset=dataset, symbol=symbol,
                partition="snapshot manifest",
                fix="pass the snapshot read for this fingerprint (Store.get_snapshot), or none")
        parts = [p for p in snap.partitions
                 if window is None or TimeRange(p.start, p.end).intersect(window) is not None]
        yield from zip(parts, _in_order(
            lambda part: check_partition(self.store, snap, part, dataset=dataset, symbol=symbol),
            parts), strict=False)

    def verify(self, fingerprint: str, *, dataset: str | None = None,
               symbol: str | None = None) -> VerifyOutcome:
        """Check the manifest and every partition of a snapshot, collecting every problem."""
        outcome = VerifyOutcome()
        try:
            snap = self.snapshot(fingerprint, dataset=dataset, symbol=symbol)
        except IntegrityError as exc:
            outcome.problems.append(exc)
            return outcome
        outcome.snapshot = snap

        def check(part: SnapshotPartition) -> tuple[int, int] | IntegrityError:
            try:  # only the counts are kept: memory stays that of the partitions in flight
                table = check_partition(self.store, snap, part, dataset=dataset, symbol=symbol)
            except IntegrityError as exc:
                return exc
            return table.num_rows, table.nbytes

        with reading_pool():
            checked_all = list(_in_order(check, snap.partitions))
        for checked in checked_all:
            if isinstance(checked, IntegrityError):
                outcome.problems.append(checked)
            else:
                outcome.rows += checked[0]
                outcome.bytes_hashed += checked[1]
        return outcome

    def load(self, fingerprint: str, *, dataset: str | None = None, symbol: str | None = None,
             window: TimeRange | None = None, snapshot: Snapshot | None = None) -> pa.Table:
        """The verified rows of a snapshot as one table (only those in ``window``, if given)."""
        import pyarrow as pa

        with reading_pool():
            tables = [t for _, t in self.iter_verified(
                fingerprint, dataset=dataset, symbol=symbol, window=window, snapshot=snapshot)]
            if not tables:
                return _empty_table()
            table = pa.concat_tables(tables)
            return _rows_within(table, window) if window is not None else table


READ_THREADS = min(4, os.cpu_count() or 1)  # partitions read and hashed at once
_POOL_LOCK = threading.Lock()


@contextmanager
def reading_pool() -> Iterator[None]:
    """Decode into the system allocator rather than pyarrow's default mimalloc for one whole
    read, unless the user chose a pool (``ARROW_DEFAULT_MEMORY_POOL``).

    Measured here on ten years of 1-minute bars (a 252 MB table): ``Lock.load`` peaks at
    592-598 MB with mimalloc, which keeps the freed buffers of every decoded partition, and at
    363-374 MB with the system allocator (or jemalloc), and is no slower. Buffers remember the pool
    they came from, so the table stays valid after the default is put back.
    """
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        yield
        return
    with _POOL_LOCK:
        before = pa.default_memory_pool()
        # Not jemalloc: its background thread aborts a plain Python exit ("terminate called
        # without an active exception") once used; the system allocator peaks as low.
        chosen = pa.system_memory_pool() if before.backend_name == "mimalloc" else None
        if chosen is not None:
            pa.set_memory_pool(chosen)
    try:
        yield
    finally:
        if chosen is not None:
            with _POOL_LOCK:
                pa.set_memory_pool(before)


def _in_order(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``fn`` over ``items``, results in order, with up to :data:`READ_THREADS` running at once
    and no more than that many finished ahead of the consumer (memory stays that of a few
    partitions). Reading a file and hashing its columns release the GIL, so one partition is
    read while the one before is hashed, on every core. An exception is raised in order too."""
    if READ_THREADS == 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="qmtl-lock read") as pool:
        ahead: deque[Future[R]] = deque()
        try:
            for item in items:
                ahead.append(pool.submit(fn, item))
                if len(ahead) > READ_THREADS:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # the consumer stopped (an error, or it had what it wanted): start no more
            for future in ahead:
                future.cancel()


def _rows_within(table: pa.Table, window: TimeRange) -> pa.Table:
    """The rows whose ``ts`` lies in ``window``.

    The mask is built with numpy on the column's buffer and handed to Arrow as a bitmap
    (:mod:`qmtl_engine.arrow_np`): Arrow compute with Python scalars (and ``to_numpy``) would
    import pandas.
    """
    import pyarrow as pa
    from qmtl_engine import arrow_np

    if table.num_rows == 0:
        return table
    values = arrow_np.values(table["ts"])  # int64 epoch ms; ts is never null
    keep = (values >= window.start) & (values < window.end)
    return table.filter(arrow_np.array(keep, pa.bool_()))


def _empty_table() -> pa.Table:
    import pyarrow as pa
    from qmtl_engine.contracts import OHLCV_V1

    names = OHLCV_V1.required_names
    types = [pa.timestamp("ms", tz="UTC")] + [pa.float64()] * (len(names) - 1)
    return pa.Table.from_arrays([pa.nulls(0, t) for t in types], names=list(names))


__all__ = ["PinnedReader", "VerifyOutcome", "check_partition", "pin_mismatch"]
