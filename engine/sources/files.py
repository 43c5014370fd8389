"""Vendor files as they come: CSV, Parquet or JSON dumps on any fsspec URL or glob (DESIGN §7).

Options (every one is described in docs/sources.md, generated from :class:`FilesOptions`)::

    url: "data/{symbol}.csv.gz"   # fsspec URL or glob; {symbol} filled in; relative to catalog
    format: csv                   # csv | parquet | json
    skip_rows: 0                  # csv: banner lines before the header
    header: true                  # csv: false: columns are named by position (0, 1, ...)
    delimiter: ","                # csv
    columns: {ts: Date, open: Open, high: High, low: Low, close: Close, volume: Volume}
    ts_format: "%Y-%m-%d"         # Python strptime format (%f too); or ts_unit: s|ms|us|ns
    timezone: UTC                 # zone of naive timestamps
    symbol_column: null           # for long files holding many symbols
    records: result.{symbol}      # json: dotted path to the list of records
    complete_until: result.last   # json: bars at or after this time are still open
    complete_column: null         # a column that is 1/true for final bars only (OKX confirm)
    file_adjustment: raw          # what the file's prices are: raw | splits | splits_dividends
    adj_close_column: null        # Yahoo's "Adj Close"; or split_column / dividend_column

A dataset may ask for several symbols only when ``url`` (or, for json, ``records``) has
``{symbol}`` or ``symbol_column`` is set: otherwise every symbol would be the same rows
(:meth:`FilesSource.distinguishes_symbols`).

A partition gets the raw rows whose timestamps fall in its window; conformance then sees them
exactly as the vendor wrote them (order, zone, unit, types), and where each was read
(``RawBatch.origin``: file and line). Bars a dump marks as still open (``complete_until``,
``complete_column``) are left out of each file before that, since a bar that may still change
must never be pinned.

Only the files that can hold a window are read, each at most once per resolve, streamed block
by block, so memory does not grow with the history (:mod:`qmtl_engine.sources.files_session`);
what each file holds in time is remembered between runs by the file's identity
(:mod:`qmtl_engine.sources.files_index`), so an extension reads only the files that can hold
its new windows. When the preset's ``adjustment`` differs from ``file_adjustment``, the prices
of a symbol's rows are adjusted once they are all read (:mod:`qmtl_engine.adjust`): a split
scales every bar before it, whichever file of a glob holds it, so such a symbol's history is
read whole (daily equity bars: small).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from qmtl_engine import arrow_np
from qmtl_engine.adjust import ADJ_CLOSE, DIVIDEND, SPLIT, Problem, apply
from qmtl_engine.conformance import SAMPLE_SIZE, RawBatch, TsHints, normalize_ts
from qmtl_engine.contracts import TS, VALUE_COLUMNS
from qmtl_engine.errors import SourceError
from qmtl_engine.ranges import TimeRange
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.files_session import ROW, Session, session_for
from qmtl_engine.sources.json_records import RecordsError, find, records_table
from qmtl_engine.sources.options import FilesOptions, SourceOptions

CSV_BLOCK = 1 << 20  # bytes of CSV read at a time (pyarrow holds ~60 of them in flight)
PARQUET_BATCH = 1 << 16  # rows of Parquet read at a time


def _is_url(text: str) -> bool:
    return "://" in text or text.startswith("/")


class FilesSource(Source):
    name: ClassVar[str] = "files"
    Options: ClassVar[type[SourceOptions]] = FilesOptions
    symbols_fix: ClassVar[str] = (
        "add {symbol} to the files source's `url` (one file per symbol), or set "
        "`symbol_column` to the column that names each row's symbol")

    def __init__(self, options: FilesOptions, *, base_dir: str) -> None:
        self.options = options
        self.base_dir = base_dir
        self._session: Session | None = None  # the files of the symbol served last

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        parsed = cls._parse(FilesOptions, options)
        return cls(parsed, base_dir=base_dir)

    @classmethod
    def distinguishes_symbols(cls, options: dict[str, Any]) -> bool:
        parsed = cast(FilesOptions, cls.parse_options(options))
        return ("{symbol}" in parsed.url or "{symbol}" in (parsed.records or "")
                or parsed.symbol_column is not None)

    def data_extent(self, symbol: str) -> tuple[int, int] | None:
        """The first and last time of the symbol's rows (known once its files are listed and
        summed up, from the index or by reading them)."""
        url = self.url_for(symbol)
        with self.read_errors(symbol, url):
            return self._session_of(symbol, url).extent()

    @property
    def hints(self) -> TsHints:
        return TsHints(format=self.options.ts_format, unit=self.options.ts_unit,
                       timezone=self.options.timezone)

    def url_for(self, symbol: str) -> str:
        url = self.options.url.replace("{symbol}", symbol)
        if not _is_url(url):
            url = str(Path(self.base_dir) / url)
        return url

    def _mapping(self) -> dict[str, str]:
        """Canonical name -> column name in the file (positions become f0, f1, ...)."""
        return {k: (f"f{v}" if isinstance(v, int) else v) for k, v in self._raw_columns().items()}

    def ts_column(self) -> str | int | None:
        """The file's timestamp column as the options name it (for messages)."""
        return self._mapping().get(TS)

    def _symbol_col(self) -> str | None:
        s = self.options.symbol_column
        return f"f{s}" if isinstance(s, int) else s

    def _read_json(self, f: Any, symbol: str) -> tuple[pa.Table, object]:
        opts = self.options
        wanted: list[str | int] = [*opts.columns.values()]
        wanted += [c for c in (opts.symbol_column, opts.complete_column) if c is not None]
        defaults = [c for c in (TS, *VALUE_COLUMNS) if c not in opts.columns]
        try:
            document = json.load(f)
        except json.JSONDecodeError as exc:
            raise RecordsError(f"not a JSON document ({exc})",
                               fix="check `format` and that the file is a saved JSON answer"
                               ) from None
        path = opts.records.replace("{symbol}", symbol) if opts.records else None
        table = records_table(document, path, wanted, defaults)
        until = (find(document, opts.complete_until, "complete_until")
                 if opts.complete_until else None)
        if opts.complete_until and (until is None or isinstance(until, dict | list | bool)):
            raise RecordsError(f"{opts.complete_until!r} holds {until!r}, not a time",
                               fix="fix `complete_until`: the path of the dump's last-complete "
                               "time")
        return table, until

    def _raw_columns(self) -> dict[str, str | int]:
        cols: dict[str, str | int] = {c: c for c in (TS, *VALUE_COLUMNS)}
        cols.update(self.options.columns)
        cols.update(self._adjustment_columns())
        return cols

    def _adjustment_columns(self) -> dict[str, str | int]:
        """The adjustment columns the preset's ``adjustment`` reads, under their own names."""
        method = self.options.adjustment_method(self.adjustment)
        if isinstance(method, Problem):
            return {}
        named = {ADJ_CLOSE: self.options.adj_close_column, SPLIT: self.options.split_column,
                 DIVIDEND: self.options.dividend_column}
        return {c: v for c in method.columns if (v := named[c]) is not None}

    def adjusts(self) -> bool:
        """Whether the prices are adjusted (each bar by the events after it: all rows needed)."""
        method = self.options.adjustment_method(self.adjustment)
        return isinstance(method, Problem) or not method.identity

    def adjusted(self, table: pa.Table, times: np.ndarray, symbol: str, url: str) -> pa.Table:
        """``table`` with the preset's adjustment applied (docs/sources.md#adjustment)."""
        method = self.options.adjustment_method(self.adjustment)
        if isinstance(method, Problem):  # catalogs are checked when they load: a guard
            raise SourceError(method.what, source=self.name, symbol=symbol, url=url,
                              fix=method.fix)
        if not method.identity and "close" not in table.column_names:
            raise SourceError(
                f"adjustment {self.adjustment} needs the close column "
                f"{self._mapping()['close']!r}, and it is not in the file", source=self.name,
                symbol=symbol, url=url, fix="fix `columns.close` in the preset's files source "
                "options")
        named = {ADJ_CLOSE: "adj_close", SPLIT: "split", DIVIDEND: "dividend"}
        for column in method.columns:
            if column not in table.column_names:
                option = named[column]
                raise SourceError(
                    f"the {option} column {self._adjustment_columns()[column]!r} is not in the "
                    "file", source=self.name, symbol=symbol, url=url,
                    fix=f"fix `{option}_column` in the preset's files source options")
        try:
            return apply(table, times, method)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SourceError(
                f"cannot adjust the prices ({self.adjustment}): {exc}", source=self.name,
                symbol=symbol, url=url,
                fix="the close, adjusted close, split and dividend columns must hold numbers; "
                "check `columns` and the `*_column` options") from None

    def _complete_col(self) -> str | None:
        c = self.options.complete_column
        return f"f{c}" if isinstance(c, int) else c

    def _require_column(self, table: pa.Table, column: str, option: str, symbol: str,
                        path: str) -> None:
        """The file must hold the column the ``<option>_column`` option names."""
        if column not in table.column_names:
            raise SourceError(
                f"the {option} column {column!r} is not in the file", source=self.name,
                symbol=symbol, url=path,
                fix=f"fix `{option}_column` in the preset's files source options")

    def _shape(self, table: pa.Table, symbol: str, path: str, until: object) -> pa.Table:
        """Rows of ``table`` (a block of one file, as read) under canonical names: only the
        mapped columns and ``ROW`` (each row's position in the file), only ``symbol``'s rows,
        only bars the vendor marks final."""
        mapping = self._mapping()
        extras = [c for c in (self._symbol_col(), self._complete_col()) if c]
        wanted = list(dict.fromkeys([*mapping.values(), *extras, ROW]))
        present = [c for c in wanted if c in table.column_names]
        table = table.select(present)
        sym = self._symbol_col()
        if sym:
            self._require_column(table, sym, "symbol", symbol, path)
            table = table.filter(pc.equal(table[sym].cast(pa.string()),
                                          arrow_np.scalar(symbol, pa.string())))
        done = self._complete_col()
        if done:
            self._require_column(table, done, "complete", symbol, path)
            # Only a bar the vendor marks final is kept: an open one may still change.
            final = pc.is_in(pc.utf8_lower(pc.cast(table[done], pa.string())),
                             value_set=arrow_np.strings(["1", "true"]))
            table = table.filter(pc.fill_null(final, arrow_np.scalar(False, pa.bool_())))
        inverse = {v: k for k, v in mapping.items()}
        table = table.rename_columns([inverse.get(c, c) for c in table.column_names])
        if until is not None and TS in table.column_names:
            table = self._before(table, until, path, symbol)
        return table

    def blocks(self, f: Any, symbol: str, path: str, *, stream: bool = True,
               ) -> tuple[pa.Schema, Iterator[pa.Table]]:
        """The columns of one open file (shaped: :meth:`_shape`) and its rows, block by block,
        each with ``ROW``. CSV is streamed (``stream``) or read whole (when a later block does
        not fit the types read from the first, as :func:`pyarrow.csv.read_csv` handles)."""
        schema, raw, until = self._read_blocks(f, symbol, stream=stream)
        empty = pa.Table.from_batches([], schema=schema)  # (empty_table() imports pandas)
        shaped = self._shape(_numbered(empty, 0), symbol, path, until).schema

        def shaped_blocks() -> Iterator[pa.Table]:
            offset = 0
            for block in raw:
                yield self._shape(_numbered(block, offset), symbol, path, until)
                offset += block.num_rows

        return shaped, shaped_blocks()

    def _read_blocks(self, f: Any, symbol: str, *, stream: bool,
                     ) -> tuple[pa.Schema, Iterator[pa.Table], object]:
        """The file's columns as read, its blocks, and (json) the raw ``complete_until``."""
        if self.options.format == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(f)
            return pf.schema_arrow, (pa.Table.from_batches([b]) for b in
                                     pf.iter_batches(batch_size=PARQUET_BATCH)), None
        if self.options.format == "json":
            table, until = self._read_json(f, symbol)
            return table.schema, iter([table]), until
        from pyarrow import csv

        ts_col = self._mapping().get(TS)
        types = {ts_col: pa.string()} if ts_col and self.options.ts_unit is None else {}
        for extra in (self._symbol_col(), self._complete_col()):
            if extra:
                types[extra] = pa.string()
        read = csv.ReadOptions(skip_rows=self.options.skip_rows, block_size=CSV_BLOCK,
                               autogenerate_column_names=not self.options.header)
        parse = csv.ParseOptions(delimiter=self.options.delimiter)
        convert = csv.ConvertOptions(column_types=types)
        if not stream:
            table = csv.read_csv(f, read_options=read, parse_options=parse,
                                 convert_options=convert)
            return table.schema, iter([table]), None
        reader = csv.open_csv(f, read_options=read, parse_options=parse,
                              convert_options=convert)
        return reader.schema, (pa.Table.from_batches([b]) for b in reader), None

    def _before(self, table: pa.Table, until: object, path: str, symbol: str) -> pa.Table:
        """The rows of ``table`` before the dump's complete-until time (bars after are open)."""
        hints = TsHints(unit=self.options.ts_unit, timezone=self.options.timezone)
        limit = normalize_ts(arrow_np.strings([str(until)]), hints)
        if not limit.valid[0]:
            raise SourceError(
                f"cannot read {self.options.complete_until!r} ({until!r}) as a time",
                source=self.name, symbol=symbol, url=path,
                fix="fix `complete_until`: the path of the dump's last-complete time")
        try:
            norm = normalize_ts(table[TS], self.hints)
        except ValueError:  # no times at all: reading the whole file reports it
            return table
        keep = ~norm.valid | (norm.ms < limit.ms[0])  # unreadable rows stay, to be counted
        return table.filter(arrow_np.array(keep, pa.bool_()))

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        """The rows of ``symbol`` attributed to ``window``, read from the files that can hold
        them (:class:`qmtl_engine.sources.files_session.Session`), with where each was read."""
        url = self.url_for(symbol)
        with self.read_errors(symbol, url):
            return self._session_of(symbol, url).fetch(window)

    def _session_of(self, symbol: str, url: str) -> Session:
        session = self._session
        if session is None or (session.symbol, session.url) != (symbol, url):
            # listed once per source: the engine builds one per resolve, thread and symbol
            session = self._session = session_for(self, symbol, url)
        return session

    @contextmanager
    def read_errors(self, symbol: str, url: str) -> Iterator[None]:
        """Failures to list or read the files of ``url``, as one :class:`SourceError`."""
        try:
            yield
        except RecordsError as exc:
            raise SourceError(f"cannot read {posixpath.basename(url)}: {exc}", source=self.name,
                              symbol=symbol, url=url, fix=exc.fix) from None
        except FileNotFoundError:
            raise SourceError(
                f"no file for symbol {symbol!r}", source=self.name, symbol=symbol, url=url,
                fix="check the symbol and the `url` option of the preset's files source",
            ) from None
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
            raise SourceError(
                f"cannot read {posixpath.basename(url)}: {exc}", source=self.name,
                symbol=symbol, url=url,
                fix="check the file's format options (format, skip_rows, header, delimiter, "
                "columns)",
            ) from None

    def no_times_error(self, symbol: str, url: str, exc: ValueError | None,
                       sample: Sequence[str]) -> SourceError:
        """Why no row could be attributed to a partition: the column's type cannot be read as
        times (``exc``), or not one value could (``sample``: the first raw values)."""
        if exc is not None:
            return SourceError(f"cannot read the timestamp column: {exc}", source=self.name,
                               symbol=symbol, url=url,
                               fix="set `ts_format` or `ts_unit` in the preset's files source "
                               "options")
        first = ", ".join(repr(v) for v in sample[:SAMPLE_SIZE])
        how = (f"with ts_format {self.options.ts_format!r}" if self.options.ts_format
               else "as dates, times or epoch numbers")
        return SourceError(
            f"no timestamp in the file could be read {how}; first values: {first}",
            source=self.name, symbol=symbol, url=url,
            fix="set `ts_format` in the preset's files source options to the file's "
            "format in Python strptime codes (e.g. '%d.%m.%Y %H:%M:%S.%f'), or `ts_unit` "
            "for epoch numbers")


def _numbered(table: pa.Table, offset: int) -> pa.Table:
    """``table`` with each row's position in its file (counted from 0) as ``ROW``."""
    return table.append_column(ROW, arrow_np.array(
        np.arange(offset, offset + table.num_rows, dtype=np.int64), pa.int64()))
