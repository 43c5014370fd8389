"""Vendor files as they come: CSV or Parquet on any fsspec URL or glob (DESIGN §7).

Options::

    url: "data/{symbol}.csv.gz"   # fsspec URL or glob; {symbol} filled in; relative to catalog
    format: csv                   # csv | parquet
    skip_rows: 0                  # banner lines before the header
    header: true                  # false: columns are named by position (0, 1, ...)
    delimiter: ","
    columns: {ts: Date, open: Open, high: High, low: Low, close: Close, volume: Volume}
    ts_format: "%Y-%m-%d"         # Python strptime format (%f too); or ts_unit: s|ms|us|ns
    timezone: UTC                 # zone of naive timestamps
    symbol_column: null           # for long files holding many symbols

A dataset may ask for several symbols only when ``url`` has ``{symbol}`` or ``symbol_column`` is
set: otherwise every symbol would be the same file (:meth:`FilesSource.distinguishes_symbols`).

Each file is read once per resolve. A partition gets the raw rows whose timestamps fall in its
window; conformance then sees them exactly as the vendor wrote them (order, zone, unit, types).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from qmtl_engine.conformance import SAMPLE_SIZE, RawBatch, TsHints, normalize_ts
from qmtl_engine.contracts import TS, VALUE_COLUMNS
from qmtl_engine.errors import SourceError
from qmtl_engine.ranges import TimeRange
from qmtl_engine.sources.base import Source
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
        return "{symbol}" in parsed.url or parsed.symbol_column is not None

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
        cols: dict[str, str | int] = {c: c for c in (TS, *VALUE_COLUMNS)}
        cols.update(self.options.columns)
        return {k: (f"f{v}" if isinstance(v, int) else v) for k, v in cols.items()}

    def _symbol_col(self) -> str | None:
        s = self.options.symbol_column
        return f"f{s}" if isinstance(s, int) else s

    def _read_one(self, fs: Any, path: str, symbol: str) -> pa.Table:
        mapping = self._mapping()
        wanted = list(dict.fromkeys([*mapping.values(), *filter(None, [self._symbol_col()])]))
        with fs.open(path, "rb", compression="infer") as f:
            if self.options.format == "parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(f)
            else:
                from pyarrow import csv

                ts_col = mapping.get(TS)
                types = {ts_col: pa.string()} if ts_col and self.options.ts_unit is None else {}
                if self._symbol_col():
                    types[str(self._symbol_col())] = pa.string()
                table = csv.read_csv(
                    f,
                    read_options=csv.ReadOptions(skip_rows=self.options.skip_rows,
                                                 autogenerate_column_names=not self.options.header),
                    parse_options=csv.ParseOptions(delimiter=self.options.delimiter),
                    convert_options=csv.ConvertOptions(column_types=types),
                )
        present = [c for c in wanted if c in table.column_names]
        table = table.select(present)
        sym = self._symbol_col()
        if sym:
            if sym not in table.column_names:
                raise SourceError(
                    f"the symbol column {sym!r} is not in the file", source=self.name,
                    symbol=symbol, url=path,
                    fix="fix `symbol_column` in the preset's files source options")
            table = table.filter(pc.equal(table[sym].cast(pa.string()), symbol))
        inverse = {v: k for k, v in mapping.items()}
        return table.rename_columns([inverse.get(c, c) for c in table.column_names])

    def _load(self, symbol: str) -> tuple[pa.Table, np.ndarray]:
        if symbol in self._cache:
            return self._cache[symbol]
        url = self.url_for(symbol)
        try:
            fs, path = fsspec.core.url_to_fs(url)
            paths = sorted(fs.glob(path)) if _GLOB_CHARS & set(path) else [path]
            if not paths:
                raise FileNotFoundError(path)
            tables = [self._read_one(fs, p, symbol) for p in paths]
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
        ms = pa.array(norm.ms, mask=~norm.valid)
        # A row without a valid time goes to the partition of the row before it (or after it).
        attributed = pc.fill_null_backward(pc.fill_null_forward(ms))
        times = np.asarray(attributed.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        self._cache = {symbol: (table, times)}  # one file at a time: memory stays bounded
        return table, times

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        table, times = self._load(symbol)
        mask = (times >= window.start) & (times < window.end)
        return RawBatch(table.filter(pa.array(mask)), self.hints)
