"""``check``: is seamless.lock up to date with seamless.yaml and the presets? Reads no data.

Meant for pre-commit hooks and CI, so it imports neither pyarrow nor fsspec, and when the digest
of the lock and its inputs as they are on disk was recorded in sync, it answers from that alone,
without the pydantic models (:mod:`qmtl_lock.inputs`; :func:`lock_digest` says when a digest is
recorded). The result is true when there is drift; each :class:`Drift` names the dataset, what
changed and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmtl_lock.inputs import LOCK_NAME, current_lock, plain_store, record_digest
from qmtl_lock.symbols import changed_settings, symbol_settings

if TYPE_CHECKING:
    from qmtl_lock.inputs import Inputs
    from qmtl_lock.lockfile import Lockfile
    from qmtl_lock.manifest import LoadedManifest


@dataclass(frozen=True)
class Drift:
    dataset: str
    kind: str  # missing-lock | new-dataset | removed-dataset | request | preset | contract |
    #            symbols | coverage | sla
    detail: str
    fix: str
    symbol: str | None = None

    def line(self) -> str:
        who = self.dataset + (f"/{self.symbol}" if self.symbol else "")
        return f"{who}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "symbol": self.symbol, "kind": self.kind,
                "detail": self.detail, "fix": self.fix}


@dataclass
class CheckResult:
    drifts: list[Drift] = field(default_factory=list)
    manifest: Path | None = None
    lock: Path | None = None

    def __bool__(self) -> bool:
        return bool(self.drifts)


_RESOLVE = "run `qmtl-lock resolve` and commit seamless.lock"


def check(manifest_path: str | Path = "seamless.yaml", *, strict: bool = False) -> CheckResult:
    """Compare the lock with the manifest and the current preset definitions.

    With ``strict``, recorded SLA violations count as drift too.
    """
    path = Path(manifest_path)
    current = current_lock(path)
    if current is not None and not (strict and current.may_record_violation()):
        return CheckResult(manifest=path, lock=path.with_name(LOCK_NAME))
    from qmtl_lock.lockfile import read_lock
    from qmtl_lock.manifest import load_manifest

    loaded = load_manifest(path)
    result = CheckResult(manifest=loaded.path, lock=loaded.lock_path)
    if not loaded.lock_path.exists():
        result.drifts.append(Drift("*", "missing-lock", f"{loaded.lock_path} does not exist",
                                   _RESOLVE))
        return result
    lock = read_lock(loaded.lock_path)
    result.drifts.extend(compare(loaded, lock, strict=strict))
    if not result.drifts:  # the next check of the same bytes answers without the models
        remember_in_sync(loaded, lock, create=False)
    return result


def compare(loaded: LoadedManifest, lock: Lockfile, *, strict: bool = False) -> list[Drift]:
    drifts: list[Drift] = []
    for name, ds in sorted(loaded.datasets.items()):
        entry = lock.datasets.get(name)
        if entry is None:
            drifts.append(Drift(name, "new-dataset", "in seamless.yaml but not in the lock",
                                _RESOLVE))
            continue
        want = ds.request_dict()
        have = dict(entry.request)
        drifts.extend(_request_drift(name, want, have))
        drifts.extend(_symbol_settings_drift(name, want, have))
        # A changed preset name or override is reported as a request drift above already.
        same_names = all(want.get(k) == have.get(k)
                         for k in ("preset", "conformance_preset", "sla_preset", "adjustment"))
        if ds.preset.digest() != entry.preset_digest and same_names:
            drifts.append(Drift(
                name, "preset",
                f"the definition of preset {ds.spec.preset} changed since the lock was written",
                "review the preset change (qmtl-lock presets --json), then " + _RESOLVE))
        added = sorted(set(ds.spec.symbol_names) - set(entry.symbols))
        removed = sorted(set(entry.symbols) - set(ds.spec.symbol_names))
        listed = sorted(set(want["symbols"]) ^ set(have.get("symbols", [])))
        if added:
            drifts.append(Drift(name, "symbols", f"symbols not locked yet: {', '.join(added)}",
                                _RESOLVE))
        if removed:
            drifts.append(Drift(name, "symbols",
                                f"symbols locked but no longer asked for: {', '.join(removed)}",
                                _RESOLVE))
        if listed and not added and not removed:
            drifts.append(Drift(name, "lock-edited",
                                "the lock's request lists other symbols than its entries",
                                "restore the lock from git or " + _RESOLVE))
        range_asked = all(want.get(k) == have.get(k) for k in ("preset", "start", "end"))
        own_want, own_have = symbol_settings(want), symbol_settings(have)
        ttl = loaded.registry.retention_ttl_days(ds.spec.retention_class)
        for symbol, sym in sorted(entry.symbols.items()):
            own_range = not {"start", "end"} & set(changed_settings(own_want.get(symbol, {}),
                                                                     own_have.get(symbol, {})))
            drifts.extend(_entry_drift(name, symbol, sym, ds, strict,
                                       range_asked and own_range))
            expires = None if ttl is None else sym.as_of + ttl * 86_400_000
            if want.get("retention_class") == have.get("retention_class") and \
                    sym.expires_at != expires:
                drifts.append(Drift(name, "retention",
                                    f"the TTL of retention class {ds.spec.retention_class} "
                                    "changed: expires_at is out of date", _RESOLVE, symbol))
    for name in sorted(set(lock.datasets) - set(loaded.datasets)):
        drifts.append(Drift(name, "removed-dataset",
                            "locked but no longer in seamless.yaml", _RESOLVE))
    return drifts


def lock_digest(loaded: LoadedManifest, lock: Lockfile) -> str | None:
    """The digest of ``lock`` (as resolve renders it) and of the inputs ``loaded`` was built
    from, to record as in sync; None when the light path could not stand in for the full one on
    them, that is unless

    - the bytes the models were built from are known (:attr:`LoadedManifest.inputs`);
    - :func:`compare` finds no drift, so the light ``check`` has nothing to report;
    - a plain resolve would write this very lock again (:func:`_resolves_to_itself`), so the
      light no-op resolve has nothing to do;
    - the store read from the manifest's text without YAML, if any, is the model's
      (:func:`qmtl_lock.inputs.plain_store`);
    - every catalog names only calendars listed in the engine: whether another one is valid
      depends on the installed calendar library, which no digest covers.

    The digest covers the rendered text, so it matches a lock on disk only if a plain resolve
    would write that lock byte for byte.
    """
    from qmtl_engine import is_listed_calendar

    inputs = loaded.inputs
    if inputs is None or compare(loaded, lock) or not _resolves_to_itself(loaded, lock):
        return None
    if plain_store(inputs.manifest) not in (None, loaded.manifest.store):
        return None
    calendars = _catalog_calendars(inputs)
    if calendars is None or not all(is_listed_calendar(c) for c in calendars):
        return None
    return inputs.digest(_text(lock).encode())


def _text(lock: Lockfile) -> str:
    from qmtl_lock.lockfile import render_lines

    return "\n".join(render_lines(lock)) + "\n"


def _resolves_to_itself(loaded: LoadedManifest, lock: Lockfile) -> bool:
    """Whether a plain resolve that finds every snapshot in the store writes ``lock`` again.
    Such a resolve keeps the entry of each symbol asked for (moving it to a changed retention
    class), drops any other, and writes each dataset's request and preset digest anew; so the
    lock must render as that assembly does."""
    from qmtl_lock.lockfile import DatasetEntry, Lockfile

    again = {}
    for name, ds in loaded.datasets.items():
        entry = lock.datasets.get(name)
        if entry is None or not set(ds.spec.symbol_names) <= set(entry.symbols):
            return False
        kept = {s: entry.symbols[s] for s in ds.spec.symbol_names}
        if any(sym.retention_class != ds.spec.retention_class for sym in kept.values()):
            return False
        again[name] = DatasetEntry(ds.request_dict(), ds.preset.digest(), kept)
    return _text(Lockfile(datasets=again)) == _text(lock)


def remember_in_sync(loaded: LoadedManifest, lock: Lockfile, *, create: bool = True) -> None:
    """Record :func:`lock_digest` beside seamless.yaml when there is one (see
    :func:`qmtl_lock.inputs.record_digest` for ``create``)."""
    digest = lock_digest(loaded, lock)
    if digest is not None:
        record_digest(loaded.path, digest, create=create)


def _catalog_calendars(inputs: Inputs) -> set[str] | None:
    """Every calendar that a data preset of the built-in or a user catalog names; None when a
    catalog is not shaped as the registry read it (it cannot be, once loaded: no digest then)."""
    from qmtl_engine import YAMLFileError, load_yaml

    found: set[str] = set()
    for where, text in [("<built-in presets.yaml>", inputs.builtin), *inputs.catalogs]:
        try:
            doc = load_yaml(text.decode("utf-8"), where).data
        except (YAMLFileError, UnicodeDecodeError):
            return None
        presets = (doc.get("data_presets") or {}) if isinstance(doc, dict) else None
        if not isinstance(presets, dict):
            return None
        for preset in presets.values():
            calendar = preset.get("calendar", "24x7") if isinstance(preset, dict) else None
            if not isinstance(calendar, str):
                return None
            found.add(calendar)
    return found


# A request records these keys only when they differ from the default, so that locks written
# before the key existed keep their bytes; a message names the default instead of None.
_REQUEST_DEFAULTS = {"adjustment": "raw"}


def _request_drift(name: str, want: dict[str, Any], have: dict[str, Any]) -> list[Drift]:
    """Each request key whose value in seamless.yaml differs from the locked request."""
    from qmtl_lock.manifest import REQUEST_KEYS

    drifts = []
    for key in REQUEST_KEYS:
        if want.get(key) != have.get(key):
            kind = "contract" if key == "contract_version" else "request"
            default = _REQUEST_DEFAULTS.get(key)  # what a request without the key means
            drifts.append(Drift(
                name, kind,
                f"{key} changed: lock has {have.get(key, default)!r}, seamless.yaml has "
                f"{want.get(key, default)!r}",
                _RESOLVE if kind == "request" else
                "update the strategy code for the new contract, then " + _RESOLVE))
    return drifts


def _symbol_settings_drift(name: str, want: dict[str, Any],
                           have: dict[str, Any]) -> list[Drift]:
    """Each setting of a symbol of its own (``source_symbol``, ``start``, ``end``) whose value
    in seamless.yaml differs from the locked request, named with its symbol."""
    own_want, own_have = symbol_settings(want), symbol_settings(have)
    drifts = []
    for symbol in sorted(set(own_want) | set(own_have)):
        w, h = own_want.get(symbol, {}), own_have.get(symbol, {})
        for key in changed_settings(w, h):
            drifts.append(Drift(
                name, "request",
                f"{key} of {symbol} changed: lock has {h.get(key)!r}, seamless.yaml has "
                f"{w.get(key)!r}", _RESOLVE, symbol))
    return drifts  # (a lock whose symbol_settings are not of that shape is refused on read)


def _entry_drift(name: str, symbol: str, sym: Any, ds: Any, strict: bool,
                 range_asked: bool) -> list[Drift]:
    """Problems of one locked symbol. Coverage is compared only when the request's range is
    the one the lock recorded: otherwise the request drift already explains the difference."""
    from qmtl_engine import iso

    out = []
    start, end = sym.coverage_bounds
    asked_start, asked_end = ds.symbol_range(symbol)  # the dataset's, cut to the symbol's own
    # A fixed end that was still in the future at as_of is pinned up to the last closed bar.
    short = asked_end is not None and end < asked_end and asked_end > sym.as_of >= end
    if range_asked and (start != asked_start or (asked_end is not None and end != asked_end
                                                 and not short) or end <= start):
        out.append(Drift(
            name, "lock-edited",
            f"coverage [{iso(start)}, {iso(end)}) does not match the request",
            "restore the lock from git or " + _RESOLVE, symbol))
    if strict and sym.sla.get("violation"):
        out.append(Drift(name, "sla", f"SLA violation recorded: {sym.sla['violation']}",
                         "resolve again when the source is healthy, or relax the SLA preset",
                         symbol))
    return out
