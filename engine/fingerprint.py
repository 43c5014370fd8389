"""Content fingerprints: partition digests over canonical column bytes, and dataset fingerprints.

The exact byte layout is specified in ``docs/fingerprint.md``; any change to it is a breaking
change that bumps ``FINGERPRINT_ALGORITHM`` and the lock version. Hashing works on whole column
buffers with numpy, never row by row.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy and pyarrow load only when something is hashed
    import numpy as np
    import pyarrow as pa

FINGERPRINT_ALGORITHM = "qmtl-fp-1"
_PREFIX = "sha256:"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CANONICAL_NAN = 0x7FF8000000000000
_NEGATIVE_ZERO = 0x8000000000000000


@dataclass(frozen=True, order=True)
class Fingerprint:
    """A content identity ``sha256:<64 hex>``; equality is the only thing it is for."""

    value: str

    def __post_init__(self) -> None:
        if not _DIGEST_RE.match(self.value):
            raise ValueError(f"not a sha256 fingerprint: {self.value!r}")

    @property
    def hex(self) -> str:
        return self.value[len(_PREFIX):]

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_hasher(cls, hasher: Any) -> Fingerprint:
        return cls(_PREFIX + hasher.hexdigest())


def is_fingerprint(text: object) -> bool:
    return isinstance(text, str) and bool(_DIGEST_RE.match(text))


def _type_tag(typ: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(typ):
        return f"timestamp[{typ.unit}, tz={typ.tz}]" if typ.tz else f"timestamp[{typ.unit}]"
    return str(typ)


def _column_values(arr: pa.Array) -> np.ndarray:
    """Little-endian value bytes of a column, with nulls zeroed and floats canonicalized.

    Read straight from the value buffer (:func:`qmtl_engine.arrow_np.values`), not with
    ``Array.to_numpy``, which imports pandas."""
    import numpy as np
    import pyarrow as pa
    from qmtl_engine import arrow_np

    typ = arr.type
    if pa.types.is_timestamp(typ) or pa.types.is_integer(typ):
        # a view, not a cast: the same int64 values, and pyarrow.compute is not imported
        storage = arr.view(pa.int64()) if pa.types.is_timestamp(typ) else arr
        # a view when already little-endian int64 without nulls; nulls as 0
        return np.asarray(arrow_np.values(storage, null=0), dtype="<i8")
    if pa.types.is_floating(typ):
        # widen in Arrow: numpy would trap on signalling NaNs
        wide = arr.cast(pa.float64()) if typ != pa.float64() else arr
        # a null hashes as 0.0 (its validity byte tells)
        values = np.array(arrow_np.values(wide, null=0.0), dtype="<f8", copy=True)
        bits = values.view("<u8")
        bits[bits == np.uint64(_NEGATIVE_ZERO)] = 0  # on the bits: no float op, so no FP traps
        bits[np.isnan(values)] = np.uint64(_CANONICAL_NAN)
        return bits
    raise TypeError(f"no canonical byte form for column type {typ}")


def partition_digest(table: pa.Table) -> Fingerprint:
    """sha256 over the canonical bytes of every column of one partition, in table order.

    Layout per column: the column header (UTF-8 JSON ``[name, type, rows, null_count]``) and a
    newline, then, if there are nulls, one validity byte per row (1 = value, 0 = null), then the
    values as little-endian 8-byte words.
    """
    import numpy as np
    import pyarrow as pa
    from qmtl_engine import arrow_np

    hasher = hashlib.sha256()
    hasher.update(f"{FINGERPRINT_ALGORITHM}/partition\n".encode())
    for name, column in zip(table.column_names, table.columns, strict=True):
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        header = json.dumps([name, _type_tag(arr.type), len(arr), arr.null_count],
                            separators=(",", ":"))
        hasher.update(header.encode() + b"\n")
        if arr.null_count:  # one byte per row, 1 where there is a value
            hasher.update(arrow_np.valid(arr).view(np.uint8).tobytes())
        hasher.update(np.ascontiguousarray(_column_values(arr)).data)
    return Fingerprint.from_hasher(hasher)


@dataclass(frozen=True)
class PartitionRef:
    """One partition of a snapshot: its window, its row count and its content digest."""

    start: int
    end: int
    rows: int
    digest: Fingerprint


@dataclass(frozen=True)
class SnapshotHeader:
    """What a dataset fingerprint covers besides the partitions."""

    contract: str
    preset: str
    symbol: str
    interval_ms: int
    coverage_start: int
    coverage_end: int
    adjustment: str = "raw"  # raw | splits | splits_dividends (qmtl_engine.adjust)

    def canonical(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "algorithm": FINGERPRINT_ALGORITHM,
            "contract": self.contract,
            "preset": self.preset,
            "symbol": self.symbol,
            "interval_ms": self.interval_ms,
            "coverage": [self.coverage_start, self.coverage_end],
        }
        # Only adjusted bars say so: the header of raw bars, and so every fingerprint written
        # before adjustment existed, stays byte for byte what it was (docs/fingerprint.md §3).
        if self.adjustment != "raw":
            doc["adjustment"] = self.adjustment
        return doc


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def dataset_fingerprint(header: SnapshotHeader, partitions: Iterable[PartitionRef]) -> Fingerprint:
    """sha256 over the canonical JSON of the header and the ordered partition list."""
    doc = header.canonical()
    doc["partitions"] = [[p.start, p.end, p.rows, p.digest.value] for p in partitions]
    return Fingerprint(_PREFIX + hashlib.sha256(canonical_json(doc)).hexdigest())
