"""Which calendar names a preset may use, answered without importing a calendar library.

Loading a preset catalog checks its ``calendar`` so that a typo is reported with file and line by
``presets``, ``check`` and ``resolve --dry-run``. ``exchange_calendars`` knows the real list, but
importing it costs about 1.5 s and pulls in pandas and pyarrow, which ``check`` must not load
(DESIGN §10). So the names it offered when this list was written (exchange_calendars
4.13.2, aliases included) are kept here; a test compares them with the installed
library. Only a name outside the list costs the import, to learn whether a newer library knows it.
"""

from __future__ import annotations

import importlib

BUILTIN_CALENDARS = ("24x7", "24x5")  # qmtl_engine.calendars implements these itself

EXCHANGE_CALENDARS = frozenset({
    "24/5", "24/7", "AIXK", "ARCX", "ASEX", "ASX", "BATS", "BMF", "BSE", "BVB", "BVMF", "CBOT",
    "CFE", "CME", "CMES", "COMEX", "FWB", "HKEX", "ICE", "ICEUS", "IEPA", "JKT", "JPX", "LSE",
    "LUXSE", "NASDAQ", "NYFE", "NYMEX", "NYSE", "OOTC", "OSE", "SIX", "SSE", "TASE", "TSX",
    "XAMS", "XASE", "XASX", "XBDA", "XBEL", "XBKK", "XBOG", "XBOM", "XBRA", "XBRU", "XBSE",
    "XBUD", "XBUE", "XCBF", "XCSE", "XCYS", "XDUB", "XDUS", "XEEE", "XETR", "XEUR", "XFRA",
    "XHAM", "XHEL", "XHKG", "XICE", "XIDX", "XIST", "XJSE", "XKAR", "XKLS", "XKRX", "XLIM",
    "XLIS", "XLIT", "XLJU", "XLON", "XLUX", "XMAD", "XMEX", "XMIL", "XMOS", "XNAS", "XNYS",
    "XNZE", "XOSL", "XPAR", "XPHS", "XPRA", "XRIS", "XSAU", "XSES", "XSGO", "XSHG", "XSTO",
    "XSTU", "XSWX", "XTAE", "XTAI", "XTAL", "XTKS", "XTSE", "XTSX", "XWAR", "XWBO", "XZAG",
    "us_futures"
})


def is_listed_calendar(name: str) -> bool:
    """True when ``name`` is known from the lists here, so that whether a catalog naming it is
    valid does not depend on which calendar library is installed."""
    return name in BUILTIN_CALENDARS or name in EXCHANGE_CALENDARS


def is_known_calendar(name: str) -> bool:
    """True when :func:`qmtl_engine.calendars.get_calendar` can give the calendar ``name``."""
    if is_listed_calendar(name):
        return True
    try:
        xcals = importlib.import_module("exchange_calendars")
    except ImportError:
        return False
    return name in xcals.get_calendar_names(include_aliases=True)
