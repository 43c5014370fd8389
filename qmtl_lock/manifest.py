"""seamless.yaml: the data a project asks for (DESIGN §8).

The models are plain values; :func:`load_manifest` reads the file, validates it against the models
and the preset registry, and turns every problem into a :class:`ManifestError` with file and line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
)
from qmtl_engine import (
    LocatedYAML,
    PresetError,
    PresetRegistry,
    RangeError,
    ResolvedPreset,
    RetentionClass,
    TimeRange,
    YAMLFileError,
    ceil_to,
    iso,
    load_registry,
    load_yaml,
    read_yaml_text,
    to_ms,
)

from qmtl_lock.errors import ManifestError
from qmtl_lock.inputs import (  # the file names live in the light module; re-exported here
    DEFAULT_STORE,
    LOCK_NAME,
    MANIFEST_NAME,
    Inputs,
    StoreSetting,
    read_inputs,
    resolve_store_url,  # noqa: F401  (re-exported: the surfaces import it from here)
    store_setting,
)
from qmtl_lock.symbols import symbol_problem

if TYPE_CHECKING:
    from qmtl_engine import Request, Store

_DATASET_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

When = date | datetime | str

# Nanosecond timestamps (pandas, and Arrow's ns unit, which readers of the data may cast to) span
# 1677-09-21 to 2262-04-11; whole years inside that span keep every partition window in it too.
FIRST_YEAR, LAST_YEAR = 1678, 2261
_FIRST_MS, _END_MS = to_ms(date(FIRST_YEAR, 1, 1)), to_ms(date(LAST_YEAR + 1, 1, 1))
DATE_FIX = "write dates as YYYY-MM-DD, times as YYYY-MM-DDTHH:MM:SSZ, or end: now"
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_TEXT = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$")
_NAIVE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")

# The keys of a lock's request that check compares, and among them those that decide which data
# is fetched (resolve re-materializes when one of these changes).
REQUEST_KEYS = ("preset", "start", "end", "contract_version", "retention_class", "priority",
                "live", "accepted_gaps", "conformance_preset", "sla_preset", "adjustment")
DATA_KEYS = ("preset", "start", "end", "contract_version", "accepted_gaps", "adjustment")


class DateProblem(ValueError):
    """Why a start or end is not a date, and what to write instead. pydantic keeps the
    exception in its error's context, where :func:`_manifest_error` finds it."""

    def __init__(self, reason: str = "", fix: str = DATE_FIX) -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(reason or "not a date")


class ItemProblem(ValueError):
    """A problem of one item of a list that only the whole list shows (a duplicate): names the
    item, so the message points at its line (:func:`_manifest_error`)."""

    def __init__(self, reason: str, *, index: int, fix: str) -> None:
        self.index = index
        self.fix = fix
        super().__init__(reason)


def check_when(value: Any, *, now_ok: bool = True) -> Any:
    """Return ``value`` if it is a start or end, else raise :class:`DateProblem`.

    A date is a YAML date or time, or text: ``YYYY-MM-DD``, an ISO-8601 time with ``Z`` or an
    offset, or ``now`` (where ``now_ok``). Numbers are refused: pydantic would read
    ``20180101`` as seconds since 1970. Years outside FIRST_YEAR..LAST_YEAR are refused.
    """
    if isinstance(value, str):
        if value == "now" and now_ok:
            return value
        if not (_DATE_TEXT.match(value) or _TIME_TEXT.match(value)):
            raise _text_problem(value)
        try:
            ms = to_ms(value)
        except RangeError:
            raise DateProblem() from None
    elif isinstance(value, date):  # a datetime is a date too
        ms = to_ms(value)
    else:
        raise _type_problem(value)
    if not _FIRST_MS <= ms < _END_MS:
        raise DateProblem(
            f"qmtl-lock handles dates from {FIRST_YEAR}-01-01 to {LAST_YEAR}-12-31",
            fix="give the real date; for data up to the latest closed bar write `end: now`")
    return value


def _text_problem(text: str) -> DateProblem:
    if _NAIVE_TIME.match(text):
        return DateProblem("a time needs its zone: Z for UTC or an offset such as +02:00")
    if text == "now":
        return DateProblem("`now` is only allowed as a dataset's end")
    compact = _COMPACT_DATE.match(text)
    if compact:
        return DateProblem("a date needs dashes", fix=f"write it as {'-'.join(compact.groups())}")
    return DateProblem()


def _shown(value: Any) -> str:
    """A start or end as the user wrote it: text quoted, other values as YAML spells them."""
    if isinstance(value, str):
        return repr(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _type_problem(value: Any) -> DateProblem:
    if value is None:
        return DateProblem("the value is empty")
    if isinstance(value, bool):
        return DateProblem(f"`{str(value).lower()}` is not a date")
    if isinstance(value, int | float):
        compact = _COMPACT_DATE.match(str(value))
        fix = f"write it as {'-'.join(compact.groups())}" if compact else DATE_FIX
        return DateProblem("a number is not a date (it would be read as seconds since 1970)",
                           fix=fix)
    kind = "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) \
        else type(value).__name__
    return DateProblem(f"{kind} is not a date")


class AcceptedGap(BaseModel):
    """A known stretch without data (an exchange outage, a delisting): not counted as gaps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: When
    end: When
    reason: str = Field(min_length=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _when(cls, v: Any) -> Any:
        return check_when(v, now_ok=False)

    def range(self) -> TimeRange:
        return TimeRange(to_ms(self.start), to_ms(self.end))

    def to_dict(self) -> dict[str, str]:
        return {"start": when_text(self.start), "end": when_text(self.end),
                "reason": self.reason}


SYMBOL_KEYS_FIX = ("a symbol's mapping takes symbol, source_symbol, start and end, e.g. "
                   "`- {symbol: BTCUSD, source_symbol: XBTUSDT, start: 2013-10-06}`")


def _valid_symbol(value: str) -> str:
    problem = symbol_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class SymbolSpec(BaseModel):
    """A symbol with settings of its own: the name the source knows it by (``source_symbol``,
    e.g. ``XBTUSDT`` in the vendor's file for our ``BTCUSD``), its listing (``start``) and its
    delisting (``end``). Its range is the dataset's, cut to its own start and end."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str
    source_symbol: str | None = None
    start: When | None = None
    end: When | None = None

    @field_validator("symbol", "source_symbol")
    @classmethod
    def _symbol(cls, v: str | None) -> str | None:
        return None if v is None else _valid_symbol(v)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _when(cls, v: Any) -> Any:
        if v == "now":  # a symbol's own end is its delisting; `end: now` is the dataset's
            raise DateProblem("`now` is only allowed as a dataset's end",
                              fix="leave `end` out: a symbol without one ends with its dataset")
        return check_when(v, now_ok=False)

    def settings(self) -> dict[str, str]:
        """What the lock records of this symbol: only the keys that are set, canonical text
        (a ``source_symbol`` equal to the symbol says nothing and is left out)."""
        out: dict[str, str] = {}
        if self.source_symbol is not None and self.source_symbol != self.symbol:
            out["source_symbol"] = self.source_symbol
        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None:
                out[key] = when_text(value)
        return out


# Which form a symbol is written in, so that a mistake in a mapping is reported as the
# mapping's (the tags never reach a message, _manifest_error).
_SYMBOL_TAGS = ("symbol-name", "symbol-mapping")


def _symbol_form(value: Any) -> str:
    return _SYMBOL_TAGS[1] if isinstance(value, dict | SymbolSpec) else _SYMBOL_TAGS[0]


SymbolValue = Annotated[Annotated[str, AfterValidator(_valid_symbol), Tag(_SYMBOL_TAGS[0])]
                        | Annotated[SymbolSpec, Tag(_SYMBOL_TAGS[1])],
                        Discriminator(_symbol_form)]


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str
    # a name, or a mapping with settings of its own (SymbolSpec)
    symbols: list[SymbolValue] = Field(min_length=1)
    start: When
    end: When
    contract_version: str
    retention_class: str = "default"
    priority: Literal["low", "normal", "high"] = "normal"
    live: dict[str, Any] | None = None
    accepted_gaps: list[AcceptedGap] = Field(default_factory=list)
    # Replace the preset's conformance or SLA preset for this dataset only (by name).
    conformance_preset: str | None = None
    sla_preset: str | None = None
    # Replace the preset's adjustment (raw | splits | splits_dividends) where its source can.
    adjustment: Literal["raw", "splits", "splits_dividends"] | None = None
    description: str = ""
    _own: dict[str, SymbolSpec] = PrivateAttr(default_factory=dict)

    @field_validator("symbols")
    @classmethod
    def _once(cls, v: list[str | SymbolSpec]) -> list[str | SymbolSpec]:
        names = [s if isinstance(s, str) else s.symbol for s in v]
        for i, symbol in enumerate(names):
            if symbol in names[:i]:
                raise ItemProblem(f"symbol {symbol} is listed twice", index=i,
                                  fix="keep one entry per symbol (a mapping holds all its "
                                  "settings)")
        return v

    @field_validator("start", "end", mode="before")
    @classmethod
    def _when(cls, v: Any) -> Any:
        return check_when(v)  # `start: now` passes here and gets its own message later

    @property
    def symbol_names(self) -> list[str]:
        """The dataset's symbols, as the lock and every message name them, in manifest order."""
        return [s if isinstance(s, str) else s.symbol for s in self.symbols]

    def model_post_init(self, context: Any, /) -> None:
        # by name, so that a dataset of thousands of tickers is not searched for each of them
        self._own = {s.symbol: s for s in self.symbols if isinstance(s, SymbolSpec)}

    def symbol_spec(self, symbol: str) -> SymbolSpec | None:
        """The settings of ``symbol`` when it is written as a mapping, else None."""
        return self._own.get(symbol)

    def symbol_settings(self) -> list[dict[str, str]]:
        """The symbols that have settings of their own, sorted, each as ``{symbol, …its
        settings}`` (:meth:`SymbolSpec.settings`): what the lock's request records under
        ``symbol_settings``. A list of mappings rather than a mapping by symbol, so that no
        symbol is ever taken for a secret's key by the lock's redaction."""
        return [{"symbol": s.symbol, **s.settings()}
                for s in sorted((s for s in self.symbols if isinstance(s, SymbolSpec)),
                                key=lambda s: s.symbol) if s.settings()]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_store_options(options: dict[str, Any], prefix: str = "") -> None:
    """Raise ValueError for options no environment can resolve (see
    :func:`qmtl_engine.store_access.check_options`, which the engine applies again)."""
    for key, value in options.items():
        name = f"{prefix}{key}"
        if key.endswith("_env"):
            target = key.removesuffix("_env")
            if not target:
                raise ValueError("`_env` names no option: write <option>_env, e.g. secret_env")
            if target in options:
                raise ValueError(f"{prefix}{target} is given twice, as itself and as {name}: "
                                 f"keep only {name}")
            if not isinstance(value, str) or not _ENV_NAME.match(value):
                raise ValueError(f"{name} must name an environment variable (letters, digits "
                                 f"and _), not {value!r}")
        elif isinstance(value, dict):
            _check_store_options(value, f"{name}.")


class StoreConfig(BaseModel):
    """``store:`` as a mapping: the store's URL and the fsspec storage options to open it with.
    An option key ending in ``_env`` names the environment variable that holds its value
    (``secret_env: TEAM_S3_SECRET``), so no secret is written here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_store_options(v)
        return v


# Which form of `store:` a value is written in, so that a mistake in a mapping is reported as
# that mapping's, not as "not a string". The tags never reach a message (_manifest_error).
_STORE_TAGS = ("store-url", "store-mapping")


def _store_form(value: Any) -> str:
    return _STORE_TAGS[1] if isinstance(value, dict | StoreConfig) else _STORE_TAGS[0]


StoreValue = Annotated[Annotated[str, Tag(_STORE_TAGS[0])]
                       | Annotated[StoreConfig, Tag(_STORE_TAGS[1])], Discriminator(_store_form)]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    store: StoreValue = DEFAULT_STORE
    # the local cache of a remote store's immutable files: a folder, or false for none
    cache: str | bool | None = None
    presets: list[str] = Field(default_factory=list)
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    # name -> {ttl_days, description}, merged over the built-in classes (research-short, ...)
    retention_classes: dict[str, RetentionClass] = Field(default_factory=dict)

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        for name in v:
            if not _DATASET_RE.match(str(name)):
                raise ValueError(f"invalid dataset name {name!r}: use letters, digits, _ . -")
        return v


def when_text(value: When) -> str:
    """Canonical text of a start or end: YYYY-MM-DD, an ISO UTC time with Z, or ``now``."""
    if isinstance(value, str):
        if value == "now":
            return value
        ms = to_ms(value)
        return iso(ms)[:10] if ms % 86_400_000 == 0 and "T" not in value else iso(ms)
    if isinstance(value, datetime):
        return iso(to_ms(value))
    return value.isoformat()


@dataclass(frozen=True)
class DatasetRequest:
    """One dataset of the manifest, validated and resolved against the preset registry."""

    name: str
    spec: DatasetSpec
    preset: ResolvedPreset

    @property
    def start_ms(self) -> int:
        return ceil_to(to_ms(self.spec.start), self.preset.interval_ms)

    @property
    def end_is_now(self) -> bool:
        return self.spec.end == "now"

    def end_ms(self) -> int:
        """The fixed end of the request; ``end: now`` has none (its end is planned)."""
        if self.end_is_now:
            raise RangeError(f"dataset {self.name!r} ends `now`: its end is planned at resolve "
                             "time, not fixed", fix="read the coverage from the lock instead")
        return ceil_to(to_ms(self.spec.end), self.preset.interval_ms)

    def symbol_range(self, symbol: str) -> tuple[int, int | None]:
        """The start and the fixed end of ``symbol``'s bars, on the interval's grid: the
        dataset's range cut to the symbol's own ``start`` (listing) and ``end`` (delisting).
        The end is None when it is the dataset's ``end: now`` (planned at resolve time)."""
        interval = self.preset.interval_ms
        start, end = self.start_ms, None if self.end_is_now else self.end_ms()
        own = self.spec.symbol_spec(symbol)
        if own is not None and own.start is not None:
            start = max(start, ceil_to(to_ms(own.start), interval))
        if own is not None and own.end is not None:
            own_end = ceil_to(to_ms(own.end), interval)
            end = own_end if end is None else min(end, own_end)
        return start, end

    def follows_now(self, symbol: str, coverage_end: int) -> bool:
        """Whether ``symbol``, covered up to ``coverage_end``, follows the dataset's ``end:
        now``: it has no end of its own, or one (a delisting still to come) not reached yet."""
        own_end = self.symbol_range(symbol)[1]
        return self.end_is_now and (own_end is None or coverage_end < own_end)

    def source_symbol(self, symbol: str) -> str:
        """The name the source is asked for: the symbol's ``source_symbol``, else itself."""
        own = self.spec.symbol_spec(symbol)
        return own.source_symbol if own is not None and own.source_symbol else symbol

    def request_dict(self) -> dict[str, Any]:
        """What the lock records as asked for (no credentials, canonical text)."""
        from qmtl_lock.redact import redact

        out: dict[str, Any] = {"preset": self.spec.preset,
                               "symbols": sorted(self.spec.symbol_names)}
        settings = self.spec.symbol_settings()
        if settings:  # only when a symbol has settings, so other locks keep their bytes; the
            out["symbol_settings"] = settings  # place the lock's reader gives it (RequestModel)
        out |= {
            "start": when_text(self.spec.start),
            "end": when_text(self.spec.end),
            "contract_version": self.spec.contract_version,
            "retention_class": self.spec.retention_class,
            "priority": self.spec.priority,
        }
        if self.spec.live is not None:
            out["live"] = redact(self.spec.live)
        if self.spec.accepted_gaps:
            out["accepted_gaps"] = [g.to_dict() for g in self.spec.accepted_gaps]
        # Only when set, so locks written before overrides existed keep their bytes.
        for key in ("conformance_preset", "sla_preset"):
            if getattr(self.spec, key) is not None:
                out[key] = getattr(self.spec, key)
        if self.preset.adjustment != "raw":  # the preset's or the dataset's: what is pinned
            out["adjustment"] = self.preset.adjustment
        return out

    def accepted_ranges(self) -> tuple[TimeRange, ...]:
        return tuple(g.range() for g in self.spec.accepted_gaps)

    def engine_request(self, symbol: str, coverage: TimeRange, *, follows_now: bool) -> Request:
        """What the engine materializes for ``symbol`` of this dataset over ``coverage``."""
        from qmtl_engine import Request

        source = self.source_symbol(symbol)
        return Request(self.preset, symbol, coverage, self.spec.contract_version,
                       dataset=self.name, accepted_gaps=self.accepted_ranges(),
                       follows_now=follows_now,
                       source_symbol=None if source == symbol else source)


@dataclass
class LoadedManifest:
    path: Path
    manifest: Manifest
    registry: PresetRegistry
    datasets: dict[str, DatasetRequest]
    doc: LocatedYAML
    # The bytes these models were built from, read just before and after loading them (so no
    # edit in between goes unseen); None when they could not be. resolve digests them.
    inputs: Inputs | None = None

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(LOCK_NAME)

    @property
    def store_setting(self) -> StoreSetting:
        """The store and cache seamless.yaml names (options unresolved)."""
        return manifest_store_setting(self.manifest, self.root)

    @property
    def store_url(self) -> str:
        return self.store_setting.url

    def open_store(self) -> Store:
        """The engine's store for this project (resolving ``*_env`` options: raises
        InputError when a variable is not set)."""
        return self.store_setting.open()


def manifest_store_setting(manifest: Manifest, root: Path) -> StoreSetting:
    """The store and cache of ``manifest``, whose seamless.yaml is in folder ``root``."""
    store = manifest.store
    value = store if isinstance(store, str) else {"url": store.url, "options": store.options}
    return store_setting(value, manifest.cache, root)


def _date_key(loc: list[Any]) -> int | None:
    """Length of the part of ``loc`` that names a dataset's or an accepted gap's start/end."""
    if len(loc) >= 3 and loc[0] == "datasets" and loc[2] in ("start", "end"):
        return 3
    if len(loc) >= 5 and loc[0] == "datasets" and loc[2] in ("accepted_gaps", "symbols") \
            and loc[4] in ("start", "end"):
        return 5
    return None


def _in_symbols(loc: list[Any]) -> bool:
    """Whether ``loc`` names an item of a dataset's ``symbols`` (or a key of one)."""
    return len(loc) >= 4 and loc[0] == "datasets" and loc[2] == "symbols"


def _manifest_error(exc: ValidationError, doc: LocatedYAML) -> ManifestError:
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-")
                                                                   or p in _STORE_TAGS
                                                                   or p in _SYMBOL_TAGS))]
    date_key = _date_key(loc)
    if date_key is not None:
        loc = loc[:date_key]  # the union of date types reports each branch; the key is enough
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
        fix = "remove it or check its spelling; see schemas/seamless.schema.json for valid keys"
        if _in_symbols(loc):
            fix = f"remove it or check its spelling: {SYMBOL_KEYS_FIX}"
    elif kind == "missing":
        msg = f"missing required key {loc[-1]!r}"
        fix = f"add `{loc[-1]}:` to the entry"
    elif _in_symbols(loc) and len(loc) == 4 and kind in ("string_type", "model_type"):
        msg = f"symbol {_shown(err.get('input'))} is neither a name nor a mapping"
        fix = (f"quote it (\"{err.get('input')}\") if it is a name: YAML reads bare digits as "
               f"a number; {SYMBOL_KEYS_FIX}")
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        fix = "correct the value; see schemas/seamless.schema.json"
        problem = err.get("ctx", {}).get("error")
        if isinstance(problem, ItemProblem):
            loc, fix = [*loc, problem.index], problem.fix
            key = ".".join(str(p) for p in loc)
        if date_key is not None:
            problem = err.get("ctx", {}).get("error")
            reason = problem.reason if isinstance(problem, DateProblem) else ""
            msg = f"invalid date {_shown(err.get('input'))}" + (f": {reason}" if reason else "")
            fix = problem.fix if isinstance(problem, DateProblem) else DATE_FIX
    return ManifestError(f"invalid seamless.yaml: {msg}", path=doc.path, line=doc.line_of(loc),
                         key=key or None, fix=fix)


def parse_manifest(text: str, path: str) -> tuple[Manifest, LocatedYAML]:
    try:
        doc = load_yaml(text, path, conflict_fix=(
            "resolve the git conflict in seamless.yaml: keep the lines you want and delete the "
            "<<<<<<<, ======= and >>>>>>> lines"))
    except YAMLFileError as exc:
        raise ManifestError(exc.what, path=path, line=exc.line, key=exc.key, fix=exc.fix) from None
    if not isinstance(doc.data, dict):
        raise ManifestError("seamless.yaml must be a mapping that starts with `version: 1`",
                            path=path, line=1, fix="run `qmtl-lock init` for a starter file")
    try:
        return Manifest.model_validate(doc.data), doc
    except ValidationError as exc:
        raise _manifest_error(exc, doc) from None
    except RangeError as exc:
        raise ManifestError(exc.what, path=path, fix=exc.fix) from None


def read_manifest_text(path: str | Path) -> str:
    """The text of seamless.yaml; a missing, unreadable or non-UTF-8 file is a ManifestError."""
    p = Path(path)
    try:
        return read_yaml_text(p)
    except FileNotFoundError:
        raise ManifestError(f"{p} does not exist", path=str(p),
                            fix="run `qmtl-lock init` to write a starter seamless.yaml, or pass "
                            "--manifest PATH") from None
    except YAMLFileError as exc:
        raise ManifestError(exc.what, path=exc.path, line=exc.line, fix=exc.fix) from None


def load_manifest(path: str | Path = MANIFEST_NAME) -> LoadedManifest:
    """Read and validate seamless.yaml, including presets, contract versions and ranges."""
    p = Path(path)
    inputs = read_inputs(p)  # read before the models are, see LoadedManifest.inputs
    manifest, doc = parse_manifest(read_manifest_text(p), str(p))
    registry = load_registry(_catalog_paths(manifest, doc, p.parent))
    registry.add_retention_classes(manifest.retention_classes, doc=doc)
    datasets: dict[str, DatasetRequest] = {}
    for name, spec in manifest.datasets.items():
        datasets[name] = _validate_dataset(name, spec, registry, doc)
    # A file changed while it was loaded (the models may hold either version), or the light
    # reader tells the catalogs otherwise than the models: no digest may vouch for these bytes.
    if inputs is not None and (read_inputs(p) != inputs
                               or inputs.catalog_names != list(manifest.presets)):
        inputs = None
    return LoadedManifest(p, manifest, registry, datasets, doc, inputs)


def _catalog_paths(manifest: Manifest, doc: LocatedYAML, root: Path) -> list[str]:
    """The user catalogs; one that is missing or a directory is reported at its line here."""
    paths = []
    for i, name in enumerate(manifest.presets):
        path = root / name
        problem = ("does not exist" if not path.exists()
                   else "is a directory, not a file" if path.is_dir() else None)
        if problem:
            raise ManifestError(f"preset catalog {name!r} {problem}", path=doc.path,
                                line=doc.line_of(("presets", i)), key=f"presets.{i}",
                                fix="fix the path under `presets:` (relative to seamless.yaml)")
        paths.append(str(path))
    return paths


def _validate_dataset(name: str, spec: DatasetSpec, registry: PresetRegistry,
                      doc: LocatedYAML) -> DatasetRequest:
    def fail(what: str, key: str, fix: str) -> ManifestError:
        return ManifestError(what, path=doc.path, line=doc.line_of(("datasets", name, key)),
                             key=f"datasets.{name}.{key}", fix=fix)

    try:
        preset = registry.get(spec.preset)
    except PresetError as exc:
        raise fail(exc.what, "preset", exc.fix or "") from None
    for key in ("conformance_preset", "sla_preset", "adjustment"):
        try:
            preset = preset.with_overrides(registry, **{key: getattr(spec, key)})
        except PresetError as exc:
            raise fail(f"dataset {name!r}: {exc.what}", key, exc.fix or "") from None
    offered = preset.data.contract.version
    if spec.contract_version != offered:
        raise fail(
            f"dataset {name!r} asks for contract {preset.data.contract.name}@"
            f"{spec.contract_version}, but preset {spec.preset} offers "
            f"{preset.data.contract.ref}",
            "contract_version",
            f"set contract_version: {offered}, or pick a preset that offers "
            f"{spec.contract_version}",
        )
    if spec.start == "now":
        raise fail("start cannot be `now`", "start", "give start as a date, e.g. 2024-01-01")
    if spec.retention_class not in registry.retention_classes():
        raise fail(f"unknown retention class {spec.retention_class!r}", "retention_class",
                   f"use one of: {', '.join(registry.retention_classes())}")
    if preset.data.live is not None and spec.live is None:
        raise fail(f"preset {spec.preset} declares a live feed, but dataset {name!r} has no "
                   "`live:` block", "preset",
                   "add a `live:` block with the feed's settings to the dataset")
    for i, gap in enumerate(spec.accepted_gaps):
        if to_ms(gap.end) <= to_ms(gap.start):
            raise ManifestError(
                f"accepted gap {i + 1} of dataset {name!r} ends before it starts",
                path=doc.path, line=doc.line_of(("datasets", name, "accepted_gaps", i)),
                key=f"datasets.{name}.accepted_gaps.{i}", fix="swap start and end")
    req = DatasetRequest(name, spec, preset)
    if not req.end_is_now and req.end_ms() <= req.start_ms:
        raise fail(f"dataset {name!r} has start {when_text(spec.start)} at or after end "
                   f"{when_text(spec.end)}", "end", "make end later than start")
    _validate_symbols(req, doc)
    return req


def _validate_symbols(req: DatasetRequest, doc: LocatedYAML) -> None:
    """Each symbol's own range inside the dataset's and not empty, and no two symbols that
    would be read from the same source symbol over the same bars (a symbol listed twice is
    refused by the model itself, :class:`DatasetSpec`)."""
    name, spec = req.name, req.spec

    def fail(what: str, fix: str, key: str | None = None, *, i: int) -> ManifestError:
        loc: tuple[str | int, ...] = ("datasets", name, "symbols", i, *((key,) if key else ()))
        return ManifestError(what, path=doc.path, line=doc.line_of(loc),
                             key=".".join(str(p) for p in loc), fix=fix)

    names = spec.symbol_names
    for i, item in enumerate(spec.symbols):
        if isinstance(item, SymbolSpec):
            _check_own_range(req, item, partial(fail, i=i))
    seen: dict[str, list[tuple[str, int, int | None]]] = {}
    for i, symbol in enumerate(names):
        source = req.source_symbol(symbol)
        start, end = req.symbol_range(symbol)
        for other, o_start, o_end in seen.get(source, []):
            if (end is None or o_start < end) and (o_end is None or start < o_end):
                raise fail(
                    f"symbols {other} and {symbol} of dataset {name!r} both read source symbol "
                    f"{source} over the same bars: each would be pinned with the other's rows",
                    "give each its own source_symbol; if the source reused the name for "
                    "another listing, give the two start and end dates that do not overlap", i=i)
        seen.setdefault(source, []).append((symbol, start, end))


def _check_own_range(req: DatasetRequest, item: SymbolSpec,
                     fail: Callable[..., ManifestError]) -> None:
    """A symbol's own start before its own end, and some of its range inside the dataset's."""
    name, symbol = req.name, item.symbol
    if item.start is not None and item.end is not None and to_ms(item.end) <= to_ms(item.start):
        raise fail(f"symbol {symbol} of dataset {name!r} has start {when_text(item.start)} at "
                   f"or after end {when_text(item.end)}", "make its end later than its start",
                   "end")
    start, end = req.symbol_range(symbol)
    if end is not None and end <= start:
        dataset_range = (f"{when_text(req.spec.start)} .. {when_text(req.spec.end)}")
        if item.end is not None and to_ms(item.end) <= req.start_ms:
            what, key = f"its end {when_text(item.end)} is not after the dataset's start", "end"
        else:
            what, key = (f"its start {when_text(item.start or req.spec.start)} is not before "
                         "the dataset's end", "start")
        raise fail(f"symbol {symbol} of dataset {name!r} has no bars in the dataset's range "
                   f"{dataset_range}: {what}",
                   f"move the dataset's start or end to include {symbol}, or remove {symbol} "
                   "from this dataset", key)
