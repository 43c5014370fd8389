"""Write the generated tables of docs/sources.md and docs/conformance.md from the code.

The option tables come from the sources' pydantic models (qmtl_engine.sources.options), the flag
table from the conformance module and the built-in presets, the SLA tables from the SLA preset
model: so the documentation cannot drift from what qmtl-lock accepts. Prose stays hand-written
around blocks marked ``<!-- BEGIN GENERATED name -->`` ... ``<!-- END GENERATED name -->``.

    python docs/generate.py           # rewrite the generated blocks in place
    python docs/generate.py --check   # exit 1 when a committed block is stale (tests run this)
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

DOCS = Path(__file__).resolve().parent
FILES = ("sources.md", "conformance.md")
BLOCK = re.compile(r"(<!-- BEGIN GENERATED (?P<name>[\w:-]+) -->\n)(?P<body>.*?)"
                   r"(<!-- END GENERATED (?P=name) -->)", re.DOTALL)

# How to live with each conformance flag when a preset refuses it (or why nothing is needed).
ACCEPT: dict[str, str] = {
    "missing_column": "map the column in the source's `columns`; a preset that does not block "
                      "it pins the column as NaN",
    "dtype_cast": "nothing to do: a safe normalization, counted in the lock",
    "ts_unit_inferred": "set `ts_unit` (files source) to say the unit",
    "ts_timezone_normalized": "nothing to do; `timezone` says the zone of naive times",
    "invalid_timestamp": "fix `ts_format` (or `ts_unit`); the refusal quotes the raw text",
    "unsorted_ts": "nothing to do: rows are sorted (newest-first files pass strict-blocking)",
    "duplicate_rows": "nothing to do: identical copies (overlapping dumps) are dropped",
    "duplicate_ts": "fix the file (two versions of one bar); a preset that does not block it "
                    "keeps the last row",
    "off_grid_ts": "check `interval_ms`, `timezone` and the vendor's bar-open convention",
    "gap_bars": "choose the right `calendar`; declare known outages under the dataset's "
                "`accepted_gaps`",
    "off_calendar_bars": "nothing to do if the vendor trades then; otherwise choose the "
                         "`calendar` the market keeps (the bars are kept either way)",
    "non_finite": "fix the file; a preset that does not block it pins the NaN",
    "negative_value": "fix the file; a preset that does not block it pins the value",
    "ohlc_inconsistent": "check the column mapping (e.g. `low` and `high` swapped); `close` "
                         "mapped to `Adj Close` alone disagrees with open, high and low: map "
                         "`close: Close` and set the preset's `adjustment` with "
                         "`adj_close_column` instead ([Adjustment](sources.md#adjustment))",
    "repeated_bars": "fix the file (often forward-filled bars); a preset that does not block "
                     "it pins them",
    "out_of_range": "nothing to do: rows outside the requested window are dropped",
    "price_jump": "check the adjustment (an unadjusted split is a one-bar jump) and the "
                  "vendor's prices; raise `price_jump_threshold`, or leave `price_jump` out "
                  "of `block:` to only count it",
}

# What each SLA budget measures (the model holds types and defaults).
SLA_FIELDS: dict[str, str] = {
    "total_deadline_ms": "wall time for one partition: fetching, checking and storing it",
    "max_wait_storage_ms": "time one partition spends writing the store",
    "max_wait_backfill_ms": "time one partition spends fetching and checking data from the source",
    "max_wait_live_ms": "time spent on a live feed (no built-in source has one yet)",
    "min_coverage": "share of the bars the calendar expects that must be present "
                    "(1 - gap_bars / expected)",
    "max_lag_seconds": "for `end: now` datasets: how far the last pinned bar may trail now",
    "retry_backoff_ms": "accepted for qmtl catalogs; retries follow the network options of "
                        "each source (`backoff_initial_ms`)",
    "on_violation": "what a violated budget does (see below)",
}

# What each field of a data preset says (the model holds types and defaults).
PRESET_FIELDS: dict[str, str] = {
    "kind": "what the data is: `ohlcv` (bars)",
    "interval_ms": "bar length in milliseconds; must agree with the id's last part "
                   "(`86400000` is `1d`, `3600000` is `1h`)",
    "stabilization_bars": "the newest bars that `end: now` leaves out, since vendors may still "
                          "correct them",
    "contract": "`{name: ohlcv, version: v1}`: the canonical columns and rules",
    "calendar": "when bars are expected: `24x7`, `24x5` or an exchange calendar (see "
                "[conformance.md](conformance.md))",
    "partition": "`day`, `month` or `year`: the UTC window of one stored file; null: by "
                 "interval (under 1m: day, under 1h: month, else year)",
    "source": "`{name, options}`: one of the sources below and its options",
    "adjustment": "`raw`, `splits` or `splits_dividends`: which prices are pinned (see "
                  "[Adjustment](#adjustment)); part of the request, of `show` and, when not "
                  "`raw`, of the fingerprint",
    "live": "a live feed the dataset must configure; null for historical data",
    "sla_preset": "name of an SLA preset (budgets, `min_coverage`)",
    "conformance_preset": "name of a conformance preset (which flags block)",
    "description": "free text shown by `qmtl-lock presets`",
    "override": "true to redefine a preset id that an earlier catalog (or the built-in one) "
                "has",
}

ON_VIOLATION: dict[str, str] = {
    "fail_fast": "stop the symbol at once and leave the lock as it was (exit 3); partitions that "
                 "finished, even late, stay checkpointed, so the rerun fetches only the rest",
    "partial_fill": "write the lock with the violation recorded in its `sla`; "
                    "`qmtl-lock check --strict` then fails on it",
    "hold": "keep the previously locked data and say why (`held`); a first resolve pins the "
            "new data with the violation recorded",
}


# -- rendering -----------------------------------------------------------------------------------
def _scalar(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, Enum):
        value = value.value
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def type_text(annotation: Any) -> str:
    """A field's type as a reader of YAML sees it: text, integer, a choice of literals, ..."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{_scalar(v)}`" for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        parts = [type_text(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    if origin is dict:
        return "mapping"
    if origin is list:
        return "list"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " or ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    names = {str: "text", int: "integer", float: "number", bool: "true or false"}
    if annotation in names:
        return names[annotation]
    return "any"


_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length ≥"),
    (annotated_types.MaxLen, "max_length", "length ≤"),
)


def bounds_text(field: FieldInfo) -> str:
    out = []
    for meta in field.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(meta, kind):
                out.append(f"{sign} {_scalar(getattr(meta, attr))}")
    return ", ".join(out)


def default_text(field: FieldInfo) -> str:
    """`required`, or the default as YAML (``{}`` for a mapping built by a factory)."""
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        factory = typing.cast(Callable[[], Any], field.default_factory)
        return f"`{_scalar(factory())}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{_scalar(field.default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def options_table(model: type[BaseModel], *, own_only: bool = False, prefix: str = "") -> str:
    """One row per field of ``model``: option, type, default, meaning (the field description)."""
    fields = model.model_fields
    if own_only:  # fields a network source shares are documented once, in their own table
        inherited: set[str] = set()
        for base in model.__mro__[1:]:
            if isinstance(base, type) and issubclass(base, BaseModel):
                inherited |= set(base.model_fields)
        fields = {k: v for k, v in fields.items() if k not in inherited}
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for name, field in fields.items():
        if not field.description:
            raise SystemExit(f"{model.__name__}.{name} has no description: add one to its Field")
        kind = type_text(field.annotation)
        bounds = bounds_text(field)
        kind = f"{kind} ({bounds})" if bounds else kind
        rows.append(f"| `{prefix}{name}` | {_cell(kind)} | {_cell(default_text(field))} | "
                    f"{_cell(field.description)} |")
    return "\n".join(rows) + "\n"


def _builtin_catalog() -> Any:
    from qmtl_engine.presets import Catalog, builtin_catalog_text

    return Catalog.model_validate(yaml.safe_load(builtin_catalog_text()))


def flags_table() -> str:
    from qmtl_engine.flags import FLAG_DOCS, FLAG_NAMES

    presets = _builtin_catalog().conformance_presets
    missing = [f for f in FLAG_NAMES if f not in ACCEPT]
    if missing:
        raise SystemExit(f"docs/generate.py: say how to accept {missing} in ACCEPT")
    head = "| flag | what it means | " + " | ".join(f"`{p}`" for p in presets)
    rows = [head + " | how to accept it |",
            "|---|---|" + "---|" * len(presets) + "---|"]
    for flag in FLAG_NAMES:
        cells = ["blocks" if (not p.partial_ok and flag in p.block) else "counted"
                 for p in presets.values()]
        rows.append(f"| `{flag}` | {_cell(FLAG_DOCS[flag])} | " + " | ".join(cells)
                    + f" | {_cell(ACCEPT[flag])} |")
    return "\n".join(rows) + "\n"


def sla_fields_table() -> str:
    from qmtl_engine.presets import SLAPreset

    missing = [f for f in SLAPreset.model_fields if f not in SLA_FIELDS]
    if missing:
        raise SystemExit(f"docs/generate.py: say what SLA field {missing} measures")
    rows = ["| field | type | default | what it limits |", "|---|---|---|---|"]
    for name, field in SLAPreset.model_fields.items():
        kind = type_text(field.annotation)
        bounds = bounds_text(field)
        kind = f"{kind} ({bounds})" if bounds else kind
        rows.append(f"| `{name}` | {_cell(kind)} | {_cell(default_text(field))} | "
                    f"{_cell(SLA_FIELDS[name])} |")
    return "\n".join(rows) + "\n"


def preset_fields_table() -> str:
    from qmtl_engine.presets import DataPreset

    missing = [f for f in DataPreset.model_fields if f not in PRESET_FIELDS]
    if missing:
        raise SystemExit(f"docs/generate.py: say what preset field {missing} means")
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in DataPreset.model_fields.items():
        kind = type_text(field.annotation)
        bounds = bounds_text(field)
        kind = f"{kind} ({bounds})" if bounds else kind
        rows.append(f"| `{name}` | {_cell(kind)} | {_cell(default_text(field))} | "
                    f"{_cell(PRESET_FIELDS[name])} |")
    return "\n".join(rows) + "\n"


def on_violation_table() -> str:
    from qmtl_engine.presets import OnViolation

    missing = [m.value for m in OnViolation if m.value not in ON_VIOLATION]
    if missing:
        raise SystemExit(f"docs/generate.py: say what on_violation {missing} does")
    rows = ["| `on_violation` | what a violation does |", "|---|---|"]
    rows += [f"| `{m.value}` | {_cell(ON_VIOLATION[m.value])} |" for m in OnViolation]
    return "\n".join(rows) + "\n"


def sla_presets_table() -> str:
    from qmtl_engine.presets import SLAPreset

    presets = _builtin_catalog().sla_presets
    rows = ["| field | " + " | ".join(f"`{p}`" for p in presets) + " |",
            "|---|" + "---|" * len(presets)]
    for name in SLAPreset.model_fields:
        rows.append(f"| `{name}` | " + " | ".join(
            f"`{_scalar(getattr(p, name))}`" for p in presets.values()) + " |")
    return "\n".join(rows) + "\n"


def calendars_text() -> str:
    from qmtl_engine.calendar_names import BUILTIN_CALENDARS, EXCHANGE_CALENDARS

    names = ", ".join(f"`{n}`" for n in sorted(EXCHANGE_CALENDARS))
    return (f"Built in: {', '.join(f'`{n}`' for n in BUILTIN_CALENDARS)}. "
            f"Exchange calendars ({len(EXCHANGE_CALENDARS)} names, from the "
            f"`exchange_calendars` library): {names}.\n")


def blocks() -> dict[str, str]:
    """The text of every generated block, by name."""
    from qmtl_engine.sources.options import OPTIONS, NetworkOptions, RateLimitOptions

    out = {f"options:{name}": options_table(model, own_only=issubclass(model, NetworkOptions))
           for name, model in OPTIONS.items()}
    out["options:network"] = options_table(NetworkOptions)
    out["options:rate_limit"] = options_table(RateLimitOptions, prefix="rate_limit.")
    out["preset-fields"] = preset_fields_table()
    out["flags"] = flags_table()
    out["sla-fields"] = sla_fields_table()
    out["sla-presets"] = sla_presets_table()
    out["on-violation"] = on_violation_table()
    out["calendars"] = calendars_text()
    return out


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with each generated block replaced; an unknown block name is an error."""
    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in generated:
            raise SystemExit(f"docs: no generator for block {name!r}")
        return match.group(1) + generated[name] + match.group(4)

    return BLOCK.sub(fill, text)


def stale() -> list[str]:
    """The docs files whose generated blocks differ from what the code gives now."""
    generated = blocks()
    return [name for name in FILES
            if render((DOCS / name).read_text(encoding="utf-8"), generated)
            != (DOCS / name).read_text(encoding="utf-8")]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        for name in bad:
            print(f"docs/{name} is stale: run python docs/generate.py", file=sys.stderr)
        return 1 if bad else 0
    generated = blocks()
    for name in FILES:
        path = DOCS / name
        text = path.read_text(encoding="utf-8")
        new = render(text, generated)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"wrote docs/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
