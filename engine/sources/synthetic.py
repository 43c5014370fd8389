"""Deterministic synthetic OHLCV bars, for demos, tests and benchmarks.

Bars are a pure function of (seed, symbol, bar open time): the same partition always gives the same
bars whatever range was asked, so extending a range never changes old partitions. Only IEEE
add/multiply/divide and sequential sums are used (no transcendental functions, no library random
streams), so the bytes are the same on every platform and numpy version.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa
from qmtl_engine import arrow_np
from qmtl_engine.conformance import RawBatch
from qmtl_engine.ranges import TimeRange, ceil_to
from qmtl_engine.sources.base import Source
from qmtl_engine.sources.options import SourceOptions, SyntheticOptions

BLOCK = 1024  # bars per generation block; blocks are aligned on the epoch grid
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer of ``x + golden``, computed in place in two buffers (the same
    bits as the textbook form, with a third of its temporary arrays)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        t = np.right_shift(z, _S30)
        z ^= t
        z *= _M1
        np.right_shift(z, _S27, out=t)
        z ^= t
        z *= _M2
        np.right_shift(z, _S31, out=t)
        z ^= t
        return z


def _uniform(key: np.uint64, index: np.ndarray, stream: int) -> np.ndarray:
    """Uniform doubles in [0, 1) from (key, index, stream), exactly reproducible."""
    with np.errstate(over="ignore"):
        x = index.astype(np.uint64) * np.uint64(16)
        x += np.uint64(stream)
        x = _splitmix(x)
        x ^= key
        bits = _splitmix(x)
        bits >>= _S11
    return bits.astype(np.float64) * (1.0 / 9007199254740992.0)


class SyntheticSource(Source):
    name: ClassVar[str] = "synthetic"
    Options: ClassVar[type[SourceOptions]] = SyntheticOptions

    def __init__(self, options: SyntheticOptions) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: str) -> Self:
        parsed = cls._parse(SyntheticOptions, options)
        return cls(parsed)

    def _key(self, symbol: str) -> np.uint64:
        digest = hashlib.sha256(f"{self.options.seed}\0{symbol}".encode()).digest()
        return np.uint64(int.from_bytes(digest[:8], "little"))

    def _levels(self, key: np.uint64, blocks: np.ndarray) -> np.ndarray:
        period = 97  # blocks per slow cycle
        phase = (blocks % period).astype(np.float64) / period
        tri = np.abs(phase * 4.0 - 2.0) - 1.0
        wiggle = _uniform(key, blocks, 15) * 0.1 - 0.05
        return self.options.start_price * (1.0 + 0.25 * tri + wiggle)

    def fetch(self, symbol: str, window: TimeRange, interval_ms: int) -> RawBatch:
        first = ceil_to(window.start, interval_ms) // interval_ms
        last = -(-window.end // interval_ms)  # exclusive bar index
        if last <= first:
            return RawBatch(_empty())
        b0, b1 = first // BLOCK, (last - 1) // BLOCK + 1
        blocks = np.arange(b0, b1, dtype=np.int64)
        k = np.arange(b0 * BLOCK, b1 * BLOCK, dtype=np.int64)
        key = self._key(symbol)
        sigma = self.options.step_volatility
        steps = (_uniform(key, k, 0) + _uniform(key, k, 1) + _uniform(key, k, 2)
                 + _uniform(key, k, 3) - 2.0) * sigma
        walk = np.cumsum(steps.reshape(len(blocks), BLOCK), axis=1)
        frac = np.arange(1, BLOCK + 1, dtype=np.float64) / BLOCK
        level = self._levels(key, blocks)[:, None]
        level_next = self._levels(key, blocks + 1)[:, None]
        bridge = walk - walk[:, -1:] * frac
        close = (level + (level_next - level) * frac + bridge * level).reshape(-1)
        open_ = np.empty_like(close)
        open_[1:] = close[:-1]
        open_[::BLOCK] = level[:, 0]
        hi = np.maximum(open_, close) * (1.0 + 0.002 * _uniform(key, k, 4))
        lo = np.minimum(open_, close) * (1.0 - 0.002 * _uniform(key, k, 5))
        volume = self.options.base_volume * (0.5 + _uniform(key, k, 6))
        sel = slice(int(first - b0 * BLOCK), int(last - b0 * BLOCK))
        f64 = pa.float64()
        table = pa.table({  # from buffers: pa.array of numpy would import pandas
            "ts": arrow_np.array(k[sel] * interval_ms, pa.timestamp("ms", tz="UTC")),
            "open": arrow_np.array(open_[sel], f64), "high": arrow_np.array(hi[sel], f64),
            "low": arrow_np.array(lo[sel], f64), "close": arrow_np.array(close[sel], f64),
            "volume": arrow_np.array(volume[sel], f64),
        })
        return RawBatch(table)


def _empty() -> pa.Table:
    return pa.table({
        "ts": pa.nulls(0, pa.timestamp("ms", tz="UTC")),
        **{c: pa.nulls(0, pa.float64()) for c in ("open", "high", "low", "close", "volume")},
    })
