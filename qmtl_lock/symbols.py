"""The rule for symbols, shared by seamless.yaml and seamless.lock (a lock edited by hand must not
smuggle in a symbol the manifest would refuse). Kept apart so that reading a lock does not build
the manifest's models."""

from __future__ import annotations

import re

SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:=^-]*(/[A-Za-z0-9][A-Za-z0-9._:=^-]*)?$")


def symbol_problem(symbol: object) -> str | None:
    """Why ``symbol`` cannot be a symbol (None: it can). Symbols name files of some sources, so
    the rule keeps them free of path tricks: no ``..``, at most one ``/``."""
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol) or ".." in symbol:
        return (f"invalid symbol {symbol!r}: use letters, digits and . _ - : = ^ "
                "(one / allowed, as in BTC/USDT)")
    return None
