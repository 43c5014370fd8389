"""Data contracts: the canonical schema of a kind of data, versioned (``ohlcv@v1``).

The columns are the same whether prices are raw or adjusted: the adjustment (raw, splits,
splits_dividends; :mod:`qmtl_engine.adjust`) is declared by the preset, recorded in the request
and, when not raw, in the fingerprint header, so ``ohlcv@v1`` bars of either kind never share a
fingerprint while strategy code reads them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from qmtl_engine.errors import PresetError

TS = "ts"
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "timestamp[ms, tz=UTC]" or "float64": the canonical Arrow type, as text


@dataclass(frozen=True)
class Contract:
    name: str
    version: str
    columns: tuple[Column, ...]
    optional: tuple[Column, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def required_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for col in (*self.columns, *self.optional):
            if col.name == name:
                return col
        raise KeyError(name)


OHLCV_V1 = Contract(
    name="ohlcv",
    version="v1",
    columns=(
        Column(TS, "timestamp[ms, tz=UTC]"),
        *(Column(name, "float64") for name in VALUE_COLUMNS),
    ),
    optional=(Column("trades", "float64"), Column("quote_volume", "float64")),
)

CONTRACTS: dict[tuple[str, str], Contract] = {(OHLCV_V1.name, OHLCV_V1.version): OHLCV_V1}


def get_contract(name: str, version: str) -> Contract:
    """Return the contract ``name@version`` or raise :class:`PresetError` listing known ones."""
    try:
        return CONTRACTS[(name, version)]
    except KeyError:
        known = ", ".join(sorted(f"{n}@{v}" for n, v in CONTRACTS))
        raise PresetError(
            f"unknown data contract {name}@{version}",
            fix=f"use one of the contracts this version of qmtl-lock knows: {known}",
        ) from None
