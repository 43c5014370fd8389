"""Price adjustment: raw bars, split-adjusted bars, or bars adjusted for splits and dividends.

A preset declares the adjustment it pins (``adjustment: raw | splits | splits_dividends``); it
goes into the request, the fingerprint header (when not ``raw``) and ``show``, since a backtest on
the other kind of bars is a different backtest. See docs/sources.md#adjustment.

The adjustments are *backward*: the newest bar keeps its traded price and every bar before a
corporate action is scaled, so the series has no jump on the ex-date:

- **split** of ``r`` for 1 (a 4:1 split is ``r = 4``) on the ex-date row ``i``: every bar before
  ``i`` has its prices multiplied by ``1 / r`` and its volume by ``r``;
- **cash dividend** ``d`` on the ex-date row ``i``: every bar before ``i`` has its prices
  multiplied by ``1 - d / close[i-1]``, the CRSP multiplier Yahoo uses (``close[i-1]`` is the
  close of the bar before the ex-date); volume is not changed;
- **adjusted close column** (Yahoo's ``Adj Close``): every price of a bar is multiplied by
  ``adj_close / close`` of that bar and ``close`` becomes ``adj_close``; volume is not changed.
  That is what yfinance's ``auto_adjust`` does.

The cumulative factor of bar ``j`` is the product of the multipliers of every event after it.
:func:`plan_adjustment` decides, without reading data, how (and whether) the wanted adjustment
can be made from what a file holds; :func:`apply` does it on whole columns with numpy. This module
imports numpy and pyarrow only inside :func:`apply`: the presets (and ``qmtl-lock check``) use the
plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

Adjustment = Literal["raw", "splits", "splits_dividends"]
ADJUSTMENTS: tuple[str, ...] = get_args(Adjustment)
DEFAULT_ADJUSTMENT: Adjustment = "raw"
ANCHOR = "docs/sources.md#adjustment"

# Names the files source gives the adjustment columns it reads (never contract columns).
ADJ_CLOSE, SPLIT, DIVIDEND = "__adj_close", "__split", "__dividend"
PRICE_COLUMNS = ("open", "high", "low", "close")


class Problem(NamedTuple):
    """Why an adjustment cannot be made, and what to set so that it can."""

    what: str
    fix: str


@dataclass(frozen=True)
class Method:
    """How to turn the file's prices into the wanted ones (all defaults: keep them as they are).

    ``price_splits`` / ``volume_splits``: +1 applies the split factor (prices × S, volume ÷ S),
    -1 undoes it (prices ÷ S, volume × S). ``ratio``: prices × adj_close / close. ``dividends``:
    prices × the dividend factor.
    """

    ratio: bool = False
    price_splits: int = 0
    volume_splits: int = 0
    dividends: bool = False

    @property
    def identity(self) -> bool:
        return self == Method()

    @property
    def columns(self) -> tuple[str, ...]:
        """The adjustment columns this method reads."""
        out = [ADJ_CLOSE] if self.ratio else []
        if self.price_splits or self.volume_splits:
            out.append(SPLIT)
        if self.dividends:
            out.append(DIVIDEND)
        return tuple(out)


def plan_adjustment(have: str, want: str, *, adj_close: bool, split: bool,
                    dividend: bool) -> Method | Problem:
    """How to get ``want`` prices from a file whose prices are ``have``, given which of the
    adjustment columns (adjusted close, split ratio, dividend) the options name."""
    if want == have:
        return Method()
    if have == "splits_dividends":
        return Problem(
            f"the files hold prices adjusted for splits and dividends (file_adjustment: "
            f"{have}), which cannot be turned back into {want} prices",
            "set `adjustment: splits_dividends` on the preset, or use files with raw prices")
    if want == "splits_dividends":
        if adj_close:  # the ratio is the whole factor, whatever the file's prices are
            return Method(ratio=True, volume_splits=1 if have == "raw" and split else 0)
        if have == "splits" and dividend:
            return Method(dividends=True)
        if have == "raw" and split and dividend:
            return Method(price_splits=1, volume_splits=1, dividends=True)
        need = "`dividend_column`" if have == "splits" else "`split_column` and `dividend_column`"
        return Problem(
            "the files source names no adjusted close column, nor split and dividend columns, "
            f"to make it from the file's prices (file_adjustment: {have})",
            f"set `adj_close_column` (Yahoo's 'Adj Close') or {need} in the preset's files "
            f"source options, or set `adjustment: {have}`; see {ANCHOR}")
    if split:  # raw -> splits, or splits -> raw
        sign = 1 if want == "splits" else -1
        return Method(price_splits=sign, volume_splits=sign)
    verb = "split-adjust" if want == "splits" else "undo the split adjustment of"
    return Problem(
        f"the files source names no split ratio column to {verb} the file's prices with "
        f"(file_adjustment: {have})",
        f"set `split_column` (e.g. Yahoo's 'Stock Splits') in the preset's files source "
        f"options, or set `adjustment: {have}`; see {ANCHOR}")


# -- the math ----------------------------------------------------------------------------------
def backward_factor(multipliers: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per row, the product of the multipliers of every row after it in time (``order`` sorts
    the rows by time), in the rows' own order. The last bar's factor is 1."""
    import numpy as np

    sorted_m = multipliers[order]
    after = np.ones_like(sorted_m)
    if sorted_m.size > 1:
        after[:-1] = np.cumprod(sorted_m[::-1])[::-1][1:]
    out = np.empty_like(after)
    out[order] = after
    return out


def split_multipliers(ratios: np.ndarray) -> np.ndarray:
    """``1 / r`` on rows with a split of ``r`` for 1; 1 where there is none (0, 1, NaN)."""
    import numpy as np

    event = np.isfinite(ratios) & (ratios > 0)
    out = np.ones_like(ratios)
    np.divide(1.0, ratios, out=out, where=event)
    return out


def dividend_multipliers(dividends: np.ndarray, close: np.ndarray,
                         order: np.ndarray) -> np.ndarray:
    """``1 - d / previous close`` on ex-date rows (``d > 0``); 1 elsewhere. The previous close is
    the close of the bar before, in time order; a dividend on the first bar scales no bar."""
    import numpy as np

    d = dividends[order]
    prev = np.full_like(d, np.nan)
    prev[1:] = close[order][:-1]
    m = np.ones_like(d)
    event = np.isfinite(d) & (d > 0)
    event[:1] = False
    m[event] = 1.0 - d[event] / prev[event]  # a missing previous close gives NaN: flagged
    out = np.empty_like(m)
    out[order] = m
    return out


def _floats(table: pa.Table, name: str) -> np.ndarray:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from qmtl_engine import arrow_np

    column = table[name]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = _ratio_text(column)
    # read-only is fine: nothing here writes into a column's values; nulls become NaN
    return arrow_np.values(pc.cast(column, pa.float64()), null=np.nan)


def _ratio_text(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """Text such as ``4:1`` or ``4/1`` as the number 4.0; plain numbers as numbers; empty
    cells as null."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from qmtl_engine import arrow_np

    text = pc.utf8_trim_whitespace(column)
    none = arrow_np.scalar(None, pa.string())
    text = pc.if_else(pc.equal(text, arrow_np.scalar("", pa.string())), none, text)
    parts = pc.extract_regex(text, r"^(?P<a>[0-9.]+)\s*[:/]\s*(?P<b>[0-9.]+)$")
    a = pc.cast(pc.struct_field(parts, [0]), pa.float64())
    b = pc.cast(pc.struct_field(parts, [1]), pa.float64())
    plain = pc.cast(pc.if_else(pc.is_null(parts), text, none), pa.float64())
    return pc.coalesce(pc.divide(a, b), plain)


def apply(table: pa.Table, times: np.ndarray, method: Method) -> pa.Table:
    """``table`` with its prices (and volume) adjusted by ``method`` and the adjustment columns
    dropped. ``times`` gives each row's time (epoch ms), so events scale the bars before them
    whatever the file's row order. Raises ``pa.ArrowInvalid`` for a column that holds
    something other than numbers."""
    import numpy as np
    import pyarrow as pa
    from qmtl_engine import arrow_np

    drop = [c for c in (ADJ_CLOSE, SPLIT, DIVIDEND) if c in table.column_names]
    if method.identity or table.num_rows == 0:
        return table.drop_columns(drop)
    order = np.argsort(times, kind="stable")
    price = np.ones(table.num_rows)
    volume = np.ones(table.num_rows)
    close = _floats(table, "close")
    adj_close = _floats(table, ADJ_CLOSE) if method.ratio else None
    if adj_close is not None:
        price *= adj_close / close
    if method.price_splits or method.volume_splits:
        s = backward_factor(split_multipliers(_floats(table, SPLIT)), order)
        if method.price_splits:
            price = price * s if method.price_splits > 0 else price / s
        volume = volume / s if method.volume_splits > 0 else volume * s
    if method.dividends:
        price *= backward_factor(dividend_multipliers(_floats(table, DIVIDEND), close, order),
                                 order)
    out = table.drop_columns(drop)
    scaled = {name: price for name in PRICE_COLUMNS}
    if method.volume_splits:
        scaled["volume"] = volume
    for name, factor in scaled.items():
        if name not in out.column_names:
            continue  # conformance counts the missing column
        if name == "close" and adj_close is not None:
            values = adj_close  # the vendor's adjusted close, bit for bit, as yfinance keeps it
        else:
            values = (close if name == "close" else _floats(out, name)) * factor
        out = out.set_column(out.column_names.index(name), name,
                             arrow_np.array(values, pa.float64()))
    return out
