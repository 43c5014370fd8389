"""The Seamless engine of qmtl-lock: presets, sources, conformance, SLA, fingerprint, store.

This module is the engine's public API: the surfaces (``qmtl_lock``) import only the names in
``__all__``, never a submodule. Names load lazily, on first use, so that importing an error class
or a date helper does not pull in pyarrow, fsspec or the pydantic models (``qmtl-lock check`` must
stay light)::

    from qmtl_engine import Engine, Request, Store, load_registry
    store = Store(".seamless/store")
    engine = Engine(store, mode="materialize")
    result = engine.materialize(Request(preset, "BTCUSDT", TimeRange(start, end), "v1"))

The installed package is named ``qmtl_engine`` (from the repository's ``engine/`` folder), so a
user's own ``engine`` package never shadows it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # clock
    "Clock": "clock", "FixedClock": "clock", "SystemClock": "clock",
    # coverage planning
    "closed_before": "coverage", "coverage_end": "coverage",
    # errors
    "ConformanceError": "errors", "FingerprintMismatch": "errors", "InputError": "errors",
    "IntegrityError": "errors", "MaterializationError": "errors", "MissingDependency": "errors",
    "ObjectCorrupted": "errors", "ObjectMissing": "errors", "PresetError": "errors",
    "QmtlLockError": "errors", "RangeError": "errors", "SLAExceeded": "errors",
    "SourceError": "errors", "StoreBusy": "errors", "StoreError": "errors",
    "StoreUnavailable": "errors", "YAMLFileError": "errors", "register_secret": "errors",
    "registered_secrets": "errors",
    # executors: where partition tasks run
    "DaskExecutor": "dask_executor", "Executor": "executor", "LocalExecutor": "executor",
    "default_jobs": "executor",
    # where a store keeps each kind of file
    "object_key": "layout", "snapshot_key": "layout",
    # flags
    "FLAG_NAMES": "flags",
    # calendars
    "get_calendar": "calendars", "is_listed_calendar": "calendar_names",
    # the built-in catalog file (read without the catalog models)
    "builtin_catalog_bytes": "builtin",
    # materialization
    "Engine": "materialize", "MaterializeResult": "materialize", "Plan": "materialize",
    "Request": "materialize", "check_symbols": "materialize",
    # metrics
    "RunMetrics": "metrics",
    # numpy views of Arrow columns that do not import pandas (Array.to_numpy does)
    "numpy_values": "arrow_np",
    # reading pinned data (the strategy path)
    "PinnedReader": "read", "VerifyOutcome": "read", "check_partition": "read",
    "pin_mismatch": "read",
    # presets
    "Catalog": "presets", "OnViolation": "presets", "PresetRegistry": "presets",
    "ResolvedPreset": "presets", "RetentionClass": "presets", "load_registry": "presets",
    # time ranges
    "DAY_MS": "ranges", "PartitionScheme": "ranges", "TimeRange": "ranges", "ceil_to": "ranges",
    "iso": "ranges", "partition_windows": "ranges", "to_ms": "ranges",
    "window_containing": "ranges", "window_name": "ranges",
    # store
    "Snapshot": "store", "SnapshotPartition": "store", "Store": "store",
    "StoreInventory": "store", "StoredFile": "store", "StoredJob": "store",
    # the local read-through cache of remote stores
    "ObjectCache": "cache", "default_cache_dir": "cache",
    # store leases (a running resolve, as gc sees it)
    "LEASE_TIMEOUT_MS": "store", "Lease": "store", "StoredLease": "store",
    # sharing one store: the gc lock and the pins projects register
    "GcLock": "store", "GcLockRecord": "sharing", "StoredPin": "sharing", "pin_bytes": "sharing",
    # YAML with line numbers
    "LocatedYAML": "yamlio", "load_yaml": "yamlio", "pydantic_error": "yamlio",
    "read_yaml_text": "yamlio",
}

if TYPE_CHECKING:
    from qmtl_engine.arrow_np import numpy_values
    from qmtl_engine.builtin import builtin_catalog_bytes
    from qmtl_engine.cache import ObjectCache, default_cache_dir
    from qmtl_engine.calendar_names import is_listed_calendar
    from qmtl_engine.calendars import get_calendar
    from qmtl_engine.clock import Clock, FixedClock, SystemClock
    from qmtl_engine.coverage import closed_before, coverage_end
    from qmtl_engine.dask_executor import DaskExecutor
    from qmtl_engine.errors import (
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
        register_secret,
        registered_secrets,
    )
    from qmtl_engine.executor import Executor, LocalExecutor, default_jobs
    from qmtl_engine.flags import FLAG_NAMES
    from qmtl_engine.layout import object_key, snapshot_key
    from qmtl_engine.materialize import Engine, MaterializeResult, Plan, Request, check_symbols
    from qmtl_engine.metrics import RunMetrics
    from qmtl_engine.presets import (
        Catalog,
        OnViolation,
        PresetRegistry,
        ResolvedPreset,
        RetentionClass,
        load_registry,
    )
    from qmtl_engine.ranges import (
        DAY_MS,
        PartitionScheme,
        TimeRange,
        ceil_to,
        iso,
        partition_windows,
        to_ms,
        window_containing,
        window_name,
    )
    from qmtl_engine.read import PinnedReader, VerifyOutcome, check_partition, pin_mismatch
    from qmtl_engine.sharing import GcLockRecord, StoredPin, pin_bytes
    from qmtl_engine.store import (
        LEASE_TIMEOUT_MS,
        GcLock,
        Lease,
        Snapshot,
        SnapshotPartition,
        Store,
        StoredFile,
        StoredJob,
        StoredLease,
        StoreInventory,
    )
    from qmtl_engine.yamlio import LocatedYAML, load_yaml, pydantic_error, read_yaml_text


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qmtl_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"qmtl_engine.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DAY_MS",
    "FLAG_NAMES",
    "LEASE_TIMEOUT_MS",
    "Catalog",
    "Clock",
    "ConformanceError",
    "DaskExecutor",
    "Engine",
    "Executor",
    "FingerprintMismatch",
    "FixedClock",
    "GcLock",
    "GcLockRecord",
    "InputError",
    "IntegrityError",
    "Lease",
    "LocalExecutor",
    "LocatedYAML",
    "MaterializationError",
    "MaterializeResult",
    "MissingDependency",
    "ObjectCache",
    "ObjectCorrupted",
    "ObjectMissing",
    "OnViolation",
    "PartitionScheme",
    "PinnedReader",
    "Plan",
    "PresetError",
    "PresetRegistry",
    "QmtlLockError",
    "RangeError",
    "Request",
    "ResolvedPreset",
    "RetentionClass",
    "RunMetrics",
    "SLAExceeded",
    "Snapshot",
    "SnapshotPartition",
    "SourceError",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreInventory",
    "StoreUnavailable",
    "StoredFile",
    "StoredJob",
    "StoredLease",
    "StoredPin",
    "SystemClock",
    "TimeRange",
    "VerifyOutcome",
    "YAMLFileError",
    "builtin_catalog_bytes",
    "ceil_to",
    "check_partition",
    "check_symbols",
    "closed_before",
    "coverage_end",
    "default_cache_dir",
    "default_jobs",
    "get_calendar",
    "is_listed_calendar",
    "iso",
    "load_registry",
    "load_yaml",
    "numpy_values",
    "object_key",
    "partition_windows",
    "pin_bytes",
    "pin_mismatch",
    "pydantic_error",
    "read_yaml_text",
    "register_secret",
    "registered_secrets",
    "snapshot_key",
    "to_ms",
    "window_containing",
    "window_name",
]
