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

Each file is read once per resolve. A partition gets the raw rows whose timestamps fall in its
window; conformance then sees them exactly as the vendor wrote them (order, zone, unit, types).
Bars a dump marks as still open (``complete_until``, ``complete_column``) are left out of each
file before that, since a bar that may still change must never be pinned. When the preset's
``adjustment`` differs from ``file_adjustment``, the prices of a symbol's rows are adjusted once
they are all read (:mod:`qmtl_engine.adjust`): a split scales every bar before it, whichever file
of a glob holds it.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import fsspec
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
from qmtl_engine.sources.json_records import RecordsError, find, records_table
from qmtl_engine.sources.options import FilesOptions, SourceOptions

_GLOB_CHARS = set("*?[")


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
        self._cache: dict[str, tuple[pa.Table, np.ndarray]] = {}

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
        """The first and last time in the symbol's files (read once per resolve anyway)."""
        times = self._load(symbol)[1]
        return (int(times.min()), int(times.max())) if times.size else None

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

    def _symbol_col(self) -> str | None:
        s = self.options.symbol_column
        return f"f{s}" if isinstance(s, int) else s

    def _read_table(self, f: Any, symbol: str) -> tuple[pa.Table, object]:
        """The file's columns as read, and (json) the raw ``complete_until`` value."""
        mapping = self._mapping()
        if self.options.format == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(f), None
        if self.options.format == "json":
            return self._read_json(f, symbol)
        from pyarrow import csv

        ts_col = mapping.get(TS)
        types = {ts_col: pa.string()} if ts_col and self.options.ts_unit is None else {}
        for extra in (self._symbol_col(), self._complete_col()):
            if extra:
                types[extra] = pa.string()
        return csv.read_csv(
            f,
            read_options=csv.ReadOptions(skip_rows=self.options.skip_rows,
                                         autogenerate_column_names=not self.options.header),
            parse_options=csv.ParseOptions(delimiter=self.options.delimiter),
            convert_options=csv.ConvertOptions(column_types=types),
        ), None

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

    def _adjusted(self, table: pa.Table, times: np.ndarray, symbol: str, url: str) -> pa.Table:
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

    def _read_one(self, fs: Any, path: str, symbol: str) -> pa.Table:
        mapping = self._mapping()
        extras = [c for c in (self._symbol_col(), self._complete_col()) if c]
        wanted = list(dict.fromkeys([*mapping.values(), *extras]))
        with fs.open(path, "rb", compression="infer") as f:
            table, until = self._read_table(f, symbol)
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

    def _load(self, symbol: str) -> tuple[pa.Table, np.ndarray]:
        """The rows of ``symbol`` and, per row, the time that decides its partition."""
        if symbol in self._cache:
            return self._cache[symbol]
        url = self.url_for(symbol)
        table = self._read_all(symbol, url)
        times = self._row_times(table, symbol, url)
        table = self._adjusted(table, times, symbol, url)
        self._cache = {symbol: (table, times)}  # one file at a time: memory stays bounded
        return table, times

    def _read_all(self, symbol: str, url: str) -> pa.Table:
        """Every file of ``url`` (a glob too) in one table; read errors as SourceError."""
        try:
            fs, path = fsspec.core.url_to_fs(url)
            paths = sorted(fs.glob(path)) if _GLOB_CHARS & set(path) else [path]
            if not paths:
                raise FileNotFoundError(path)
            tables = [self._read_one(fs, p, symbol) for p in paths]
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
        table = pa.concat_tables(tables, promote_options="permissive")
        if TS not in table.column_names:
            raise SourceError(
                f"the timestamp column {self._mapping().get(TS)!r} is not in the file",
                source=self.name, symbol=symbol, url=url,
                fix="fix `columns.ts` in the preset's files source options",
            )
        if table.num_rows == 0:
            raise SourceError(
                f"the file has no rows for symbol {symbol!r}", source=self.name, symbol=symbol,
                url=url, fix="check the symbol's spelling against the file")
        return table

    def _row_times(self, table: pa.Table, symbol: str, url: str) -> np.ndarray:
        """Epoch milliseconds per row; a row whose time cannot be read takes its neighbour's
        (conformance then counts it as ``invalid_timestamp``)."""
        try:
            norm = normalize_ts(table[TS], self.hints)
        except ValueError as exc:
            raise SourceError(f"cannot read the timestamp column: {exc}", source=self.name,
                              symbol=symbol, url=url,
                              fix="set `ts_format` or `ts_unit` in the preset's files source "
                              "options") from None
        if not norm.valid.any():  # nothing could be attributed to a partition: say so
            first = ", ".join(repr(str(v)) for v in table[TS].slice(0, SAMPLE_SIZE).to_pylist())
            how = (f"with ts_format {self.options.ts_format!r}" if self.options.ts_format
                   else "as dates, times or epoch numbers")
            raise SourceError(
                f"no timestamp in the file could be read {how}; first values: {first}",
                source=self.name, symbol=symbol, url=url,
                fix="set `ts_format` in the preset's files source options to the file's "
                "format in Python strptime codes (e.g. '%d.%m.%Y %H:%M:%S.%f'), or `ts_unit` "
                "for epoch numbers")
        ms = arrow_np.array(norm.ms, pa.int64(), valid=norm.valid)
        # A row without a valid time goes to the partition of the row before it (or after it).
        attributed = pc.fill_null_backward(pc.fill_null_forward(ms))
        return np.asarray(arrow_np.values(attributed, null=0), dtype=np.int64)

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        table, times = self._load(symbol)
        mask = (times >= window.start) & (times < window.end)
        return RawBatch(table.filter(arrow_np.array(mask, pa.bool_())), self.hints)
