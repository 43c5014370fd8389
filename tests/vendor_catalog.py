"""A small user catalog for tests: daily bars read by the ``files`` source from
``<symbol>.csv`` beside seamless.yaml, with the partition scheme each test needs."""

from __future__ import annotations

_CATALOG = """\
version: 1
data_presets:
  ohlcv.vendor.crypto.1d:
    kind: ohlcv
    interval_ms: 86400000
    contract: {{name: ohlcv, version: v1}}
{partition}    source: {{name: files, options: {{url: "{{symbol}}.csv", ts_format: "%Y-%m-%d"}}}}
    sla_preset: baseline
    conformance_preset: strict-blocking
"""


def vendor_catalog(partition: str | None = "month") -> str:
    """The catalog text; ``partition=None`` leaves the scheme to the interval's default."""
    return _CATALOG.format(partition=f"    partition: {partition}\n" if partition else "")
