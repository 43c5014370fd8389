"""A pytest plugin so strategy tests load their data through the lock.

Installed with qmtl-lock (entry point ``pytest11``). In a test::

    def test_strategy(locked_data):
        bars = locked_data.load("btc_1m", "BTCUSDT")      # verified against seamless.lock

The lock is ``seamless.lock`` in pytest's root directory, or the path given by
``--qmtl-lock PATH`` or the ``qmtl_lock`` ini option. A test fails (not errors) with the
fingerprint message when the data behind the lock changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--qmtl-lock", dest="qmtl_lock", default=None,
                     help="seamless.lock that the locked_data fixture opens")
    parser.addini("qmtl_lock", "seamless.lock that the locked_data fixture opens", default="")


@pytest.fixture(scope="session")
def locked_data(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The project's :class:`qmtl_lock.Lock`; every ``load`` re-hashes what it reads."""
    from qmtl_lock.errors import IntegrityError
    from qmtl_lock.runtime import Lock

    config = request.config
    chosen = config.getoption("qmtl_lock") or config.getini("qmtl_lock")
    path = Path(chosen) if chosen else Path(config.rootpath) / "seamless.lock"
    if not path.exists():
        pytest.fail(f"locked_data: {path} does not exist; run `qmtl-lock resolve`",
                    pytrace=False)
    lock = Lock.open(path)

    class _Guarded:
        """The lock, with integrity failures reported as test failures."""

        def __getattr__(self, name: str) -> Any:
            attr = getattr(lock, name)
            if not callable(attr):
                return attr

            def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    return attr(*args, **kwargs)
                except IntegrityError as exc:
                    pytest.fail(f"locked data changed: {exc}", pytrace=False)
            return call

    yield _Guarded()
