"""The strategy's test loads data through the lock (fixture `locked_data` from qmtl-lock).

If the data behind seamless.lock changes by one byte, `locked_data.load` fails this test with the
partition that differs, instead of letting the backtest quietly produce different numbers.
"""

from __future__ import annotations

import pytest
from strategy import backtest

DATASET = "us_equities_daily"


def test_contract(locked_data) -> None:  # type: ignore[no-untyped-def]
    locked_data.require_contract_version(DATASET, "v1")


@pytest.mark.parametrize(("symbol", "trades", "total_return"), [
    ("AAPL", 9, 0.6305),
    ("MSFT", 10, -0.1541),
])
def test_backtest_on_locked_data(locked_data, symbol: str, trades: int,  # type: ignore[no-untyped-def]
                                 total_return: float) -> None:
    result = backtest(locked_data.load(DATASET, symbol))
    assert result.trades == trades
    assert result.total_return == pytest.approx(total_return, abs=1e-4)
