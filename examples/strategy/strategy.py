"""A small moving-average crossover backtest that reads its data only through the lock."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Result:
    trades: int
    total_return: float  # compounded, long-only, no costs
    exposure: float  # share of days in the market


def backtest(bars: pa.Table, fast: int = 20, slow: int = 100) -> Result:
    """Long when the fast moving average of closes is above the slow one, flat otherwise.

    The signal of day t is acted on at day t+1's close-to-close return.
    """
    close = bars["close"].to_numpy()
    if close.size <= slow:
        raise ValueError(f"need more than {slow} bars, got {close.size}")
    kernel_fast = np.ones(fast) / fast
    kernel_slow = np.ones(slow) / slow
    ma_fast = np.convolve(close, kernel_fast, mode="valid")[slow - fast:]
    ma_slow = np.convolve(close, kernel_slow, mode="valid")
    signal = (ma_fast > ma_slow).astype(float)  # aligned to close[slow - 1:]
    returns = close[slow:] / close[slow - 1:-1] - 1.0
    position = signal[:-1]
    strategy = position * returns
    trades = int(np.count_nonzero(np.diff(position)))
    return Result(trades=trades, total_return=float(np.prod(1.0 + strategy) - 1.0),
                  exposure=float(position.mean()))


if __name__ == "__main__":
    from qmtl_lock import Lock

    lock = Lock.open("seamless.lock")
    for symbol in lock.symbols("us_equities_daily"):
        print(symbol, backtest(lock.load("us_equities_daily", symbol)))
