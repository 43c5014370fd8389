"""The strategy surface: load data through the lock, verified on every read.

There is no code path here that hands out data without recomputing its fingerprint: ``load``
re-hashes every partition it reads and checks the snapshot against the locked fingerprint.
It reads through :class:`qmtl_engine.read.PinnedReader`, so loading never imports sources,
conformance, retry machinery or pandas.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmtl_engine import FingerprintMismatch, InputError, TimeRange, iso, to_ms

from qmtl_lock.errors import ContractMismatch
from qmtl_lock.inputs import (
    DEFAULT_STORE,
    MANIFEST_NAME,
    StoreSetting,
    resolve_store_url,
)
from qmtl_lock.lockfile import DatasetEntry, Lockfile, SymbolEntry, read_lock
from qmtl_lock.project_store import project_store

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from qmtl_engine import PinnedReader, Snapshot


def entry_mismatch(snapshot: Snapshot, dataset: DatasetEntry, symbol: str) -> list[str]:
    """The fields of the lock entry of ``symbol`` that contradict the snapshot it pins.

    The one lock-entry check, shared by :meth:`Lock.load` and ``qmtl-lock verify``: coverage,
    rows, partition count, symbol and preset (see :func:`qmtl_engine.read.pin_mismatch`).
    """
    from qmtl_engine import pin_mismatch

    entry = dataset.symbols[symbol]
    return pin_mismatch(snapshot, symbol=symbol, preset=dataset.request.get("preset"),
                        coverage=entry.coverage_bounds, rows=entry.rows,
                        partitions=entry.partitions)


class Lock:
    """An opened seamless.lock plus the store its data lives in."""

    def __init__(self, path: Path, lockfile: Lockfile, store_url: str, *,
                 store_setting: StoreSetting | None = None) -> None:
        self.path = path
        self.lockfile = lockfile
        self.store_url = store_url
        # the options and cache of the store, when seamless.yaml gives them
        self.store_setting = store_setting or StoreSetting(store_url)
        self._engine: PinnedReader | None = None

    @classmethod
    def open(cls, path: str | Path = "seamless.lock", *,
             store: str | StoreSetting | None = None) -> Lock:
        """Open a lock. The store is ``store`` (a URL, or a setting with options and cache),
        else the one named by the seamless.yaml beside the lock (with its options and cache),
        else ``.seamless/store`` beside it."""
        p = Path(path)
        lockfile = read_lock(p)
        if isinstance(store, StoreSetting):
            setting = store
        elif store is not None:
            setting = StoreSetting(resolve_store_url(store, p.parent))
        else:
            setting = StoreSetting(resolve_store_url(DEFAULT_STORE, p.parent))
            manifest = p.with_name(MANIFEST_NAME)
            if manifest.exists():
                setting = project_store(manifest)
        return cls(p, lockfile, setting.url, store_setting=setting)

    @property
    def engine(self) -> PinnedReader:
        """The engine in strategy mode on the lock's store: it reads and verifies, never fetches."""
        if self._engine is None:
            from qmtl_engine import PinnedReader

            self._engine = PinnedReader(self.store_setting.open())
        return self._engine

    def datasets(self) -> list[str]:
        return sorted(self.lockfile.datasets)

    def symbols(self, dataset: str) -> list[str]:
        return sorted(self._dataset(dataset).symbols)

    def entry(self, dataset: str, symbol: str) -> SymbolEntry:
        ds = self._dataset(dataset)
        if symbol not in ds.symbols:
            raise InputError(f"symbol {symbol!r} is not locked in dataset {dataset!r}",
                             where=str(self.path),
                             fix=f"locked symbols: {', '.join(sorted(ds.symbols))}")
        return ds.symbols[symbol]

    def _dataset(self, dataset: str) -> DatasetEntry:
        if dataset not in self.lockfile.datasets:
            raise InputError(f"dataset {dataset!r} is not in {self.path}", where=str(self.path),
                             fix=f"locked datasets: {', '.join(self.datasets()) or '(none)'}; "
                             "add it to seamless.yaml and run `qmtl-lock resolve`")
        return self.lockfile.datasets[dataset]

    def load(self, dataset: str, symbol: str, *, start: Any = None, end: Any = None) -> pa.Table:
        """The locked rows of ``dataset``/``symbol`` as a pyarrow Table, fingerprint-checked.

        ``start``/``end`` select a slice, which must lie inside the locked coverage. Raises
        :class:`FingerprintMismatch` naming the dataset, symbol and partition if any byte differs
        from the lock (:class:`ObjectCorrupted`, a subclass, when a stored object or manifest no
        longer hashes to its name), :class:`ObjectMissing` if the store lacks the data: the same
        errors ``qmtl-lock verify`` reports.
        """
        entry = self.entry(dataset, symbol)
        window = self._window(dataset, symbol, entry, start, end)
        fingerprint = entry.dataset_fingerprint
        snap = self.engine.snapshot(fingerprint, dataset=dataset, symbol=symbol)
        wrong = entry_mismatch(snap, self._dataset(dataset), symbol)
        if wrong:
            raise FingerprintMismatch(
                expected=fingerprint,
                actual=f"(a snapshot whose {', '.join(wrong)} differ from the lock entry)",
                dataset=dataset, symbol=symbol, partition="snapshot manifest",
                fix="the lock entry does not describe this snapshot; restore the lock from git "
                "or run `qmtl-lock resolve`")
        return self.engine.load(fingerprint, dataset=dataset, symbol=symbol, window=window,
                                snapshot=snap)

    def _window(self, dataset: str, symbol: str, entry: SymbolEntry, start: Any,
                end: Any) -> TimeRange | None:
        if start is None and end is None:
            return None
        lo, hi = entry.coverage_bounds
        s = _ms(start) if start is not None else lo
        e = _ms(end) if end is not None else hi
        if s < lo or e > hi or e <= s:
            raise InputError(
                f"slice [{iso(s)}, {iso(e)}) is outside the locked coverage "
                f"[{iso(lo)}, {iso(hi)}) of {dataset}/{symbol}",
                fix="ask for a slice inside the coverage, or extend the dataset in seamless.yaml "
                "and run `qmtl-lock resolve`")
        return TimeRange(s, e)

    def to_pandas(self, dataset: str, symbol: str, **kwargs: Any) -> pd.DataFrame:
        """:meth:`load` as a pandas DataFrame indexed by ``ts`` (needs pandas)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise InputError("pandas is not installed",
                             fix="pip install 'qmtl-lock[pandas]'") from None
        return self.load(dataset, symbol, **kwargs).to_pandas().set_index("ts")

    def to_polars(self, dataset: str, symbol: str, **kwargs: Any) -> Any:
        """:meth:`load` as a polars DataFrame (needs polars)."""
        try:
            import polars as pl
        except ImportError:
            raise InputError("polars is not installed",
                             fix="pip install 'qmtl-lock[polars]'") from None
        return pl.from_arrow(self.load(dataset, symbol, **kwargs))

    def require_fingerprint(self, dataset: str, symbol: str, fingerprint: str) -> None:
        """Raise :class:`FingerprintMismatch` unless the lock pins exactly ``fingerprint``."""
        actual = self.entry(dataset, symbol).dataset_fingerprint
        if actual != fingerprint:
            raise FingerprintMismatch(
                expected=fingerprint, actual=actual, dataset=dataset, symbol=symbol,
                fix="the strategy was written against other data; review `qmtl-lock diff` and "
                "update the expected fingerprint in the strategy if the change is intended")

    def require_contract_version(self, dataset: str, version: str) -> None:
        """Raise :class:`ContractMismatch` unless ``dataset`` is locked with ``version``."""
        actual = self._dataset(dataset).request.get("contract_version")
        if actual != version:
            raise ContractMismatch(dataset=dataset, expected=version, actual=str(actual))


def _ms(value: Any) -> int:
    if isinstance(value, datetime | date | str | int):
        return to_ms(value)
    if hasattr(value, "to_pydatetime"):
        return to_ms(value.to_pydatetime())
    raise InputError(f"not a time: {value!r}", fix="pass a date, datetime or ISO string")
