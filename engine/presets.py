"""Preset catalogs: data presets, conformance presets and SLA presets (DESIGN §7).

A catalog is YAML validated by pydantic models. The built-in catalog ships with the engine; user
catalogs are merged over it. A user preset that reuses a built-in id is an error unless it says
``override: true``. Nothing here imports pyarrow or fsspec: ``qmtl-lock check`` loads presets too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from qmtl_engine.adjust import DEFAULT_ADJUSTMENT, Adjustment, Problem
from qmtl_engine.builtin import builtin_catalog_bytes, builtin_data_dir
from qmtl_engine.calendar_names import BUILTIN_CALENDARS, EXCHANGE_CALENDARS, is_known_calendar
from qmtl_engine.errors import PresetError, YAMLFileError
from qmtl_engine.flags import FLAG_NAMES
from qmtl_engine.ranges import format_interval, parse_interval
from qmtl_engine.yamlio import LocatedYAML, load_yaml, pydantic_error, read_yaml_text

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*){3}$")
SOURCE_NAMES = ("synthetic", "files", "binance_vision", "ccxt", "polygon")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Model):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SOURCE_NAMES:
            raise ValueError(f"unknown source {v!r}; known sources: {', '.join(SOURCE_NAMES)}")
        return v


class ContractRef(_Model):
    name: str
    version: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class DataPreset(_Model):
    kind: str
    interval_ms: int = Field(gt=0)
    stabilization_bars: int = Field(default=0, ge=0)
    contract: ContractRef
    calendar: str = "24x7"
    partition: Literal["day", "month", "year"] | None = None
    source: SourceSpec
    # raw | splits | splits_dividends: which prices are pinned (docs/sources.md#adjustment)
    adjustment: Adjustment = DEFAULT_ADJUSTMENT
    live: dict[str, Any] | None = None
    sla_preset: str
    conformance_preset: str
    description: str = ""
    override: bool = False


class ConformancePreset(_Model):
    partial_ok: bool = False
    block: list[str] = Field(default_factory=list)
    # A one-bar move of close beyond this share (0.5: 50 %) is counted as ``price_jump``;
    # None: not checked. Whether it blocks is up to ``block`` like any flag.
    price_jump_threshold: float | None = Field(default=None, gt=0)
    description: str = ""

    @field_validator("block")
    @classmethod
    def _known_flags(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in FLAG_NAMES]
        if unknown:
            raise ValueError(f"unknown conformance flags {unknown}; known: {', '.join(FLAG_NAMES)}")
        return v


class OnViolation(StrEnum):
    FAIL_FAST = "fail_fast"
    PARTIAL_FILL = "partial_fill"
    HOLD = "hold"


class SLAPreset(_Model):
    total_deadline_ms: int | None = Field(default=None, gt=0)
    max_wait_storage_ms: int | None = Field(default=None, gt=0)
    max_wait_backfill_ms: int | None = Field(default=None, gt=0)
    max_wait_live_ms: int | None = Field(default=None, gt=0)
    min_coverage: float = Field(default=0.0, ge=0.0, le=1.0)
    max_lag_seconds: int | None = Field(default=None, gt=0)
    retry_backoff_ms: int | None = Field(default=None, ge=0)
    on_violation: OnViolation = OnViolation.FAIL_FAST


class RetentionClass(_Model):
    ttl_days: int | None = Field(default=None, gt=0)  # None: never expires
    description: str = ""


class Catalog(_Model):
    version: Literal[1]
    data_presets: dict[str, DataPreset] = Field(default_factory=dict)
    conformance_presets: dict[str, ConformancePreset] = Field(default_factory=dict)
    sla_presets: dict[str, SLAPreset] = Field(default_factory=dict)
    retention_classes: dict[str, RetentionClass] = Field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedPreset:
    """A data preset with its conformance and SLA presets looked up, ready for the engine."""

    id: str
    data: DataPreset
    conformance: ConformancePreset
    sla: SLAPreset
    base_dir: str  # directory that relative paths in source options are relative to
    catalog: str  # where the preset was defined, for messages

    @property
    def interval_ms(self) -> int:
        return self.data.interval_ms

    @property
    def partition(self) -> Literal["day", "month", "year"]:
        from qmtl_engine.ranges import default_partition

        return self.data.partition or default_partition(self.data.interval_ms)

    def definition(self) -> dict[str, Any]:
        """The resolved definition: printed by ``presets --json``, hashed by :meth:`digest`."""
        data = self.data.model_dump(mode="json", exclude={"override", "description"})
        data["partition"] = self.partition
        if data["adjustment"] == DEFAULT_ADJUSTMENT:  # so digests from before it stay the same
            del data["adjustment"]
        return {
            "id": self.id,
            "preset": data,
            "conformance": {"name": self.data.conformance_preset,
                            **self.conformance.model_dump(mode="json",
                                                          exclude=_unset_checks(self.conformance))},
            "sla": {"name": self.data.sla_preset, **self.sla.model_dump(mode="json")},
        }

    def digest(self) -> str:
        text = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def adjustment(self) -> Adjustment:
        return self.data.adjustment

    def with_overrides(self, registry: PresetRegistry, *, conformance_preset: str | None = None,
                       sla_preset: str | None = None,
                       adjustment: Adjustment | None = None) -> ResolvedPreset:
        """This preset with another conformance or SLA preset or adjustment, as a dataset may
        ask for. The names go into the data preset too, so :meth:`definition`, the digest and
        messages that name the conformance preset all see the override. An unknown name, or an
        adjustment the preset's source cannot give, is a PresetError."""
        update: dict[str, str] = {}
        if adjustment is not None and adjustment != self.data.adjustment:
            problem = adjustment_problem(self.data.source, adjustment)
            if problem is not None:
                raise PresetError(f"preset {self.id!r} cannot give adjustment {adjustment}: "
                                  f"{problem.what}", preset=self.id, fix=problem.fix)
            update["adjustment"] = adjustment
        conformance, sla = self.conformance, self.sla
        if conformance_preset is not None:
            conformance = registry.conformance_preset(conformance_preset)
            update["conformance_preset"] = conformance_preset
        if sla_preset is not None:
            sla = registry.sla_preset(sla_preset)
            update["sla_preset"] = sla_preset
        if not update:
            return self
        return dataclasses.replace(self, data=self.data.model_copy(update=update),
                                   conformance=conformance, sla=sla)


def _unset_checks(preset: ConformancePreset) -> set[str]:
    """Fields left out of a definition: the description, and checks added after locks were
    written while they are off, so the digest of every preset that does not use them (and
    so the locks that name it) stays what it was."""
    return {"description"} | ({"price_jump_threshold"} if preset.price_jump_threshold is None
                              else set())


@dataclass
class _Entry:
    value: Any
    doc: LocatedYAML
    base_dir: str
    builtin: bool


class PresetRegistry:
    """The merged view of the built-in catalog and any user catalogs."""

    def __init__(self) -> None:
        self._data: dict[str, _Entry] = {}
        self._conformance: dict[str, _Entry] = {}
        self._sla: dict[str, _Entry] = {}
        self._retention: dict[str, _Entry] = {}

    # -- building -------------------------------------------------------------------------------
    def add_catalog(self, doc: LocatedYAML, *, base_dir: str, builtin: bool = False) -> None:
        if not isinstance(doc.data, dict):
            raise YAMLFileError("a preset catalog must be a mapping with `version: 1`",
                                path=doc.path, line=1,
                                fix="start the file with `version: 1` and `data_presets:`")
        try:
            catalog = Catalog.model_validate(doc.data)
        except ValidationError as exc:
            raise pydantic_error(exc, doc, what="invalid preset catalog",
                                 fix="see `qmtl-lock presets --json` for valid definitions",
                                 ) from None
        for pid, preset in catalog.data_presets.items():
            self._check_id(pid, preset, doc)
            self._check_source(pid, preset, doc)
            self._merge(self._data, ("data_presets", pid), preset, doc, base_dir, builtin,
                        override=preset.override)
        for table, section in ((self._conformance, "conformance_presets"),
                               (self._sla, "sla_presets"),
                               (self._retention, "retention_classes")):
            for name, value in getattr(catalog, section).items():
                self._merge(table, (section, name), value, doc, base_dir, builtin, override=True)

    @staticmethod
    def _check_id(pid: str, preset: DataPreset, doc: LocatedYAML) -> None:
        line = doc.line_of(("data_presets", pid))
        if not _ID_RE.match(pid):
            raise PresetError(
                f"invalid preset id {pid!r}", preset=pid, path=doc.path, line=line,
                fix="name presets family.source.market.interval, e.g. ohlcv.binance.spot.1m",
            )
        try:
            interval = parse_interval(pid.rsplit(".", 1)[1])
        except Exception:
            raise PresetError(
                f"preset id {pid!r} does not end in an interval such as 1m or 1d",
                preset=pid, path=doc.path, line=line,
                fix="name presets family.source.market.interval, e.g. ohlcv.binance.spot.1m",
            ) from None
        if interval != preset.interval_ms:
            raise PresetError(
                f"preset {pid!r} says interval {pid.rsplit('.', 1)[1]} in its id but "
                f"interval_ms: {preset.interval_ms} ({format_interval(preset.interval_ms)})",
                preset=pid, path=doc.path,
                line=doc.line_of(("data_presets", pid, "interval_ms")),
                fix=f"set interval_ms: {interval} or rename the preset",
            )

    @staticmethod
    def _check_source(pid: str, preset: DataPreset, doc: LocatedYAML) -> None:
        """Source options and calendar are checked when the catalog loads, so a mistake is
        reported with its line by ``presets`` and ``check``, not when a fetch starts."""
        from qmtl_engine.sources.options import OPTIONS  # pydantic only: check stays light

        name = preset.source.name
        try:
            OPTIONS[name].model_validate(preset.source.options)
        except ValidationError as exc:
            raise pydantic_error(
                exc, doc, what=f"invalid options for the {name} source of preset {pid!r}",
                fix=f"see the options of the {name} source in docs/sources.md (and the presets "
                "as loaded in `qmtl-lock presets --json`)",
                prefix=("data_presets", pid, "source", "options")) from None
        problem = adjustment_problem(preset.source, preset.adjustment)
        if problem is not None:
            legacy = ("data_presets", pid, "source", "options", "adjusted")
            at = legacy if legacy in doc.lines and "`adjusted" in problem.what else (
                "data_presets", pid, "adjustment")
            raise PresetError(
                f"preset {pid!r} asks for adjustment {preset.adjustment}, but {problem.what}",
                preset=pid, path=doc.path, line=doc.line_of(at), fix=problem.fix)
        if not is_known_calendar(preset.calendar):
            raise PresetError(
                f"preset {pid!r} names unknown calendar {preset.calendar!r}", preset=pid,
                path=doc.path, line=doc.line_of(("data_presets", pid, "calendar")),
                fix="use 24x7 (crypto), 24x5 (FX) or an exchange calendar such as XNYS, XLON "
                "or XTKS" + _did_you_mean(preset.calendar, [*BUILTIN_CALENDARS,
                                                            *sorted(EXCHANGE_CALENDARS)]),
            )

    @staticmethod
    def _merge(table: dict[str, _Entry], loc: tuple[str, str], value: Any, doc: LocatedYAML,
               base_dir: str, builtin: bool, *, override: bool) -> None:
        name = loc[1]
        existing = table.get(name)
        if existing is not None and not override:
            where = "built-in catalog" if existing.builtin else existing.doc.path
            raise PresetError(
                f"preset {name!r} is already defined in the {where}",
                preset=name, path=doc.path, line=doc.line_of(loc),
                fix="pick another id, or add `override: true` to replace the existing preset",
            )
        table[name] = _Entry(value, doc, base_dir, builtin)

    def validate_references(self) -> None:
        """Every data preset must name an existing conformance and SLA preset."""
        for pid, entry in self._data.items():
            preset: DataPreset = entry.value
            for attr, table in (("conformance_preset", self._conformance),
                                ("sla_preset", self._sla)):
                name = getattr(preset, attr)
                if name not in table:
                    raise PresetError(
                        f"preset {pid!r} names unknown {attr.replace('_', ' ')} {name!r}",
                        preset=pid, path=entry.doc.path,
                        line=entry.doc.line_of(("data_presets", pid, attr)),
                        fix=f"use one of: {', '.join(sorted(table))}",
                    )

    # -- reading --------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        return sorted(self._data)

    def __contains__(self, pid: object) -> bool:
        return pid in self._data

    def get(self, pid: str) -> ResolvedPreset:
        entry = self._data.get(pid)
        if entry is None:
            raise PresetError(
                f"unknown preset {pid!r}", preset=pid,
                fix=f"run `qmtl-lock presets` to list presets{_did_you_mean(pid, self._data)}",
            )
        preset: DataPreset = entry.value
        return ResolvedPreset(
            id=pid,
            data=preset,
            conformance=self._conformance[preset.conformance_preset].value,
            sla=self._sla[preset.sla_preset].value,
            base_dir=entry.base_dir,
            catalog=_where(entry),
        )

    def conformance_preset(self, name: str) -> ConformancePreset:
        preset: ConformancePreset = self._named(self._conformance, name, "conformance preset")
        return preset

    def sla_preset(self, name: str) -> SLAPreset:
        preset: SLAPreset = self._named(self._sla, name, "SLA preset")
        return preset

    def conformance_presets(self) -> list[tuple[str, ConformancePreset, str]]:
        """Every conformance preset as (name, preset, catalog it comes from), by name."""
        return [(n, e.value, _where(e)) for n, e in sorted(self._conformance.items())]

    def sla_presets(self) -> list[tuple[str, SLAPreset, str]]:
        """Every SLA preset as (name, preset, catalog it comes from), by name."""
        return [(n, e.value, _where(e)) for n, e in sorted(self._sla.items())]

    @staticmethod
    def _named(table: dict[str, _Entry], name: str, what: str) -> Any:
        entry = table.get(name)
        if entry is None:
            raise PresetError(f"unknown {what} {name!r}",
                              fix=f"use one of: {', '.join(sorted(table))}"
                              f"{_did_you_mean(name, table)}")
        return entry.value

    def add_retention_classes(self, classes: Mapping[str, RetentionClass], *,
                              doc: LocatedYAML | None = None) -> None:
        """Merge retention classes (e.g. from seamless.yaml) over the ones already known."""
        doc = doc or LocatedYAML(None, "<retention classes>")
        for name, value in classes.items():
            self._retention[name] = _Entry(value, doc, ".", builtin=False)

    def retention_ttl_days(self, name: str) -> int | None:
        entry = self._retention.get(name)
        if entry is None:
            raise PresetError(
                f"unknown retention class {name!r}",
                fix=f"use one of: {', '.join(sorted(self._retention))}",
            )
        ttl: int | None = entry.value.ttl_days
        return ttl

    def retention_classes(self) -> list[str]:
        return sorted(self._retention)


def adjustment_problem(source: SourceSpec, adjustment: str) -> Problem | None:
    """Why ``source`` (name and options, valid) cannot give ``adjustment`` prices, or None."""
    from qmtl_engine.sources.options import OPTIONS  # pydantic only: check stays light

    options = OPTIONS[source.name].model_validate(source.options)
    return options.adjustment_problem(adjustment, source.name)


def _where(entry: _Entry) -> str:
    return "built-in" if entry.builtin else entry.doc.path


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def builtin_catalog_text() -> str:
    return builtin_catalog_bytes().decode("utf-8")


def load_registry(catalog_paths: Iterable[str | Path] = (),
                  extra: Mapping[str, str] | None = None) -> PresetRegistry:
    """Build the registry: the built-in catalog, then each user catalog file in order.

    ``extra`` maps a display path to YAML text, for catalogs that do not live in files (tests).
    """
    registry = PresetRegistry()
    registry.add_catalog(load_yaml(builtin_catalog_text(), "<built-in presets.yaml>"),
                         base_dir=builtin_data_dir(), builtin=True)
    for path in catalog_paths:
        p = Path(path)
        try:
            text = read_yaml_text(p)
        except FileNotFoundError:
            raise PresetError(f"preset catalog {str(p)!r} does not exist", path=str(p),
                              fix="fix the path (under `presets:` in seamless.yaml, or of "
                              "--presets)") from None
        registry.add_catalog(load_yaml(text, str(p)), base_dir=str(p.resolve().parent))
    for name, text in (extra or {}).items():
        registry.add_catalog(load_yaml(text, name), base_dir=".")
    registry.validate_references()
    return registry
