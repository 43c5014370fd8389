"""The names of the conformance flags (DESIGN §4), in report order.

A leaf module: presets validate ``block:`` lists against it and conformance counts by it, without
either importing the other.
"""

from __future__ import annotations

FLAG_NAMES = (
    "missing_column",
    "dtype_cast",
    "ts_unit_inferred",
    "ts_timezone_normalized",
    "invalid_timestamp",
    "unsorted_ts",
    "duplicate_rows",
    "duplicate_ts",
    "off_grid_ts",
    "gap_bars",
    "non_finite",
    "negative_value",
    "ohlc_inconsistent",
    "repeated_bars",
    "out_of_range",
)
