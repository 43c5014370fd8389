"""numpy <-> Arrow on the data paths, without pandas.

pyarrow imports pandas (when it is installed) the first time a Python or numpy value is turned
into Arrow (``pa.array``, ``pa.scalar``, ``fill_null(0)``, a Python number handed to a compute
function) and for ``Array.to_numpy``: 0.2-0.4 s per process on a quiet machine, paid by every
data command although none of them returns pandas. These helpers build arrays from buffers
(``pa.Array.from_buffers`` over ``pa.py_buffer``) and read them with ``np.frombuffer`` on the
value buffer, honouring the array's offset; nulls are handled explicitly, through the validity
bitmap. The values are the same bytes ``pa.array`` and ``to_numpy`` give, so nothing that is
hashed or stored changes.

Fixed-width types only (integers, floats, timestamps, dates, durations, booleans), plus strings
built from Python lists, which is what the engine converts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa


def _numpy_dtype(typ: pa.DataType) -> np.dtype:
    """The little-endian numpy dtype of the value buffer of a fixed-width Arrow type."""
    import pyarrow as pa

    if pa.types.is_floating(typ):
        return np.dtype(f"<f{typ.bit_width // 8}")
    if pa.types.is_unsigned_integer(typ):
        return np.dtype(f"<u{typ.bit_width // 8}")
    if (pa.types.is_integer(typ) or pa.types.is_timestamp(typ) or pa.types.is_date(typ)
            or pa.types.is_duration(typ) or pa.types.is_time(typ)):
        return np.dtype(f"<i{typ.bit_width // 8}")
    raise TypeError(f"no fixed-width numpy form for Arrow type {typ}")


def _bitmap(bits: np.ndarray) -> pa.Buffer:
    import pyarrow as pa

    return pa.py_buffer(np.packbits(np.asarray(bits, dtype=bool), bitorder="little"))


def _unpack(buffer: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """Bits ``offset .. offset+length`` of a little-endian bitmap as a bool array."""
    packed = np.frombuffer(buffer, dtype=np.uint8)
    return np.unpackbits(packed, count=offset + length, bitorder="little")[offset:].view(bool)


def array(values: Any, type: pa.DataType, *, valid: np.ndarray | None = None) -> pa.Array:
    """An Arrow array of ``type`` holding ``values`` (a numpy array, converted to ``type``'s
    width if needed: the same bytes ``pa.array(values, type=type)`` holds). ``valid`` (bool per
    row) marks the rows that have a value; the others are null (``pa.array(mask=~valid)``)."""
    import pyarrow as pa

    data = np.asarray(values)
    n = len(data)
    nulls = None
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if len(valid) != n:
            raise ValueError(f"valid has {len(valid)} rows, values {n}")
        if not valid.all():
            nulls = _bitmap(valid)
    if pa.types.is_boolean(type):
        if data.dtype != bool:
            raise TypeError(f"boolean arrays are built from bool values, not {data.dtype}")
        return pa.Array.from_buffers(type, n, [nulls, _bitmap(data)])
    dtype = _numpy_dtype(type)
    if data.dtype.kind not in "biuf" or (data.dtype.kind == "f" and dtype.kind != "f"):
        raise TypeError(f"cannot hold {data.dtype} values in an Arrow {type} array")
    data = np.ascontiguousarray(data, dtype=dtype)
    return pa.Array.from_buffers(type, n, [nulls, pa.py_buffer(data)])


def strings(values: Sequence[str | None]) -> pa.Array:
    """A UTF-8 string array of Python strings (``None`` is null)."""
    import pyarrow as pa

    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype="<i4")
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    valid = np.array([v is not None for v in values], dtype=bool)
    nulls = None if valid.all() else _bitmap(valid)
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [nulls, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def from_list(values: Sequence[Any], type: pa.DataType) -> pa.Array:
    """An Arrow array of ``type`` from a Python list (``None`` is null): ``pa.array(values,
    type)`` for strings and fixed-width types."""
    import pyarrow as pa

    if pa.types.is_string(type):
        return strings(values)
    valid = np.array([v is not None for v in values], dtype=bool)
    dtype = bool if pa.types.is_boolean(type) else _numpy_dtype(type)
    data = np.array([0 if v is None else v for v in values], dtype=dtype)
    return array(data, type, valid=valid)


def scalar(value: Any, type: pa.DataType) -> pa.Scalar:
    """``pa.scalar(value, type)``: the one value of a one-row array (``None`` for a null)."""
    return from_list([value], type)[0]


def values(arr: pa.Array | pa.ChunkedArray, *, null: Any = None) -> np.ndarray:
    """The values of a fixed-width or boolean array as numpy (``to_numpy``): a read-only view
    of the value buffer when there are no nulls, else a copy with ``null`` in every null row
    (an array with nulls and no ``null`` given raises ``ValueError``)."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if pa.types.is_boolean(arr.type):
        buffer = arr.buffers()[1]
        out = np.zeros(0, dtype=bool) if buffer is None or n == 0 else _unpack(
            buffer, arr.offset, n)
    else:
        dtype = _numpy_dtype(arr.type)
        buffer = arr.buffers()[1]
        if buffer is None or n == 0:
            out = np.zeros(0, dtype=dtype)
        else:
            out = np.frombuffer(buffer, dtype=dtype, count=n, offset=arr.offset * dtype.itemsize)
    if not arr.null_count:
        return out
    if null is None:
        raise ValueError(f"the array has {arr.null_count} nulls: say what they become (null=)")
    out = out.copy()
    out[~valid(arr)] = null
    return out


def valid(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One bool per row: True where there is a value (``arr.is_valid()`` as numpy)."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not arr.null_count:
        return np.ones(len(arr), dtype=bool)
    return values(arr.is_valid())


numpy_values = values  # the name in the engine's public API (qmtl_engine.numpy_values)

__all__ = ["array", "from_list", "numpy_values", "scalar", "strings", "valid", "values"]
