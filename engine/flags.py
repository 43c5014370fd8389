"""The conformance flags (DESIGN §4): each name with one line on what it counts, in report order.

A leaf module: presets validate ``block:`` lists against it and conformance counts by it, without
either importing the other.
"""

from __future__ import annotations

FLAG_DOCS: dict[str, str] = {
    "missing_column": "a required column is absent (filled with NaN); counts columns per partition",
    "dtype_cast": "values cast to the contract type (e.g. integer volumes to float64)",
    "ts_unit_inferred": "epoch timestamps whose unit was guessed from their size; counts rows",
    "ts_timezone_normalized": "timestamps converted from another time zone to UTC; counts rows",
    "invalid_timestamp": "null or unparseable timestamps (rows dropped)",
    "unsorted_ts": "rows out of time order (sorted); counts descents",
    "duplicate_rows": "identical copies of a row (dropped)",
    "duplicate_ts": "one timestamp with different values (the last row is kept)",
    "off_grid_ts": "timestamps not on the interval grid (rows dropped)",
    "gap_bars": "bars the calendar expects that are missing",
    "off_calendar_bars": "bars at times the calendar says the market is closed (kept)",
    "non_finite": "rows with NaN or infinite values",
    "negative_value": "rows with a negative price or volume",
    "ohlc_inconsistent": "rows where high < max(open, close), low > min(open, close) or high < low",
    "repeated_bars": "rows repeating an earlier bar's OHLCV values (not flat zero-volume fills)",
    "out_of_range": "rows outside the requested window (dropped)",
    "price_jump": "one-bar moves of close beyond the conformance preset's price_jump_threshold "
                  "(|close / previous close - 1|; only checked where a threshold is set)",
}

# report order: the order of FLAG_DOCS
FLAG_NAMES: tuple[str, ...] = tuple(FLAG_DOCS)
