"""``check``: is seamless.lock up to date with seamless.yaml and the presets? Reads no data.

Meant for pre-commit hooks and CI, so it imports neither pyarrow nor fsspec. The result is true
when there is drift; each :class:`Drift` names the dataset, what changed and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmtl_engine import iso

from qmtl_lock.lockfile import Lockfile, read_lock
from qmtl_lock.manifest import REQUEST_KEYS, LoadedManifest, load_manifest


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
    loaded = load_manifest(manifest_path)
    result = CheckResult(manifest=loaded.path, lock=loaded.lock_path)
    if not loaded.lock_path.exists():
        result.drifts.append(Drift("*", "missing-lock", f"{loaded.lock_path} does not exist",
                                   _RESOLVE))
        return result
    lock = read_lock(loaded.lock_path)
    result.drifts.extend(compare(loaded, lock, strict=strict))
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
        # A changed preset name or override is reported as a request drift above already.
        same_names = all(want.get(k) == have.get(k)
                         for k in ("preset", "conformance_preset", "sla_preset"))
        if ds.preset.digest() != entry.preset_digest and same_names:
            drifts.append(Drift(
                name, "preset",
                f"the definition of preset {ds.spec.preset} changed since the lock was written",
                "review the preset change (qmtl-lock presets --json), then " + _RESOLVE))
        added = sorted(set(ds.spec.symbols) - set(entry.symbols))
        removed = sorted(set(entry.symbols) - set(ds.spec.symbols))
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
        ttl = loaded.registry.retention_ttl_days(ds.spec.retention_class)
        for symbol, sym in sorted(entry.symbols.items()):
            drifts.extend(_entry_drift(name, symbol, sym, ds, strict, range_asked))
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


def _request_drift(name: str, want: dict[str, Any], have: dict[str, Any]) -> list[Drift]:
    """Each request key whose value in seamless.yaml differs from the locked request."""
    drifts = []
    for key in REQUEST_KEYS:
        if want.get(key) != have.get(key):
            kind = "contract" if key == "contract_version" else "request"
            drifts.append(Drift(
                name, kind,
                f"{key} changed: lock has {have.get(key)!r}, seamless.yaml has "
                f"{want.get(key)!r}",
                _RESOLVE if kind == "request" else
                "update the strategy code for the new contract, then " + _RESOLVE))
    return drifts


def _entry_drift(name: str, symbol: str, sym: Any, ds: Any, strict: bool,
                 range_asked: bool) -> list[Drift]:
    """Problems of one locked symbol. Coverage is compared only when the request's range is
    the one the lock recorded: otherwise the request drift already explains the difference."""
    out = []
    start, end = sym.coverage_bounds
    # A fixed end that was still in the future at as_of is pinned up to the last closed bar.
    short = not ds.end_is_now and end < ds.end_ms() and ds.end_ms() > sym.as_of >= end
    if range_asked and (start != ds.start_ms or (not ds.end_is_now and end != ds.end_ms()
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
