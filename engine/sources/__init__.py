"""Sources behind a registry: each name maps to a module and class, imported only when used.

An entry that needs an optional extra says so, and a missing package becomes a
:class:`MissingDependency` error with the ``pip install`` line that fixes it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qmtl_engine.errors import MissingDependency, PresetError

if TYPE_CHECKING:
    from qmtl_engine.sources.base import Source


@dataclass(frozen=True)
class SourceEntry:
    module: str
    cls: str
    extra: str | None = None  # the pip extra that brings its third-party packages
    needs: tuple[str, ...] = ()  # modules of that extra


REGISTRY: dict[str, SourceEntry] = {
    "synthetic": SourceEntry("qmtl_engine.sources.synthetic", "SyntheticSource"),
    "files": SourceEntry("qmtl_engine.sources.files", "FilesSource"),
    "binance_vision": SourceEntry("qmtl_engine.sources.binance_vision", "BinanceVisionSource"),
    "polygon": SourceEntry("qmtl_engine.sources.polygon", "PolygonSource"),
    "ccxt": SourceEntry("qmtl_engine.sources.ccxt_source", "CcxtSource", extra="ccxt",
                        needs=("ccxt",)),
}


def get_source_class(name: str) -> type[Source]:
    entry = REGISTRY.get(name)
    if entry is None:
        raise PresetError(f"unknown source {name!r}",
                          fix=f"use one of: {', '.join(sorted(REGISTRY))}")
    for module in entry.needs:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingDependency(source=name, module=module,
                                    extra=entry.extra or name) from None
    cls: type[Source] = getattr(importlib.import_module(entry.module), entry.cls)
    return cls


def make_source(name: str, options: dict[str, Any], *, base_dir: str) -> Source:
    """Instantiate source ``name`` with preset ``options`` (relative paths resolved in base_dir)."""
    cls = get_source_class(name)
    return cls.from_options(options, base_dir=base_dir)
