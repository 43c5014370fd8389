"""The compute-only materialize surface: one request through the engine, no lock involved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmtl_engine import PresetRegistry, TimeRange, ceil_to, iso, load_registry, to_ms

from qmtl_lock.manifest import DEFAULT_STORE, _catalog_paths, parse_manifest, read_manifest_text
from qmtl_lock.redact import redact_text

if TYPE_CHECKING:
    from qmtl_engine import Executor


@dataclass(frozen=True)
class MaterializeReport:
    """What one materialization produced (DESIGN §11)."""

    dataset_fingerprint: str
    as_of: str
    coverage_bounds: tuple[str, str]
    rows: int
    partitions: int
    conformance_flags: dict[str, int]
    sla_deadline_ms: int | None
    sla_elapsed_ms: int
    sla_violation: str | None
    attempts: int
    checkpoint_key: str
    retention_class: str
    fetched_partitions: int
    reused_partitions: int
    store: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["coverage_bounds"] = list(self.coverage_bounds)
        data.pop("extra")
        return data


@dataclass
class MaterializeSeamlessJob:
    """Materialize one preset and symbol into a store and report its fingerprint.

    ``end`` may be ``"now"``: the last closed, stabilized bar. Raises the engine's errors.
    """

    preset: str
    symbol: str
    start: Any
    end: Any
    contract_version: str
    retention_class: str = "default"
    artifact_dir: str | Path | None = None  # the store; default .seamless/store here
    presets: tuple[str, ...] = ()  # extra catalog files, merged over the project's
    manifest: Path | None = None  # the project's seamless.yaml: its catalogs and classes apply
    # the name the source knows the symbol by (a dataset's ``source_symbol``); None: ``symbol``
    source_symbol: str | None = None
    # where the partitions run: a DaskExecutor, or LocalExecutor(N) (default: one at a time)
    executor: Executor | None = field(default=None, repr=False, compare=False)

    def run(self) -> MaterializeReport:
        from qmtl_engine import Engine, InputError, Request, Store, coverage_end

        from qmtl_lock.resolve import clock_from_env

        self._check_arguments()
        registry = self._registry()
        preset = registry.get(self.preset)
        if self.contract_version != preset.data.contract.version:
            raise InputError(
                f"preset {self.preset} offers contract {preset.data.contract.ref}, not "
                f"{preset.data.contract.name}@{self.contract_version}",
                fix=f"use contract_version={preset.data.contract.version!r}")
        registry.retention_ttl_days(self.retention_class)  # unknown class: clear error
        clock = clock_from_env()
        start = ceil_to(to_ms(self.start), preset.interval_ms)
        end = (coverage_end(preset, clock.now_ms()) if self.end == "now"
               else ceil_to(to_ms(self.end), preset.interval_ms))
        store_url = str(self.artifact_dir or DEFAULT_STORE)
        store = Store(store_url)
        store.check_reachable()  # no write may create a bucket a typo named
        engine = Engine(store, mode="materialize", clock=clock)
        source = None if self.source_symbol in (None, self.symbol) else self.source_symbol
        request = Request(preset, self.symbol, TimeRange(start, end), self.contract_version,
                          source_symbol=source)
        result = engine.apply(engine.plan(request), executor=self.executor)
        return MaterializeReport(
            dataset_fingerprint=result.fingerprint, as_of=iso(result.as_of),
            coverage_bounds=(iso(result.coverage.start), iso(result.coverage.end)),
            rows=result.rows, partitions=result.partitions, conformance_flags=result.flags,
            sla_deadline_ms=result.sla.deadline_ms, sla_elapsed_ms=result.sla.elapsed_ms,
            sla_violation=result.sla.violation, attempts=result.attempts,
            checkpoint_key=result.checkpoint_key, retention_class=self.retention_class,
            fetched_partitions=result.fetched, reused_partitions=result.reused,
            store=redact_text(store_url),
        )


    def _registry(self) -> PresetRegistry:
        """The built-in presets, the catalogs under ``presets:`` of the project's seamless.yaml
        (as ``resolve`` sees them), then the ``presets`` files in order. Only the catalogs and
        retention classes of seamless.yaml are read: its datasets need not be valid here."""
        if self.manifest is None or not self.manifest.is_file():
            return load_registry(self.presets)
        manifest, doc = parse_manifest(read_manifest_text(self.manifest), str(self.manifest))
        registry = load_registry([*_catalog_paths(manifest, doc, self.manifest.parent),
                                  *self.presets])
        registry.add_retention_classes(manifest.retention_classes, doc=doc)
        return registry

    def _check_arguments(self) -> None:
        """The manifest's rules for a symbol and a start or end hold here too: a symbol names
        files for some sources (``../../x`` must not), and ``20180101`` is no date."""
        from qmtl_engine import InputError

        from qmtl_lock.manifest import DateProblem, check_when, symbol_problem

        for option, value in (("symbol", self.symbol), ("source-symbol", self.source_symbol)):
            problem = symbol_problem(value) if value is not None else None
            if problem:
                raise InputError(problem, where=f"the {option.replace('-', '_')} argument "
                                 f"(--{option})", fix="pass a symbol such as BTCUSDT or BTC/USDT")
        for name, value, now_ok in (("start", self.start, False), ("end", self.end, True)):
            try:
                check_when(value, now_ok=now_ok)
            except DateProblem as exc:
                raise InputError(f"invalid {name} {value!r}" + (f": {exc.reason}" if exc.reason
                                                                 else ""),
                                 where=f"the {name} argument (--{name})", fix=exc.fix) from None


def require_materialized_snapshot(*, fingerprint: str,
                                  store: str | Path = DEFAULT_STORE) -> dict[str, Any]:
    """Check that snapshot ``fingerprint`` is in ``store`` and every byte of it verifies.

    Returns the snapshot's header and partition list; raises :class:`ObjectMissing` or
    :class:`FingerprintMismatch` naming the partition otherwise.
    """
    from qmtl_engine import Engine, Store

    engine = Engine(Store(str(store)), mode="strategy")
    outcome = engine.verify(fingerprint)
    if outcome.problems or outcome.snapshot is None:
        raise outcome.problems[0]
    return outcome.snapshot.to_dict()


def materialize_and_pin(
    dataset: str,
    *,
    preset: str,
    symbols: list[str],
    start: str,
    end: str,
    contract_version: str,
    retention_class: str = "default",
    manifest: str | Path = "seamless.yaml",
) -> list[dict[str, Any]]:
    """Declare ``dataset`` in seamless.yaml (if it is not there) and resolve it into the lock.

    An existing declaration must match what is asked, or :class:`InputError` says what differs.
    Returns the materialize reports of the symbols that were fetched.
    """
    from qmtl_engine import InputError

    from qmtl_lock.manifest import load_manifest, when_text
    from qmtl_lock.resolve import resolve

    path = Path(manifest)
    wanted = {"preset": preset, "symbols": sorted(symbols), "start": when_text(start),
              "end": when_text(end), "contract_version": contract_version,
              "retention_class": retention_class}
    loaded = load_manifest(path)
    existing = loaded.datasets.get(dataset)
    if existing is None:
        _append_dataset(path, dataset, wanted)
    else:
        have = existing.request_dict()
        differ = sorted(k for k, v in wanted.items() if have.get(k) != v)
        if differ:
            raise InputError(
                f"dataset {dataset!r} is already declared with other {', '.join(differ)}",
                where=str(path), fix="edit seamless.yaml, or pin under another dataset name")
    return resolve(path, datasets=[dataset]).reports


def _append_dataset(path: Path, dataset: str, wanted: dict[str, Any]) -> None:
    """Add a dataset to seamless.yaml, keeping comments and layout when datasets come last."""
    import re

    import yaml

    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    block = yaml.safe_dump({dataset: wanted}, sort_keys=False, default_flow_style=None)
    block_style = re.search(r"^datasets:[ \t]*(#.*)?$", text, re.MULTILINE) is not None
    if data and list(data)[-1] == "datasets" and data["datasets"] and block_style:
        indented = "".join(f"  {line}\n" for line in block.splitlines())
        path.write_text(text.rstrip("\n") + "\n" + indented, encoding="utf-8")
        return
    datasets = dict(data.get("datasets") or {})
    datasets[dataset] = wanted
    data["datasets"] = datasets  # rewritten: YAML comments cannot be carried over here
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
