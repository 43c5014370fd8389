"""The files of one symbol while a resolve runs: which can hold a window, each read once.

A :class:`Session` lists the files of a symbol's ``url`` (a glob too) and learns what span of
time each holds, from the index of earlier runs (:mod:`qmtl_engine.sources.files_index`) where
that is trusted, else by reading the file. A file that is read is streamed block by block into
a temporary Arrow IPC file on the local disk (the *spill*), with each row's own time and its
position in the file, so memory holds one block at a time however long the file, and no file
is read twice: a window is cut from the spilled blocks whose times can reach it.

Rows are attributed to windows exactly as a read of the whole glob would: files in path order,
rows in file order, a row whose time cannot be read takes the time of the readable row before
it (or, before the first readable row of all, the time of that row). So the partitions, and
the locks, are the ones a whole read gives, whatever set of files a window needs. Times are
read per block with conformance's own rules; the two of them that weigh a whole column (whether
text holds epoch numbers, and the epoch unit guessed from their size) weigh one block, which
changes nothing unless one history mixes epoch units or numbers and dates (such rows are
refused as off the grid or unreadable either way).

Sessions are shared by the threads of a resolve (``--jobs``): the first to ask for a symbol's
files creates one, the others find it while it lives and its files are still the ones they list.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from qmtl_engine import arrow_np
from qmtl_engine.cache import default_cache_dir
from qmtl_engine.conformance import SAMPLE_SIZE, RawBatch, RowOrigin, TsHints, normalize_ts
from qmtl_engine.contracts import TS
from qmtl_engine.errors import SourceError
from qmtl_engine.ranges import TimeRange
from qmtl_engine.sources.csv_lines import LineCounter, row_lines
from qmtl_engine.sources.files_index import (
    RACY_SECONDS,
    FileSummary,
    Span,
    SpanIndex,
    file_identity,
    overlaps,
)

ROW = "__qmtl_row"  # each row's position in its file, carried until the rows are handed over
TIME = "__qmtl_time"  # each spilled row's own epoch ms (null: unreadable)
FILE = "__qmtl_file"  # which file of the listing a row is from (adjusted histories)
_GLOB_CHARS = set("*?[")
_log = logging.getLogger("qmtl_lock.files")


class Reader(Protocol):
    """What a session needs of the files source (:class:`qmtl_engine.sources.files.FilesSource`):
    its options, how it reads one file, and its messages."""

    name: ClassVar[str]
    options: Any
    base_dir: str
    adjustment: str

    def __init__(self, options: Any, *, base_dir: str) -> None: ...

    @property
    def hints(self) -> TsHints: ...

    def ts_column(self) -> str | int | None: ...

    def blocks(self, f: Any, symbol: str, path: str, *, stream: bool = True,
               ) -> tuple[pa.Schema, Iterator[pa.Table]]: ...

    def no_times_error(self, symbol: str, url: str, exc: ValueError | None,
                       sample: Sequence[str]) -> SourceError: ...

    def adjusts(self) -> bool: ...

    def adjusted(self, table: pa.Table, times: np.ndarray, symbol: str, url: str,
                 ) -> pa.Table: ...


@dataclass(frozen=True)
class Listed:
    """One file of a glob: its path, how messages name it, and its identity for the index."""

    path: str
    shown: str
    key: dict[str, Any]
    stamp: float | None  # the time that alone tells a rewrite (None: a content tag does)


def list_files(fs: Any, pattern: str) -> tuple[Listed, ...]:
    """The files ``pattern`` names, in path order; FileNotFoundError when there are none.

    Listed afresh: a listing an object store's client cached earlier in this process could
    name an object's old ETag, and the index would then be believed for a rewritten object."""
    fs.invalidate_cache()
    if _GLOB_CHARS & set(pattern):
        infos = fs.glob(pattern, detail=True)
        if not infos:
            raise FileNotFoundError(pattern)
    else:
        infos = {pattern: fs.info(pattern)}
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    out = []
    for path in sorted(infos):
        key, stamp = file_identity(protocol, infos[path])
        shown = path if protocol in ("file", "local") else fs.unstrip_protocol(path)
        out.append(Listed(path, shown, key, stamp))
    return tuple(out)


_SESSIONS: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()
_SESSIONS_LOCK = threading.Lock()


def session_for(source: Reader, symbol: str, url: str) -> Session:
    """The live session of ``symbol``'s files under ``source``'s options, or a new one when
    there is none or its files changed since it listed them."""
    import fsspec

    fs, pattern = fsspec.core.url_to_fs(url)
    listing = list_files(fs, pattern)
    adjustment = getattr(source, "adjustment", "raw")
    name = json.dumps([source.options.model_dump(mode="json"), source.base_dir, symbol, url,
                       adjustment])
    shareable = all(f.key for f in listing)  # else a change could not be seen: not shared
    with _SESSIONS_LOCK:
        found = _SESSIONS.get(name) if shareable else None
        if found is None or found.listing != listing:
            reader = type(source)(source.options, base_dir=source.base_dir)  # its own
            reader.adjustment = adjustment
            found = Session(reader, symbol, url, fs, listing)
            if shareable:
                _SESSIONS[name] = found
        return found


@dataclass
class Spilled:
    """One file as read: its blocks in a local Arrow IPC file, with their spans."""

    path: Path
    spans: list[Span]
    blank: np.ndarray | None  # csv: empty lines (for line numbers)
    summary: FileSummary

    def window(self, start: int, end: int, carry: int) -> list[pa.RecordBatch]:
        """The rows attributed to ``[start, end)``, when rows before the file's first readable
        time take ``carry``; only the blocks that can reach the window are read."""
        out = []
        with pa.OSFile(str(self.path)) as f:
            reader = pa.ipc.open_file(f)
            for j, span in enumerate(self.spans):
                if overlaps(span.attributed(carry), start, end):
                    block = reader.get_batch(j)
                    times = pc.fill_null(pc.fill_null_forward(block.column(TIME)),
                                         arrow_np.scalar(carry, pa.int64()))
                    keep = pc.and_(pc.greater_equal(times, arrow_np.scalar(start, pa.int64())),
                                   pc.less(times, arrow_np.scalar(end, pa.int64())))
                    rows = block.filter(keep)
                    if rows.num_rows:
                        out.append(rows)
                if span.last is not None:
                    carry = span.last
        return out


@dataclass(frozen=True)
class _Plan:
    summaries: list[FileSummary]
    carries: list[int]  # the time rows before each file's first readable one take
    bounds: list[tuple[int, int] | None]  # the times each file's rows are attributed to
    schema: pa.Schema  # of every file together (as one concatenation of them all would be)


@dataclass
class Session:
    """One symbol's files for the life of the sources that share it (see the module doc)."""

    reader: Reader
    symbol: str
    url: str
    fs: Any
    listing: tuple[Listed, ...]
    _plan: _Plan | None = field(default=None, repr=False)
    _spilled: dict[int, Spilled] = field(default_factory=dict, repr=False)
    _whole: tuple[pa.Table, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._file_locks = [threading.Lock() for _ in self.listing]
        self._dir = tempfile.TemporaryDirectory(prefix="qmtl-lock-files-")
        # what a file's summary depends on: how it is read (the adjustment decides columns too)
        context = [self.reader.options.model_dump(mode="json"), self.symbol,
                   self.reader.adjustment]
        self.index = SpanIndex(default_cache_dir() / "files-index", context)

    def fetch(self, window: TimeRange) -> RawBatch:
        plan = self._prepare()
        if self.reader.adjusts():
            return self._adjusted_window(window)
        parts: list[pa.Table] = []
        shown: list[str] = []
        which: list[np.ndarray] = []
        lines: list[np.ndarray] = []
        for i, bounds in enumerate(plan.bounds):
            if not overlaps(bounds, window.start, window.end):
                continue
            spilled = self._spill(i)
            got = spilled.window(window.start, window.end, plan.carries[i])
            if not got:
                continue
            table = pa.Table.from_batches(got)
            rows = np.asarray(arrow_np.values(table[ROW]), dtype=np.int64)
            which.append(np.full(rows.size, len(shown), dtype=np.int32))
            lines.append(self._lines(spilled, rows))
            shown.append(self.listing[i].shown)
            parts.append(table.drop_columns([ROW, TIME]))
        origin = RowOrigin(tuple(shown), _joined(which, np.int32), _joined(lines, np.int64))
        return RawBatch(_as_schema(parts, plan.schema), self.reader.hints, origin)

    def extent(self) -> tuple[int, int] | None:
        """The earliest and latest time the symbol's rows are attributed to."""
        bounds = [b for b in self._prepare().bounds if b is not None]
        return (min(b[0] for b in bounds), max(b[1] for b in bounds)) if bounds else None

    def _adjusted_window(self, window: TimeRange) -> RawBatch:
        """A window of adjusted prices: each bar is scaled by the events after it, wherever
        they are, so the whole history is read (once) and adjusted as one table."""
        with self._lock:
            if self._whole is None:
                self._whole = self._read_whole()
        table, times = self._whole
        rows = table.filter(arrow_np.array((times >= window.start) & (times < window.end),
                                           pa.bool_()))
        which = np.asarray(arrow_np.values(rows[FILE]), dtype=np.int32)
        line = np.zeros(rows.num_rows, dtype=np.int64)
        position = np.asarray(arrow_np.values(rows[ROW]), dtype=np.int64)
        for i in np.unique(which):
            at = which == i
            line[at] = self._lines(self._spilled[int(i)], position[at])
        origin = RowOrigin(tuple(f.shown for f in self.listing), which, line)
        return RawBatch(rows.drop_columns([ROW, TIME, FILE]), self.reader.hints, origin)

    def _read_whole(self) -> tuple[pa.Table, np.ndarray]:
        """Every row of every file, as one concatenation types them, adjusted; and the time
        that decides each row's window."""
        tables = []
        for i in range(len(self.listing)):
            spilled = self._spill(i)
            with pa.OSFile(str(spilled.path)) as f:
                whole = pa.ipc.open_file(f).read_all()
            tables.append(whole.append_column(FILE, arrow_np.array(
                np.full(whole.num_rows, i, dtype=np.int32), pa.int32())))
        table = pa.concat_tables(tables, promote_options="permissive")
        times = pc.fill_null_backward(pc.fill_null_forward(table[TIME].combine_chunks()))
        ms = np.asarray(arrow_np.values(times, null=0), dtype=np.int64)
        return self.reader.adjusted(table, ms, self.symbol, self.url), ms

    def _lines(self, spilled: Spilled, rows: np.ndarray) -> np.ndarray:
        if spilled.blank is None:  # json records, Parquet rows: positions from 1
            return rows + 1
        opts = self.reader.options
        return row_lines(rows, spilled.blank, skip_rows=opts.skip_rows, header=opts.header)

    # -- what each file holds ----------------------------------------------------------------
    def _prepare(self) -> _Plan:
        with self._lock:
            if self._plan is None:
                self._plan = self._make_plan()
            return self._plan

    def _make_plan(self) -> _Plan:
        """Every file's summary (from the index, else read now, in path order), and checks
        that need them all, in the order a read of the whole glob made them."""
        summaries = []
        for i, listed in enumerate(self.listing):
            known = self.index.get(listed.key) if listed.key else None
            summaries.append(known if known is not None else self._spill(i).summary)
        schema = pa.unify_schemas([s.schema for s in summaries], promote_options="permissive")
        src = self.reader
        if TS not in schema.names:
            raise SourceError(
                f"the timestamp column {src.ts_column()!r} is not in the file",
                source=src.name, symbol=self.symbol, url=self.url,
                fix="fix `columns.ts` in the preset's files source options")
        if not sum(s.span.rows for s in summaries):
            raise SourceError(
                f"the file has no rows for symbol {self.symbol!r}", source=src.name,
                symbol=self.symbol, url=self.url,
                fix="check the symbol's spelling against the file")
        whole = reduce(Span.then, (s.span for s in summaries), Span())
        if whole.first is None:  # nothing could be attributed to a partition: say so
            sample = [v for s in summaries for v in s.sample][:SAMPLE_SIZE]
            raise src.no_times_error(self.symbol, self.url, None, sample)
        carries, bounds = [], []
        carry = whole.first  # before the first readable time, rows take that time
        for s in summaries:
            carries.append(carry)
            bounds.append(s.span.attributed(carry))
            carry = s.span.last if s.span.last is not None else carry
        return _Plan(summaries, carries, bounds, schema)

    def _spill(self, i: int) -> Spilled:
        """File ``i`` read into the spill (once: threads asking meanwhile wait for it)."""
        with self._file_locks[i]:
            if i in self._spilled:
                return self._spilled[i]
            listed = self.listing[i]
            started = time.time()
            try:
                spilled = self._read(i, stream=True)
            except pa.ArrowInvalid:
                if self.reader.options.format != "csv":
                    raise
                # A later block did not fit the types of the first: read the file whole, as
                # pyarrow's read_csv widens them (or says what is wrong with it).
                spilled = self._read(i, stream=False)
            self._spilled[i] = spilled
            _log.info("files source read file=%s rows=%d", listed.shown,
                      spilled.summary.span.rows)
            if listed.key and (listed.stamp is None or started - listed.stamp >= RACY_SECONDS):
                self.index.put(listed.key, spilled.summary)
            return spilled

    def _read(self, i: int, *, stream: bool) -> Spilled:
        listed, src = self.listing[i], self.reader
        target = Path(self._dir.name) / f"{i}.arrow"
        spans: list[Span] = []
        sample: list[str] = []
        with self.fs.open(listed.path, "rb", compression="infer") as raw:
            counter = LineCounter(raw) if src.options.format == "csv" else None
            schema, blocks = src.blocks(counter or raw, self.symbol, listed.path, stream=stream)
            with pa.ipc.new_file(str(target), schema.append(pa.field(TIME, pa.int64()))) as out:
                for block in blocks:
                    if not block.num_rows:
                        continue
                    times, span = self._times(block)
                    if TS in block.column_names and len(sample) < SAMPLE_SIZE:
                        sample += [str(v) for v in block[TS].slice(0, SAMPLE_SIZE).to_pylist()]
                    spilled = block.append_column(TIME, times).combine_chunks()
                    out.write_batch(spilled.to_batches()[0])
                    spans.append(span)
            if counter is not None:
                while counter.read(1 << 20):  # lines after the last row (none, or empty ones)
                    pass
        blank = counter.blank_lines() if counter is not None else None
        summary = FileSummary(reduce(Span.then, spans, Span()),
                              schema.remove(schema.get_field_index(ROW)), tuple(sample))
        return Spilled(target, spans, blank, summary)

    def _times(self, block: pa.Table) -> tuple[pa.Array, Span]:
        """Each row's own time (null: unreadable) and the block's span."""
        n = block.num_rows
        if TS not in block.column_names:
            return pa.nulls(n, pa.int64()), Span(n, n)
        try:
            norm = normalize_ts(block[TS], self.reader.hints)
        except ValueError as exc:
            raise self.reader.no_times_error(self.symbol, self.url, exc, ()) from None
        valid = np.flatnonzero(norm.valid)
        times = arrow_np.array(norm.ms, pa.int64(), valid=norm.valid)
        if not valid.size:
            return times, Span(n, n)
        ok = norm.ms[valid]
        return times, Span(n, int(valid[0]), int(ok[0]), int(ok[-1]), int(ok.min()),
                           int(ok.max()))


def _joined(parts: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _as_schema(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """``parts`` in one table of ``schema``: as a concatenation of every file would type them
    (a column a file lacks is null there)."""
    if not parts:
        return pa.Table.from_batches([], schema=schema)
    tables = []
    for part in parts:
        cols = [part[f.name].cast(f.type) if f.name in part.column_names
                else pa.nulls(part.num_rows, f.type) for f in schema]
        tables.append(pa.table(cols, schema=schema))
    return pa.concat_tables(tables)
