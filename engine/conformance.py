"""Conformance: turn a source's raw rows into the canonical table of a contract, counting flags.

Safe changes (dtype casts, epoch unit, time zone, row order, identical duplicate rows, rows outside
the window) are made and counted. What cannot be fixed is counted and kept or dropped as noted in
``FLAG_DOCS``. A conformance preset then decides which counted flags block (:func:`blocking`).
All checks run on whole column buffers with pyarrow compute and numpy.
"""

from __future__ import annotations

import itertools
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from qmtl_engine import arrow_np
from qmtl_engine.calendars import Calendar
from qmtl_engine.contracts import TS, VALUE_COLUMNS, Contract
from qmtl_engine.errors import ConformanceError
from qmtl_engine.flags import FLAG_NAMES
from qmtl_engine.presets import ConformancePreset
from qmtl_engine.ranges import TimeRange, iso

SAMPLE_SIZE = 5


_UNIT_TO_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}


@dataclass
class ConformanceReport:
    """Per-flag counts and the first few offenders of each flag.

    A sample is a bar time (epoch ms), or, for ``invalid_timestamp``, the raw value as the source
    wrote it (text, already quoted), since there is no time to show. ``details`` holds, parallel
    to the samples, what a user reads of each offender: the row as the source wrote it (raw
    ``ts``, ``open`` ... ``volume``, before any cast) with the file and line where the source
    knows them, or only the time where no raw row is at hand (a missing bar, a check across
    partitions). ``extent`` is the first and last bar kept; ``source_extent`` the first and last
    bar the source says it has for the symbol (None: it cannot tell cheaply).
    ``close_below`` counts the ``ohlc_inconsistent`` rows where only ``close`` is off, below
    ``low`` (what a close mapped to an adjusted column gives).
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAG_NAMES, 0))
    samples: dict[str, list[int | str]] = field(default_factory=dict)
    details: dict[str, list[str]] = field(default_factory=dict)
    extent: tuple[int, int] | None = None
    source_extent: tuple[int, int] | None = None
    close_below: int = 0

    def add(self, flag: str, count: int, times: Iterable[Any] = (),
            details: Sequence[str] | None = None) -> None:
        """Count ``count`` offenders of ``flag``; keep the first of ``times`` (and of their
        ``details``, or the times as text) until :data:`SAMPLE_SIZE` are kept."""
        if count <= 0:
            return
        self.counts[flag] += int(count)
        got = self.samples.setdefault(flag, [])
        room = SAMPLE_SIZE - len(got)
        if room <= 0:
            return
        new = [t if isinstance(t, str) else int(t) for t in itertools.islice(times, room)]
        got.extend(new)
        texts = list(details[: len(new)]) if details is not None else []
        texts += [_time_text(t) for t in new[len(texts):]]
        self.details.setdefault(flag, []).extend(texts)

    def merge(self, other: ConformanceReport) -> None:
        for flag, count in other.counts.items():
            self.add(flag, count, other.samples.get(flag, ()), other.details.get(flag))
        self.extent = _union(self.extent, other.extent)
        self.source_extent = _union(self.source_extent, other.source_extent)
        self.close_below += other.close_below

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v}

    def sample_texts(self, flag: str) -> list[str]:
        """The samples of ``flag`` as users read them: ISO times, or quoted raw values."""
        return [_time_text(t) for t in self.samples.get(flag, [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "samples": {k: self.sample_texts(k) for k in sorted(self.samples)},
            "details": {k: list(self.details.get(k, [])) for k in sorted(self.samples)},
        }

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> ConformanceReport:
        report = cls()
        for k, v in counts.items():
            report.counts[k] = int(v)
        return report

    def summary(self) -> str:
        lines = []
        for flag, count in sorted(self.nonzero().items()):
            sample = ", ".join(self.sample_texts(flag))
            lines.append(f"{flag}: {count}" + (f" (first: {sample})" if sample else ""))
        return "\n".join(lines) or "no flags"


def _time_text(sample: int | str) -> str:
    return sample if isinstance(sample, str) else iso(sample)


def _union(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


def blocking(report: ConformanceReport, preset: ConformancePreset) -> dict[str, int]:
    """The flags of ``report`` that ``preset`` refuses, with their counts."""
    if preset.partial_ok:
        return {}
    return {f: report.counts[f] for f in preset.block if report.counts.get(f, 0) > 0}


@dataclass(frozen=True)
class TsHints:
    """What a source knows of its timestamps: strptime format, epoch unit, zone of naive times."""

    format: str | None = None
    unit: str | None = None
    timezone: str = "UTC"


def infer_epoch_unit(values: np.ndarray) -> str:
    """Guess s, ms, us or ns from the magnitude of epoch numbers (years 1973–5138 in seconds)."""
    finite = np.abs(values[np.isfinite(values)]) if values.dtype.kind == "f" else np.abs(values)
    if finite.size == 0:
        return "ms"
    mid = float(np.median(finite))
    if mid < 1e11:
        return "s"
    if mid < 1e14:
        return "ms"
    if mid < 1e17:
        return "us"
    return "ns"


@dataclass
class NormalizedTs:
    """Epoch milliseconds of a timestamp column, with masks of invalid and sub-ms values."""

    ms: np.ndarray  # int64; 0 where invalid
    valid: np.ndarray  # bool
    sub_ms: np.ndarray  # bool: had a sub-millisecond part, so it cannot be on the grid


def normalize_ts(column: pa.Array | pa.ChunkedArray, hints: TsHints,
                 report: ConformanceReport | None = None,
                 rows: RawRows | None = None) -> NormalizedTs:
    """Epoch ms of a raw timestamp column (strings, epochs or timestamps), counting what changed
    in ``report`` (with the rows of ``rows`` shown for each sample, when given)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    text: _ParsedText | None = None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        numbers = None if hints.format else _numeric_strings(arr)
        if numbers is not None:
            arr = numbers
        else:
            text = _parse_strings(arr, hints)
            arr = text.values
    if pa.types.is_date(arr.type):
        arr = arr.cast(pa.timestamp("ms"))
    typ = arr.type
    if pa.types.is_timestamp(typ):
        tz = typ.tz or hints.timezone
        if typ.tz is None and not _is_utc(tz):
            arr = pc.assume_timezone(arr, tz, ambiguous="earliest", nonexistent="earliest")
        raw = _ints(arr.cast(pa.timestamp(typ.unit, tz="UTC")).cast(pa.int64()))
        result = _scale(raw, typ.unit, _valid(arr))
        if text is not None and text.sub_ms is not None:
            result.sub_ms |= text.sub_ms & result.valid
        moved = result.valid
        if text is not None and text.naive is not None:  # per-value parse: zone hint applied
            moved, tz = result.valid & text.naive, hints.timezone
        if not _is_utc(tz) and report is not None:
            first = np.flatnonzero(moved)[:SAMPLE_SIZE]
            report.add("ts_timezone_normalized", int(moved.sum()), result.ms[first],
                       rows.texts(first, result.ms[first]) if rows is not None else None)
        return result
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        valid = _valid(arr)
        unit = hints.unit
        if unit is None:
            raw = np.asarray(arrow_np.values(arr, null=0), dtype=np.float64)
            unit = infer_epoch_unit(raw[valid])
            if report is not None:
                report.add("ts_unit_inferred", int(valid.sum()))
        if pa.types.is_floating(typ):
            values = np.asarray(arrow_np.values(arr, null=np.nan), dtype=np.float64)
            ok = valid & np.isfinite(values)
            scaled = np.where(ok, values, 0.0) * _UNIT_TO_MS[unit]
            rounded = np.round(scaled)
            return NormalizedTs(rounded.astype(np.int64), ok, ok & (rounded != scaled))
        return _scale(_ints(arr.cast(pa.int64())), unit, valid)
    raise ValueError(f"cannot read timestamps of type {typ}")


def _is_utc(tz: str) -> bool:
    return tz in ("UTC", "Etc/UTC", "+00:00", "Z", "utc")


def _valid(arr: pa.Array) -> np.ndarray:
    return arrow_np.valid(arr)


def _ints(arr: pa.Array) -> np.ndarray:
    return np.asarray(arrow_np.values(arr, null=0), dtype=np.int64)


_ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M%z", "%Y-%m-%d %H:%M%z", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d",
)
_FLOAT_TEXT = r"^[+-]?((\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"
_NUMERIC = r"^-?\d+(\.\d*)?$"


@dataclass(frozen=True)
class _ParsedText:
    values: pa.Array  # timestamp[ns, tz=UTC] or timestamp[ms, tz=UTC]; null where invalid
    naive: np.ndarray | None  # values that carried no zone (so hints.timezone applied)
    sub_ms: np.ndarray | None  # values with digits finer than a millisecond


_OFFSET_AT_END = re.compile(r"\d\d:?\d\d(?::?\d\d(?:[.,]\d+)?)?\s*(?:Z|[+-]\d\d(?::?\d\d)?)\s*$",
                            re.IGNORECASE)  # a time, then its offset


def _ends_with_offset(arr: pa.Array) -> bool:
    """Whether the first value of ``arr`` ends in a zone offset (``Z``, ``+02:00``): which of
    the two whole-column casts is worth trying first. Only one of them can succeed on a column,
    so the order changes how soon, never what."""
    if arr.null_count == len(arr):
        return False
    first = 0 if not arr.null_count else int(np.argmax(arrow_np.valid(arr)))
    return bool(_OFFSET_AT_END.search(str(arr[first].as_py())))


def _parse_strings(arr: pa.Array, hints: TsHints) -> _ParsedText:
    if hints.format:
        return _parse_format(arr, hints.format)
    casts = [pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")]
    if not _ends_with_offset(arr):  # a failed cast costs 50 times a good one: the likely first
        casts.reverse()
    for typ in casts:
        try:  # the fast path: one ISO-8601 cast for the whole column (with or without offsets)
            return _ParsedText(pc.cast(arr, typ), None, None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    # Mixed or partly invalid values: try each ISO shape per value; what fits none is null.
    # strptime has no fractional seconds, so they are cut off and added back as milliseconds.
    fraction = pc.struct_field(pc.extract_regex(arr, r"\.(?P<f>\d+)"), [0])
    frac_ms = pc.cast(pc.utf8_rpad(pc.utf8_slice_codeunits(fraction, 0, 3), 3, "0"), pa.int64())
    finer = pc.utf8_slice_codeunits(fraction, 3, 64)
    sub_ms = pc.match_substring_regex(finer, "[1-9]")
    whole = pc.replace_substring_regex(arr, r"\.\d+", "")
    attempts = []
    naive_hits = []
    for fmt in _ISO_FORMATS:
        parsed = pc.strptime(whole, format=fmt, unit="ms", error_is_null=True)
        if parsed.type.tz is None:
            naive_hits.append(parsed.is_valid())
            parsed = pc.assume_timezone(parsed, hints.timezone, ambiguous="earliest",
                                        nonexistent="earliest")
        attempts.append(parsed.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()))
    base = pc.coalesce(*attempts)
    aware = pc.coalesce(*[a for a, f in zip(attempts, _ISO_FORMATS, strict=True) if "%z" in f])
    naive = arrow_np.values(pc.and_(pc.is_null(aware), pc.is_valid(base)), null=False)
    values = pc.add(base, pc.fill_null(frac_ms, arrow_np.scalar(0, pa.int64())))
    values = values.cast(pa.timestamp("ms", tz="UTC"))
    return _ParsedText(values, naive, arrow_np.values(sub_ms, null=False))


# Python strptime codes as regular expressions (as ``_strptime.TimeRE`` writes them), to find the
# digits of ``%f`` in a column; a format with a code not listed here is read per distinct value.
_CODE_RE = {
    "d": r"3[01]|[12]\d|0[1-9]|[1-9]| [1-9]", "m": r"1[0-2]|0[1-9]|[1-9]", "Y": r"\d\d\d\d",
    "y": r"\d\d", "H": r"2[0-3]|[0-1]\d|\d", "I": r"1[0-2]|0[1-9]|[1-9]", "M": r"[0-5]\d|\d",
    "S": r"6[0-1]|[0-5]\d|\d", "p": r"(?i:am|pm)", "b": r"(?i:[a-z]{3})", "B": r"(?i:[a-z]+)",
    "a": r"(?i:[a-z]{3})", "A": r"(?i:[a-z]+)",
    "j": r"36[0-6]|3[0-5]\d|[12]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9]",
    "z": r"[+-]\d\d:?[0-5]\d(?::?[0-5]\d(?:\.\d{1,6})?)?|Z", "%": "%",
}


def _format_codes(fmt: str) -> list[str]:
    """The strptime codes of ``fmt`` in order (``%%`` included as ``%``)."""
    return re.findall(r"%(.)", fmt)


def _fraction_pattern(fmt: str) -> str | None:
    """A regex splitting a value of ``fmt`` into the text around ``%f`` and its digits."""
    parts = fmt.split("%f")
    if len(parts) != 2 or "%%" in fmt:
        return None

    def regex(text: str) -> str | None:
        out = []
        for literal, code in re.findall(r"([^%]*)(?:%(.)|$)", text):
            # as in Python's strptime, a run of white space matches any run of white space
            out.append(r"\s+".join(re.escape(piece) for piece in re.split(r"\s+", literal)))
            if code:
                if code not in _CODE_RE:
                    return None
                out.append(f"(?:{_CODE_RE[code]})")
        return "".join(out)

    head, tail = regex(parts[0]), regex(parts[1])
    if head is None or tail is None:
        return None
    return f"^(?P<head>{head})(?P<f>[0-9]{{1,6}})(?P<tail>{tail})$"


def _parse_format(arr: pa.Array, fmt: str) -> _ParsedText:
    """Text read with a Python ``datetime.strptime`` format, on whole columns.

    pyarrow's strptime reads the column first (see :func:`_arrow_strptime`). What it cannot
    read exactly as Python would is read with ``datetime.strptime``, once per distinct value;
    what that cannot read either stays null, so it is counted as ``invalid_timestamp``.
    """
    typ = pa.timestamp("ms", tz="UTC") if "z" in _format_codes(fmt) else pa.timestamp("ms")
    try:
        values, sub_ms = _arrow_strptime(arr, fmt, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a code pyarrow does not know
        values, sub_ms = pa.nulls(len(arr), pa.int64()), np.zeros(len(arr), dtype=bool)
    failed = pc.and_(pc.is_valid(arr), pc.is_null(values))
    if pc.any(failed).as_py():
        values, sub_ms = _strptime_distinct(arr, fmt, values, failed, sub_ms)
    return _ParsedText(values.cast(typ), None, sub_ms)


def _arrow_strptime(arr: pa.Array, fmt: str, typ: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Epoch ms as pyarrow reads ``fmt`` (null where that is not Python's reading), sub-ms mask.

    pyarrow has no ``%f``: the fraction digits are cut out with a regex and added back as
    milliseconds. pyarrow also rolls impossible dates over (31.02.2024 becomes 02.03.2024) where
    Python refuses them, so a value is kept only if it formats back to its own text (values
    written without zero padding, or formats :func:`_format_back` cannot write, are then read
    by Python instead).
    """
    sub_ms = np.zeros(len(arr), dtype=bool)
    text, frac = arr, None
    if "f" in _format_codes(fmt):
        pattern = _fraction_pattern(fmt)
        if pattern is None:
            return pa.nulls(len(arr), pa.int64()), sub_ms
        found = pc.extract_regex(arr, pattern)
        text = pc.binary_join_element_wise(pc.struct_field(found, [0]),
                                           pc.struct_field(found, [2]), _str(""))
        fmt = fmt.replace("%f", "")
        digits = pc.struct_field(found, [1])
        frac = pc.cast(pc.utf8_rpad(pc.utf8_slice_codeunits(digits, 0, 3), 3, "0"), pa.int64())
        finer = pc.match_substring_regex(pc.utf8_slice_codeunits(digits, 3, 6), "[1-9]")
        sub_ms = arrow_np.values(finer, null=False)
    parsed = pc.strptime(text, format=fmt, unit="ms", error_is_null=True)
    back = _format_back(parsed, fmt)
    if back is None:
        return pa.nulls(len(arr), pa.int64()), sub_ms
    exact = pc.fill_null(pc.equal(back, text), arrow_np.scalar(False, pa.bool_()))
    values = pc.if_else(exact, parsed.cast(typ).cast(pa.int64()), pa.nulls(1, pa.int64())[0])
    return (values if frac is None else pc.add(values, frac)), sub_ms


def _padded(width: int) -> Callable[[pa.Array], pa.Array]:
    return lambda v: pc.utf8_lpad(pc.cast(v, pa.string()), width, "0")


# Constants for compute functions as Arrow scalars: a Python value handed to one is converted
# by pyarrow's Python-to-Arrow path, which imports pandas.
def _int(n: int) -> pa.Scalar:
    return arrow_np.scalar(n, pa.int64())


def _str(text: str) -> pa.Scalar:
    return arrow_np.scalar(text, pa.string())


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# How strftime writes each code in the C locale, built from timestamp fields (pyarrow's own
# strftime is about fifty times slower than these kernels).
_WRITERS: dict[str, Callable[[pa.Array], pa.Array]] = {
    "d": lambda t: _padded(2)(pc.day(t)), "m": lambda t: _padded(2)(pc.month(t)),
    "Y": lambda t: _padded(4)(pc.year(t)),
    "y": lambda t: _padded(2)(pc.subtract(pc.year(t), pc.multiply(pc.divide(pc.year(t),
                                                                            _int(100)),
                                                                  _int(100)))),
    "H": lambda t: _padded(2)(pc.hour(t)), "M": lambda t: _padded(2)(pc.minute(t)),
    "S": lambda t: _padded(2)(pc.second(t)),
    "I": lambda t: _padded(2)(pc.add(pc.subtract(pc.add(pc.hour(t), _int(11)),
                                                 pc.multiply(pc.divide(pc.add(pc.hour(t),
                                                                              _int(11)),
                                                                       _int(12)), _int(12))),
                                     _int(1))),
    "p": lambda t: pc.if_else(pc.less(pc.hour(t), _int(12)), _str("AM"), _str("PM")),
    "j": lambda t: _padded(3)(pc.day_of_year(t)),
    "b": lambda t: pc.take(arrow_np.strings([m[:3] for m in _MONTHS]),
                           pc.subtract(pc.month(t), _int(1))),
    "B": lambda t: pc.take(arrow_np.strings(_MONTHS), pc.subtract(pc.month(t), _int(1))),
    "a": lambda t: pc.take(arrow_np.strings([d[:3] for d in _WEEKDAYS]), pc.day_of_week(t)),
    "A": lambda t: pc.take(arrow_np.strings(_WEEKDAYS), pc.day_of_week(t)),
}


def _format_back(ts: pa.Array, fmt: str) -> pa.Array | None:
    """``ts`` (naive) written with ``fmt`` as strftime writes it; None for a code not handled."""
    pieces: list[pa.Array | pa.Scalar] = []
    for literal, code in re.findall(r"([^%]*)(?:%(.)|$)", fmt):
        if literal:
            pieces.append(_str(literal))
        if code == "%":
            pieces.append(_str("%"))
        elif code:
            writer = _WRITERS.get(code)
            if writer is None:
                return None
            pieces.append(writer(ts))
    arrays = [p for p in pieces if not isinstance(p, pa.Scalar)]
    if not arrays:
        return None
    return pc.binary_join_element_wise(*pieces, _str(""))


def _strptime_distinct(arr: pa.Array, fmt: str, values: pa.Array, failed: pa.Array,
                       sub_ms: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Fill the ``failed`` rows of ``values`` with ``datetime.strptime``, once per distinct text."""
    from datetime import UTC, datetime, timedelta

    distinct = pc.unique(arr.filter(failed))
    epoch, one_ms = datetime(1970, 1, 1), timedelta(milliseconds=1)
    parsed: list[int | None] = []
    finer: list[bool] = []
    for text in distinct.to_pylist():
        try:
            dt = datetime.strptime(text, fmt)
        except ValueError:
            parsed.append(None)
            finer.append(False)
            continue
        if dt.tzinfo is not None:
            dt = dt.astimezone(UTC).replace(tzinfo=None)
        parsed.append((dt - epoch) // one_ms)
        finer.append(dt.microsecond % 1000 != 0)
    where = pc.index_in(arr, value_set=distinct)
    filled = pc.if_else(failed, pc.take(arrow_np.from_list(parsed, pa.int64()), where), values)
    finer_rows = pc.take(arrow_np.from_list(finer, pa.bool_()), where)
    mask = arrow_np.values(failed, null=False)
    sub_ms = np.where(mask, arrow_np.values(finer_rows, null=False), sub_ms)
    return filled, sub_ms


def _numeric_strings(arr: pa.Array) -> pa.Array | None:
    """Epoch numbers that arrived as text (e.g. a CSV column read as strings), else None.

    The column counts as numeric when most non-blank values are numbers; the others become null
    (and so are counted as invalid timestamps).
    """
    text = pc.utf8_trim_whitespace(arr)
    text = pc.if_else(pc.equal(text, arrow_np.scalar("", pa.string())),
                      pa.nulls(1, pa.string())[0], text)
    numeric = pc.match_substring_regex(text, _NUMERIC)
    hits = pc.sum(numeric).as_py() or 0
    present = len(text) - text.null_count
    if present == 0 or hits * 2 <= present:
        return None
    kept = pc.if_else(numeric, text, pa.nulls(1, pa.string())[0])
    if pc.any(pc.match_substring(kept, ".")).as_py():
        return pc.cast(kept, pa.float64())
    return pc.cast(kept, pa.int64())


def _scale(values: np.ndarray, unit: str, valid: np.ndarray) -> NormalizedTs:
    no_sub = np.zeros(len(values), dtype=bool)
    if unit == "ms":
        return NormalizedTs(values, valid, no_sub)
    if unit == "s":
        return NormalizedTs(values * 1000, valid, no_sub)
    divisor = 1000 if unit == "us" else 1_000_000
    return NormalizedTs(values // divisor, valid, valid & (values % divisor != 0))


@dataclass(frozen=True, eq=False)
class RowOrigin:
    """Where each row of a raw batch was read: the file (an index into ``files``) and the
    1-based line (CSV: the line of the file, banner and header counted; JSON: the record's
    position in its list; Parquet: the row's position in the file). Sources that read files
    set it, so findings can name the file and line a user opens to look."""

    files: tuple[str, ...]
    file_index: np.ndarray  # int32 per row: index into ``files``
    line: np.ndarray  # int64 per row

    def describe(self, row: int) -> str:
        """``EURUSD.csv line 1234`` for row ``row`` of the batch."""
        name = posixpath.basename(self.files[int(self.file_index[row])])
        return f"{name} line {int(self.line[row])}"


@dataclass(frozen=True)
class RawBatch:
    """Rows as a source delivers them: canonical column names, any types, any order; and,
    where the source read them from files, where each row came from (``origin``, same length
    as ``table``)."""

    table: pa.Table
    hints: TsHints = TsHints()
    origin: RowOrigin | None = None


_MAX_RAW_TEXT = 40  # longer raw text (a broken line read as one value) is cut


def _raw_text(value: Any) -> str:
    """One raw value as the source delivered it: text quoted, numbers as Python writes them."""
    if value is None:
        return "null"
    if isinstance(value, str):
        cut = value if len(value) <= _MAX_RAW_TEXT else value[: _MAX_RAW_TEXT - 3] + "..."
        return repr(cut)
    return repr(value) if isinstance(value, float) else str(value)


class RawRows:
    """Renders rows of a raw batch as a user reads them in a finding: the bar time, the raw
    ``ts``, ``open`` ... ``volume`` as the source wrote them (before any cast), and the file
    and line where the batch knows them. Only the few rows of a sample are ever rendered."""

    def __init__(self, batch: RawBatch) -> None:
        self.table = batch.table
        self.origin = batch.origin
        self.columns = [c for c in (TS, *VALUE_COLUMNS) if c in batch.table.column_names]

    def texts(self, raw: np.ndarray, times: np.ndarray | None = None,
              suffixes: Sequence[str] = ()) -> list[str]:
        """The rows at raw positions ``raw`` (the first :data:`SAMPLE_SIZE`), each led by its
        bar time from ``times`` (none for rows without one) and followed by its suffix."""
        raw = np.asarray(raw[:SAMPLE_SIZE], dtype=np.int64)
        if not raw.size:
            return []
        taken = self.table.select(self.columns).take(arrow_np.array(raw, pa.int64()))
        values = {c: _column_values(taken[c]) for c in self.columns}
        out = []
        for k, row in enumerate(raw.tolist()):
            text = " ".join(f"{c}={values[c][k]}" for c in self.columns)
            if times is not None:
                text = f"{iso(int(times[k]))} {text}"
            if self.origin is not None:
                text += f" ({self.origin.describe(row)})"
            out.append(text + (suffixes[k] if k < len(suffixes) else ""))
        return out


def _column_values(column: pa.ChunkedArray) -> list[str]:
    """A few raw cells as text: text quoted, numbers as Python writes them, other kinds (times,
    dates, decimals) as Arrow writes them, unquoted, since the source gave no text."""
    typ = column.type
    if (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_integer(typ)
            or pa.types.is_floating(typ) or pa.types.is_null(typ)):
        return [_raw_text(v) for v in column.to_pylist()]
    try:
        written = pc.cast(column, pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        written = [None if v is None else str(v) for v in column.to_pylist()]
    return ["null" if v is None else v for v in written]


@dataclass(frozen=True)
class RowMemory:
    """Row hashes of the previous partition, so repeated bars are found across a boundary."""

    hashes: np.ndarray


def _bits(values: np.ndarray) -> np.ndarray:
    canon = np.where(np.isnan(values), np.nan, values + 0.0)
    return canon.view(np.uint64)


def _row_hashes(columns: list[np.ndarray]) -> np.ndarray:
    """A 64-bit mix of the canonical bits of each row (splitmix64 finalizer per column)."""
    h = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in columns:
            z = h ^ _bits(col)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = z ^ (z >> np.uint64(31))
    return h


def _in_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which ``keys`` are in ``values`` (sorted); fastest when ``keys`` are sorted too."""
    if not values.size:
        return np.zeros(keys.size, dtype=bool)
    pos = np.searchsorted(values, keys)
    pos[pos == values.size] = 0
    return values[pos] == keys


def common_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The values in both ``a`` and ``b``, each sorted and distinct, sorted.

    One stable sort of the two runs side by side: numpy's stable sort of 64-bit values is a
    merge sort, which joins two sorted runs in one pass. A binary search of each value of one
    in the other costs about five times as much at 44,640 rows (a month of minutes), and
    ``np.intersect1d`` about three times.
    """
    if not a.size or not b.size:
        return a[:0]
    both = np.concatenate([a, b])
    both.sort(kind="stable")
    return both[1:][both[1:] == both[:-1]]


def _repeated(hashes: np.ndarray, ordered: np.ndarray, distinct: np.ndarray,
              memory: RowMemory | None) -> np.ndarray:
    """The rows (in time order) whose hash an earlier row has, or the previous partition's.

    ``ordered`` is ``hashes`` sorted, ``distinct`` its distinct values. Repeats are rare, so
    the sorted hashes settle the usual case alone (no value twice, none remembered): neither a
    stable sort of all rows nor a search with unsorted keys. Only rows holding a value seen
    twice are then put in time order, to spare the first of each.
    """
    repeated = np.zeros(hashes.size, dtype=bool)
    twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if twice.size:
        rows = np.flatnonzero(_in_sorted(twice, hashes))
        values = hashes[rows]
        order = np.argsort(values, kind="stable")
        later = np.zeros(rows.size, dtype=bool)
        later[order[1:]] = values[order][1:] == values[order][:-1]
        repeated[rows[later]] = True
    if memory is not None and memory.hashes.size:
        known = common_keys(memory.hashes, distinct)
        if known.size:
            repeated |= _in_sorted(known, hashes)
    return repeated


def _value_column(table: pa.Table, name: str, report: ConformanceReport) -> np.ndarray:
    n = table.num_rows
    if name not in table.column_names:
        report.add("missing_column", 1)
        return np.full(n, np.nan)
    col = table[name].combine_chunks()
    if col.type != pa.float64():
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = pc.utf8_trim_whitespace(col)
            numeric = pc.match_substring_regex(text, _FLOAT_TEXT, ignore_case=True)
            # Text that is not a number becomes NaN, and so is counted as non_finite.
            col = pc.cast(pc.if_else(numeric, text, pa.nulls(1, pa.string())[0]), pa.float64())
        else:
            try:
                col = pc.cast(col, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                col = pa.nulls(n, pa.float64())
        report.add("dtype_cast", n)
    return np.asarray(arrow_np.values(col, null=np.nan), dtype=np.float64)


def _raw_values(column: pa.ChunkedArray, rows: np.ndarray) -> list[str]:
    """The raw timestamps of ``rows`` as the source wrote them, quoted (``null`` when absent)."""
    taken = column.take(arrow_np.array(rows, pa.int64()))
    return ["null" if v is None else repr(str(v)) for v in taken.to_pylist()]


def conform(
    batch: RawBatch,
    *,
    window: TimeRange,
    interval_ms: int,
    contract: Contract,
    calendar: Calendar,
    memory: RowMemory | None = None,
    accepted_gaps: Sequence[TimeRange] = (),
    price_jump_threshold: float | None = None,
) -> tuple[pa.Table, ConformanceReport, RowMemory]:
    """Return the canonical table of ``batch`` for ``window``, its flag report, and row memory.

    Each flag's first offenders are shown in the report as the source wrote them (see
    :class:`RawRows`): every kept row is traced back to its raw position through the sorting
    and deduplication. ``price_jump_threshold`` (None: not checked) counts one-bar moves of
    close beyond it as ``price_jump``.

    Raises :class:`ConformanceError` only when the rows cannot be read at all (no timestamp
    column, or one of a type that holds no times); text that is not a number in a value column
    becomes NaN and is counted. Whether counted flags block is decided by :func:`blocking`.
    """
    report = ConformanceReport()
    table = batch.table
    rows = RawRows(batch)
    ts = _read_times(batch, window, report, rows)
    names = [*VALUE_COLUMNS, *(c.name for c in contract.optional if c.name in table.column_names)]
    values = {name: _value_column(table, name, report) for name in names}
    idx, t, unsorted = _rows_to_keep(table, ts, window, interval_ms, report, rows)
    if idx.size == table.num_rows and not unsorted:  # every row kept, in order: no copies
        cols = dict(values)
    else:
        cols = {name: v[idx] for name, v in values.items()}
    idx, t, cols = _without_duplicates(idx, t, cols, report, rows)
    found = _Found(report, rows, idx, t)
    _value_flags(found, cols, names)
    if price_jump_threshold is not None:
        _price_jumps(found, cols[VALUE_COLUMNS[3]], price_jump_threshold)
    o, h, lo, c, vol = (cols[n] for n in VALUE_COLUMNS)
    hashes = _row_hashes([o, h, lo, c, vol])
    eligible = ~((o == h) & (h == lo) & (lo == c) & (vol == 0))
    eh = hashes[eligible]
    ordered = np.sort(eh)  # serves both checks and the memory of the next partition
    distinct = _distinct(ordered)
    repeated = _repeated(eh, ordered, distinct, memory)
    repeated_rows = np.zeros(t.size, dtype=bool)
    repeated_rows[np.flatnonzero(eligible)[repeated]] = True
    found.add("repeated_bars", repeated_rows)
    _calendar_flags(found, window, interval_ms, calendar, accepted_gaps)
    if t.size:
        report.extent = (int(t[0]), int(t[-1]))

    arrays = [arrow_np.array(t, pa.timestamp("ms", tz="UTC"))]
    arrays += [arrow_np.array(cols[n], pa.float64()) for n in names]
    out = pa.Table.from_arrays(arrays, names=[TS, *names])
    return out, report, RowMemory(distinct)


def _distinct(ordered: np.ndarray) -> np.ndarray:
    firsts = np.ones(ordered.size, dtype=bool)
    firsts[1:] = ordered[1:] != ordered[:-1]
    return ordered[firsts]


def _eligible_hashes(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Row hashes and times of the rows of a canonical table that repeated bars are looked for
    in (flat zero-volume fills are not): what :func:`conform` hashes, from the stored columns."""
    cols = [np.asarray(arrow_np.values(table[n], null=np.nan), dtype=np.float64)
            for n in VALUE_COLUMNS]
    o, h, lo, c, vol = cols
    eligible = ~((o == h) & (h == lo) & (lo == c) & (vol == 0))
    ts = np.asarray(arrow_np.values(table[TS], null=0), dtype=np.int64)
    return _row_hashes(cols)[eligible], ts[eligible]


def row_keys(table: pa.Table) -> np.ndarray:
    """The distinct row hashes of a canonical partition table, sorted: the :class:`RowMemory`
    that :func:`conform` returns for the rows it kept, rebuilt from a stored partition."""
    return _distinct(np.sort(_eligible_hashes(table)[0]))


def repeated_times(table: pa.Table, keys: np.ndarray) -> np.ndarray:
    """The times of the rows of a canonical table whose hash is one of ``keys`` (sorted), in
    time order: which bars repeat the previous partition's."""
    hashes, ts = _eligible_hashes(table)
    return ts[_in_sorted(keys, hashes)]


def _read_times(batch: RawBatch, window: TimeRange, report: ConformanceReport,
                rows: RawRows) -> NormalizedTs:
    """The normalized timestamps; a batch without any readable time column is refused."""
    table = batch.table
    if TS not in table.column_names:
        report.add("missing_column", 1)
        raise ConformanceError(report, blocking={"missing_column": 1},
                               partition=window.label())
    try:
        return normalize_ts(table[TS], batch.hints, report, rows)
    except ValueError as exc:
        report.add("invalid_timestamp", table.num_rows)
        err = ConformanceError(report, blocking={"invalid_timestamp": table.num_rows},
                               partition=window.label())
        err.what += f" ({exc})"
        raise err from None


def _rows_to_keep(table: pa.Table, ts: NormalizedTs, window: TimeRange, interval_ms: int,
                  report: ConformanceReport, rows: RawRows,
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Indices and times (sorted, stable) of rows with a valid, in-window, on-grid time; and
    how many descents the source order had."""
    invalid = np.flatnonzero(~ts.valid)
    report.add("invalid_timestamp", invalid.size, _raw_values(table[TS], invalid[:SAMPLE_SIZE]),
               rows.texts(invalid))
    keep = ts.valid.copy()
    in_window = (ts.ms >= window.start) & (ts.ms < window.end)
    raw = _Found(report, rows, np.arange(table.num_rows), ts.ms)
    raw.add("out_of_range", keep & ~in_window)
    keep &= in_window
    off_grid = keep & ((ts.ms % interval_ms != 0) | ts.sub_ms)
    raw.add("off_grid_ts", off_grid)
    keep &= ~off_grid
    idx = np.flatnonzero(keep)
    t = ts.ms[idx]
    descents = t[1:] < t[:-1]
    unsorted = int(descents.sum())
    _Found(report, rows, idx[1:], t[1:]).add("unsorted_ts", descents)
    if unsorted:  # stable: equal times keep the source's order (the last row wins later)
        order = np.argsort(t, kind="stable")
        idx, t = idx[order], t[order]
    return idx, t, unsorted


@dataclass(frozen=True)
class _Found:
    """Counts a flag over rows of ``t`` (bar times) whose raw positions are ``idx``, showing
    the first offenders as the source wrote them."""

    report: ConformanceReport
    rows: RawRows
    idx: np.ndarray
    t: np.ndarray

    def add(self, flag: str, mask: np.ndarray, suffixes: Callable[[np.ndarray], list[str]]
            | None = None) -> None:
        count = int(np.count_nonzero(mask))
        if not count:
            return
        first = np.flatnonzero(mask)[:SAMPLE_SIZE]
        times = self.t[first]
        self.report.add(flag, count, times, self.rows.texts(
            self.idx[first], times, suffixes(first) if suffixes is not None else ()))


def _without_duplicates(idx: np.ndarray, t: np.ndarray, cols: dict[str, np.ndarray],
                        report: ConformanceReport, rows: RawRows,
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Keep the last row of each run of equal times; count exact copies and conflicts (a
    conflict shows both rows: the one kept, then the one it differs from)."""
    same = t[1:] == t[:-1]
    if not same.any():
        return idx, t, cols
    equal = np.ones(len(same), dtype=bool)
    for v in cols.values():
        b = _bits(v)
        equal &= b[1:] == b[:-1]
    later = _Found(report, rows, idx[1:], t[1:])
    later.add("duplicate_rows", same & equal)
    earlier = idx[:-1]
    later.add("duplicate_ts", same & ~equal, lambda first: [
        " vs " + other for other in rows.texts(earlier[first])])
    last = np.append(~same, True)
    return idx[last], t[last], {name: v[last] for name, v in cols.items()}


def _value_flags(found: _Found, cols: dict[str, np.ndarray], names: list[str]) -> None:
    """Non-finite, negative and OHLC-inconsistent rows."""
    o, h, lo, c, vol = (cols[n] for n in VALUE_COLUMNS)
    bad = np.zeros(len(found.t), dtype=bool)
    for n in names:
        bad |= ~np.isfinite(cols[n])
    found.add("non_finite", bad)
    found.add("negative_value", (o < 0) | (h < 0) | (lo < 0) | (c < 0) | (vol < 0))
    with np.errstate(invalid="ignore"):
        inconsistent = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
        # only close out of [low, high], below it: the mark of a close mapped to an adjusted
        # column (back-adjusted closes are at most the raw close; open, high and low are raw)
        close_only = inconsistent & (lo <= o) & (o <= h) & (c < lo)
    found.add("ohlc_inconsistent", inconsistent)
    found.report.close_below += int(np.count_nonzero(close_only))


def price_moves(previous: np.ndarray, close: np.ndarray, threshold: float,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Which one-bar moves from ``previous`` to ``close`` are price jumps, and the moves.

    The move is ``close / previous - 1``; a jump is a move whose size is beyond ``threshold``.
    Moves from or to a NaN or infinite close are not judged (``non_finite`` counts those); a
    move from a zero close to any other is infinite, so a jump.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        move = close / previous - 1.0
        jump = (np.abs(move) > threshold) & np.isfinite(previous) & np.isfinite(close)
    return jump, move


Edges = tuple[tuple[int, float], tuple[int, float]]  # (time, close) of the first and last bar


def edge_bars(table: pa.Table) -> Edges | None:
    """The time and close of the first and last bar of a canonical table (None: no bars):
    what checks across partition boundaries compare, without the rows in between."""
    n = table.num_rows
    if not n:
        return None
    ends = table.select([TS, VALUE_COLUMNS[3]]).take(arrow_np.from_list([0, n - 1], pa.int64()))
    ts = ends[TS].cast(pa.int64()).to_pylist()
    close = [math.nan if v is None else float(v) for v in ends[VALUE_COLUMNS[3]].to_pylist()]
    return (int(ts[0]), close[0]), (int(ts[1]), close[1])


def boundary_jump(previous: tuple[int, float], first: tuple[int, float], threshold: float,
                  ) -> ConformanceReport:
    """``price_jump`` of a partition's first bar against the last bar before it (the bars as
    (time, close)); only the times and closes are at hand there, so only they are shown."""
    report = ConformanceReport()
    jump, move = price_moves(np.array([previous[1]]), np.array([first[1]]), threshold)
    if jump[0]:
        report.add("price_jump", 1, [first[0]], [
            f"{iso(first[0])} close={_raw_text(first[1])}; close moved {move[0]:+.1%} from the "
            f"previous close {_raw_text(previous[1])} at {iso(previous[0])}, the last bar before "
            "this partition"])
    return report


def refusal_hints(report: ConformanceReport, refused: Mapping[str, int]) -> list[str]:
    """Fixes that the findings of a refused request point to, before the general one."""
    hints = []
    inconsistent = report.counts.get("ohlc_inconsistent", 0)
    if "ohlc_inconsistent" in refused and inconsistent and report.close_below == inconsistent:
        hints.append(
            "in every ohlc_inconsistent row only `close` is off, below `low`: if `close` "
            "is an adjusted close (mapped to a column such as `Adj Close`), map it to the raw "
            "close and set `adjustment:` on the preset to ask for adjusted bars (see "
            "docs/sources.md#adjustment)")
    return hints


def _price_jumps(found: _Found, close: np.ndarray, threshold: float) -> None:
    """Bars whose close moved beyond ``threshold`` from the previous bar's close."""
    if close.size < 2:
        return
    jump, move = price_moves(close[:-1], close[1:], threshold)
    later = _Found(found.report, found.rows, found.idx[1:], found.t[1:])
    later.add("price_jump", jump, lambda first: [
        f"; close moved {move[k]:+.1%} from the previous close {_raw_text(float(close[k]))}"
        for k in first.tolist()])


def _calendar_flags(found: _Found, window: TimeRange, interval_ms: int, calendar: Calendar,
                    accepted_gaps: Sequence[TimeRange]) -> None:
    """Bars the calendar expects that are missing (gaps), and bars it has no slot for."""
    t, report = found.t, found.report
    expected = calendar.expected(window, interval_ms)
    if np.array_equal(expected, t):  # t is sorted and unique here
        return
    pos = np.searchsorted(t, expected)
    pos[pos == t.size] = 0
    present = (t[pos] == expected) if t.size else np.zeros(expected.size, dtype=bool)
    missing = expected[~present]
    for accepted in accepted_gaps:  # declared closures and outages are not counted
        missing = missing[(missing < accepted.start) | (missing >= accepted.end)]
    report.add("gap_bars", int(missing.size), missing)
    # Bars the calendar has no slot for (a Friday 17:00 New York bar under 24x5) are real
    # trades the vendor sent: kept, and counted so the calendar choice can be checked.
    slot = np.searchsorted(expected, t)
    slot[slot == expected.size] = 0
    found.add("off_calendar_bars",
              (expected[slot] != t) if expected.size else np.ones(t.size, dtype=bool))
