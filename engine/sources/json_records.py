"""Records of a JSON document (a saved REST answer) as an Arrow table, for the files source.

REST dumps come in two shapes: a list of arrays whose positions are the columns (Kraken, OKX,
Coinbase, Binance klines) and a list of objects whose keys are the columns (Polygon). The list is
found by a dotted path (``result.XXBTZUSD``, ``data``; a number indexes a list), and the values
stay as the vendor wrote them (text or numbers): conformance casts and counts them like csv text.

Parsing the document is one ``json.load``; the columns are then cut out with numpy and pyarrow
on whole arrays, not row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from qmtl_engine import arrow_np


class RecordsError(ValueError):
    """The document does not hold records where the options say; the text says what it holds."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.fix = fix


def _describe(node: object) -> str:
    if isinstance(node, dict):
        keys = ", ".join(repr(str(k)) for k in list(node)[:8])
        return f"an object with keys {keys}" if node else "an empty object"
    if isinstance(node, list):
        return f"a list of {len(node)}"
    return f"the value {node!r}"[:80]


def find(document: object, path: str | None, option: str) -> object:
    """The node at dotted ``path`` (None or "": the document itself), named by ``option``.

    Raises :class:`RecordsError` naming the first step that is not there and what is there.
    """
    node = document
    walked: list[str] = []
    for step in (path or "").split(".") if path else []:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            where = ".".join(walked) or "the top"
            raise RecordsError(
                f"the document has no {'.'.join([*walked, step])!r}: at {where} it holds "
                f"{_describe(node)}", fix=f"fix `{option}` in the preset's files source options")
        walked.append(step)
    return node


def records_table(document: object, path: str | None, columns: Sequence[str | int],
                  defaults: Sequence[str] = ()) -> pa.Table:
    """The ``columns`` of the records at ``path``, as a table with the files source's names.

    A position ``i`` (records that are arrays) becomes column ``f{i}``; a field name (records
    that are objects) keeps its name. ``defaults`` are field names looked for in objects only
    (the canonical names no option mapped). A field no record has is left out, so that
    conformance reports it as ``missing_column``; a position past the end of the records is an
    error.
    """
    records = find(document, path, "records")
    if not isinstance(records, list):
        hint = ("set `records` to the dotted path of the list of bars" if isinstance(records, dict)
                else "point `records` at the list of bars")
        where = repr(path) if path else "the top of the document"
        raise RecordsError(f"the records at {where} are {_describe(records)}, not a list",
                           fix=hint)
    if not records:
        return pa.table({f"f{c}" if isinstance(c, int) else c: arrow_np.strings([])
                         for c in columns})
    first = records[0]
    if isinstance(first, list):
        return _positional(records, columns)
    if isinstance(first, dict):
        return _keyed(records, [*columns, *defaults])
    raise RecordsError(f"each record must be an array or an object, the first is "
                       f"{_describe(first)}", fix="point `records` at the list of bars")


def _positional(records: list[Any], columns: Sequence[str | int]) -> pa.Table:
    names = [c for c in columns if isinstance(c, str)]
    if names:
        raise RecordsError(f"the records are arrays, but `columns` names fields {names}",
                           fix="give `columns` as positions in each record (0, 1, ...)")
    try:
        grid = np.array(records, dtype=object)
    except ValueError:
        grid = np.empty(0)
    if grid.ndim != 2:
        lengths = sorted({len(r) if isinstance(r, list) else -1 for r in records})
        raise RecordsError(f"the records are not arrays of one length (lengths {lengths[:5]})",
                           fix="check that `records` points at the list of bars")
    width = grid.shape[1]
    out = {}
    for pos in dict.fromkeys(c for c in columns if isinstance(c, int)):
        if pos >= width:
            raise RecordsError(f"position {pos} is past the end of each record ({width} fields)",
                               fix="fix `columns`: positions count from 0")
        out[f"f{pos}"] = _array(grid[:, pos])
    return pa.table(out)


def _keyed(records: list[Any], columns: Sequence[str | int]) -> pa.Table:
    positions = [c for c in columns if isinstance(c, int)]
    if positions:
        raise RecordsError(f"the records are objects, but `columns` gives positions {positions}",
                           fix="give `columns` as the field names of each record")
    if not all(isinstance(r, dict) for r in records):
        raise RecordsError("the records are not all objects",
                           fix="check that `records` points at the list of bars")
    wanted = list(dict.fromkeys(c for c in columns if isinstance(c, str)))
    present = {k for r in records for k in r}
    return pa.table({k: _array(np.array([r.get(k) for r in records], dtype=object))
                     for k in wanted if k in present})


_INT64 = (-(2**63), 2**63 - 1)


def _array(values: np.ndarray) -> pa.Array:
    """One column of JSON values, typed as pyarrow would infer it (booleans, integers, floats
    or text; all null: null), but built from buffers: pyarrow's conversion of Python values
    imports pandas. A column mixing kinds (text and numbers, say), or holding arrays or
    objects, is read as text."""
    items = values.tolist()
    valid = np.array([v is not None for v in items], dtype=bool)
    kinds = {type(v) for v in items if v is not None}
    if not kinds:
        return pa.nulls(len(items))
    if kinds == {bool}:
        return arrow_np.array(np.array([bool(v) for v in items]), pa.bool_(), valid=valid)
    if kinds == {int} and all(_INT64[0] <= v <= _INT64[1] for v in items if v is not None):
        return arrow_np.array(np.array([v or 0 for v in items], dtype=np.int64), pa.int64(),
                              valid=valid)
    if kinds <= {int, float}:
        return arrow_np.array(np.array([0.0 if v is None else float(v) for v in items]),
                              pa.float64(), valid=valid)
    if kinds == {str}:
        return arrow_np.strings(items)
    return arrow_np.strings([None if v is None else str(v) for v in items])
