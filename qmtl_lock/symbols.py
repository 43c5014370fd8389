"""The rule for symbols, shared by seamless.yaml and seamless.lock (a lock edited by hand must not
smuggle in a symbol the manifest would refuse). Kept apart so that reading a lock does not build
the manifest's models."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:=^-]*(/[A-Za-z0-9][A-Za-z0-9._:=^-]*)?$")


def symbol_problem(symbol: object) -> str | None:
    """Why ``symbol`` cannot be a symbol (None: it can). Symbols name files of some sources, so
    the rule keeps them free of path tricks: no ``..``, at most one ``/``."""
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol) or ".." in symbol:
        return (f"invalid symbol {symbol!r}: use letters, digits and . _ - : = ^ "
                "(one / allowed, as in BTC/USDT)")
    return None


def symbol_settings(request: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Symbol -> its own settings (``source_symbol``, ``start``, ``end``) from a request as the
    lock records it (``symbol_settings``, a list of ``{symbol, …}``); symbols without settings
    are not in it. An entry that is not of that shape (a lock edited by hand) is left out: it
    then differs from what the manifest asks, which ``check`` reports."""
    out: dict[str, dict[str, str]] = {}
    items = request.get("symbol_settings")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("symbol"), str):
            out[item["symbol"]] = {str(k): str(v) for k, v in item.items() if k != "symbol"}
    return out


SETTING_KEYS = ("source_symbol", "start", "end")  # what a symbol may set of its own


def changed_settings(want: Mapping[str, str], have: Mapping[str, str]) -> list[str]:
    """The keys of :data:`SETTING_KEYS` whose values differ between two settings of one
    symbol (seamless.yaml's and the lock's, as :func:`symbol_settings` gives them)."""
    return [key for key in SETTING_KEYS if want.get(key) != have.get(key)]
