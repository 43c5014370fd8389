"""Errors raised by the engine.

Every error of qmtl-lock derives from one root, :class:`QmtlLockError`. The engine owns the root and
the engine-side branches; ``qmtl_lock.errors`` adds the manifest and lockfile branches and draws the
whole tree. Each error keeps its data as attributes and builds its message from them: what went
wrong, where, and what to do next::

    QmtlLockError
    ├── InputError                      bad input: exit 2
    │   ├── YAMLFileError               a YAML file is malformed (file, line, key)
    │   ├── PresetError                 unknown preset, invalid catalog
    │   ├── RangeError                  impossible or unaligned time range
    │   └── StoreBusy                   a gc holds the store (or another gc runs on it)
    ├── IntegrityError                  data differs from what was pinned: exit 1
    │   ├── FingerprintMismatch         recomputed fingerprint != expected
    │   │   └── ObjectCorrupted         a store object or manifest does not hash to its name
    │   └── ObjectMissing               a store object or snapshot is not there
    └── MaterializationError            the data could not be produced: exit 3
        ├── SourceError                 a source failed (network, file, format)
        │   └── MissingDependency       an optional extra is not installed
        ├── ConformanceError            blocking conformance flags (carries the report)
        ├── SLAExceeded                 an SLA budget was exceeded under fail_fast
        └── StoreError                  the store (or a file we write) cannot be read or written
            └── StoreUnavailable        the store cannot be reached, refused access or failed
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class QmtlLockError(Exception):
    """Root of every qmtl-lock error.

    ``what`` says what went wrong, ``where`` locates it (file and line, or dataset, symbol and
    partition), ``fix`` says what to do next. ``exit_code`` is read by the command line only.
    """

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def __str__(self) -> str:
        return self.render()  # built on demand: attributes set after __init__ still show

    def render(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable form for ``--json`` output."""
        data: dict[str, Any] = {"error": type(self).__name__, "what": self.what}
        if self.where:
            data["where"] = self.where
        if self.fix:
            data["fix"] = self.fix
        return data

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (a Dask worker's task fails, the client reports it).
        # The default pickling calls ``cls(*args)``, which no subclass with keyword-only data can
        # take; and some constructors transform what they get (a URL loses its credentials), so
        # calling one again could change the error. Rebuild without ``__init__`` instead.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[QmtlLockError], args: tuple[Any, ...],
             state: dict[str, Any]) -> QmtlLockError:
    """The unpickled error: ``cls`` with the message ``args`` and every attribute it had."""
    error = cls.__new__(cls, *args)
    error.args = args  # OSError's __new__ leaves them to an __init__ it does not call here
    error.__dict__.update(state)
    return error


class InputError(QmtlLockError, ValueError):
    """The user's input (manifest, lock, preset catalog, arguments) is invalid."""

    exit_code = 2


class YAMLFileError(InputError):
    """A YAML file could not be parsed or has an invalid value."""

    def __init__(self, what: str, *, path: str, line: int | None = None,
                 key: str | None = None, fix: str | None = None) -> None:
        self.path = path
        self.line = line
        self.key = key
        where = f"{path}:{line}" if line else path
        if key:
            where += f" (key {key})"
        super().__init__(what, where=where, fix=fix)


class PresetError(InputError):
    """A preset id is unknown or a preset catalog is invalid."""

    def __init__(
        self,
        what: str,
        *,
        preset: str | None = None,
        path: str | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.preset = preset
        self.path = path
        self.line = line
        where = None
        if path:
            where = f"{path}:{line}" if line else path
        super().__init__(what, where=where, fix=fix)


class RangeError(InputError):
    """A time range is empty, inverted or otherwise impossible."""


class StoreBusy(InputError):
    """Another process holds the store's gc lock: a second gc refuses to start, and a writer
    (a resolve, ``pins push``) gave up waiting for the gc to finish.

    ``holder`` says who holds it (owner, pid, host, since when); ``path`` is the lock file.
    """

    def __init__(self, what: str, *, url: str, path: str, holder: str,
                 fix: str) -> None:
        self.url = without_credentials(url)
        self.path = path
        self.holder = holder
        super().__init__(what, where=f"store {self.url}, {path}", fix=fix)


class IntegrityError(QmtlLockError):
    """Data in the store does not match what a lock or a name says it is.

    ``dataset`` and ``symbol`` say which locked data is affected. The store knows only paths and
    digests, so the read path names them with :meth:`locate` before the error reaches the user.
    """

    exit_code = 1
    dataset: str | None = None
    symbol: str | None = None

    def locate(self, *, dataset: str | None, symbol: str | None) -> None:
        """Name the dataset and symbol the bad data belongs to, in the attributes and ``where``."""
        self.dataset = dataset or self.dataset
        self.symbol = symbol or self.symbol
        label = "/".join(p for p in (self.dataset, self.symbol) if p)
        if label and not (self.where or "").startswith(label):
            self.where = f"{label}, {self.where}" if self.where else label


class FingerprintMismatch(IntegrityError):
    """The fingerprint recomputed from stored data differs from the expected one."""

    def __init__(
        self,
        *,
        expected: str,
        actual: str,
        dataset: str | None = None,
        symbol: str | None = None,
        partition: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.dataset = dataset
        self.symbol = symbol
        self.partition = partition
        parts = [p for p in (dataset, symbol) if p]
        where = "/".join(parts) if parts else None
        if partition:
            where = f"{where}, partition {partition}" if where else f"partition {partition}"
        super().__init__(
            f"fingerprint mismatch: expected {expected}, got {actual}",
            where=where,
            fix=fix
            or "the data behind the lock changed; run `qmtl-lock verify` to see which partitions, "
            "then `qmtl-lock repair` to fetch them again (or `qmtl-lock resolve --update` to "
            "accept new data)",
        )


class ObjectMissing(IntegrityError):
    """A store object or snapshot manifest named by a lock is not in the store."""

    def __init__(self, what: str, *, path: str, partition: str | None = None,
                 fix: str | None = None) -> None:
        self.path = path
        self.partition = partition
        where = f"{path}" + (f" (partition {partition})" if partition else "")
        super().__init__(
            what, where=where,
            fix=fix or ("run `qmtl-lock repair` to fetch the missing partition again" if partition
                        else "run `qmtl-lock resolve` to rebuild the pinned data in this store"),
        )


class ObjectCorrupted(FingerprintMismatch):
    """Stored bytes do not hash to their name: a partition object (``kind="object"``) or a
    snapshot manifest (``kind="snapshot"``).

    It is a :class:`FingerprintMismatch` (what the store holds hashes to something other than
    the digest that pins it), so one ``except FingerprintMismatch`` guards a read through a lock.
    """

    def __init__(self, *, path: str, expected: str, actual: str,
                 partition: str | None = None, kind: str = "object") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        self.partition = partition
        self.kind = kind
        what = (f"store object is corrupted: its content hashes to {actual}, its name says "
                f"{expected}")
        fix = "run `qmtl-lock repair`: it moves the object aside and fetches the partition again"
        if kind == "snapshot":
            what = (f"snapshot manifest is corrupted: it describes {actual}, its name says "
                    f"{expected}")
            fix = "run `qmtl-lock repair`: it moves the manifest aside and rebuilds it"
        # Not FingerprintMismatch.__init__: this message names the stored file and its digest,
        # not the lock entry, and its fix is about the store.
        IntegrityError.__init__(
            self, what, where=path + (f" (partition {partition})" if partition else ""), fix=fix)

    def render(self) -> str:
        text = super().render()
        # Read through a lock (the dataset is named), it is that lock's fingerprint mismatch and
        # says so first, like every other one: strategy tests and CI logs look for those words.
        return f"fingerprint mismatch: {text}" if self.dataset or self.symbol else text


class MaterializationError(QmtlLockError):
    """Data could not be produced: a source, conformance or an SLA failed."""

    exit_code = 3


class SourceError(MaterializationError):
    """A source could not deliver data."""

    def __init__(
        self,
        what: str,
        *,
        source: str,
        symbol: str | None = None,
        window: str | None = None,
        url: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.source = source
        self.symbol = symbol
        self.window = window
        self.url = url
        self.dataset: str | None = None
        self.source_symbol: str | None = None  # the name the source was asked for, if another
        super().__init__(what, where=self._where(), fix=fix)

    def _where(self) -> str:
        bits = [f"dataset {self.dataset}"] if self.dataset else []
        bits.append(f"source {self.source}")
        if self.symbol:
            bits.append(f"symbol {self.symbol}")
        if self.source_symbol:
            bits.append(f"source symbol {self.source_symbol}")
        if self.window:
            bits.append(f"range {self.window}")
        if self.url:
            bits.append(f"url {self.url}")
        return ", ".join(bits)

    def locate(self, *, dataset: str | None, symbol: str, window: str,
               source_symbol: str | None = None) -> None:
        """Fill in what the raising code did not know (an HTTP client knows only its URL).
        With ``source_symbol`` (the source was asked for another name than the symbol), the
        error names the symbol, as users do, and the source symbol beside it."""
        self.dataset = self.dataset or dataset
        if source_symbol is not None:
            self.symbol, self.source_symbol = symbol, source_symbol
        self.symbol = self.symbol or symbol
        self.window = self.window or window
        self.where = self._where()


class MissingDependency(SourceError):
    """An optional integration is used without its extra installed."""

    def __init__(self, *, source: str, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"the {source} source needs the Python package {module!r}, which is not installed",
            source=source,
            fix=f"pip install 'qmtl-lock[{extra}]'",
        )


class FlagCounts(Protocol):
    """What an error needs of a conformance report: the count of each flag by name, and the
    first offenders of each as users read them (see ``ConformanceReport.details``)."""

    counts: dict[str, int]
    details: dict[str, list[str]]


class ConformanceError(MaterializationError):
    """Conformance found flags that the conformance preset blocks; nothing was written.

    The message lists, per blocking flag, its first offenders (the rows as the source wrote
    them, with file and line where known); ``notes`` add what the data says as a whole (where
    it starts and ends), ``hints`` the fixes the findings point to, before the general one.
    """

    def __init__(self, report: FlagCounts, *, blocking: Mapping[str, int],
                 symbol: str | None = None, partition: str | None = None,
                 preset: str | None = None, notes: Sequence[str] = (),
                 hints: Sequence[str] = ()) -> None:
        self.report = report
        self.blocking = dict(blocking)
        self.symbol = symbol
        self.partition = partition
        self.preset = preset
        self.notes = list(notes)
        self.hints = list(hints)
        listing = ", ".join(f"{k}={v}" for k, v in sorted(self.blocking.items()))
        where = ", ".join(
            b for b in (
                f"symbol {symbol}" if symbol else "",
                f"partition {partition}" if partition else "",
                f"conformance preset {preset}" if preset else "",
            ) if b
        )
        general = ("fix the source data, or declare the dataset with a conformance preset that "
                   "accepts these flags (e.g. permissive-dev) if you are sure they are harmless")
        super().__init__(
            f"conformance refused the data: {listing}" + self._findings(),
            where=where or None,
            fix="; ".join([*self.hints, f"otherwise {general}" if self.hints else general]),
        )

    def _findings(self) -> str:
        """Lines under the first: each blocking flag's first offenders, then the notes."""
        lines = []
        details = getattr(self.report, "details", {})
        for flag, count in sorted(self.blocking.items()):
            shown = details.get(flag, [])
            if not shown:
                continue
            head = f"  {flag}, first {len(shown)} of {count}:" if len(shown) < count else \
                f"  {flag}:"
            if all(" " not in text for text in shown):  # bare times: one line
                lines.append(f"{head} {', '.join(shown)}")
            else:
                lines += [head, *(f"    {text}" for text in shown)]
        lines += [f"  {note}" for note in self.notes]
        return "".join(f"\n{line}" for line in lines)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        details = getattr(self.report, "details", {})
        data["blocking"] = dict(sorted(self.blocking.items()))
        data["findings"] = {f: list(details.get(f, [])) for f in sorted(self.blocking)}
        if self.notes:
            data["notes"] = list(self.notes)
        return data


class SLAExceeded(MaterializationError):
    """A service-level budget was exceeded under ``on_violation: fail_fast``."""

    def __init__(self, *, phase: str, budget_ms: float, elapsed_ms: float,
                 dataset: str | None = None, symbol: str | None = None,
                 detail: str | None = None) -> None:
        self.phase = phase
        self.budget_ms = budget_ms
        self.elapsed_ms = elapsed_ms
        self.dataset = dataset
        self.symbol = symbol
        where = "/".join(p for p in (dataset, symbol) if p) or None
        what = detail or (
            f"SLA exceeded in phase {phase}: {elapsed_ms:.0f} ms spent, budget {budget_ms:.0f} ms"
        )
        super().__init__(
            what, where=where,
            fix="retry later, narrow the range, or use an SLA preset with a larger budget or "
            "on_violation: partial_fill",
        )


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"([?&][^=&]*(?:key|secret|token|signature|password)[^=&]*=)[^&]*",
                           re.IGNORECASE)


# Secret values the engine read on purpose (a store option named by ``secret_env``): whatever
# their environment variable is called, they are removed from every message and printed line.
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
MIN_SECRET_LEN = 8  # shorter values ("1", "true", "us-east-1") are too likely ordinary words


def register_secret(value: str) -> None:
    """Remember ``value`` as a secret, so that no message or output shows it (values shorter
    than :data:`MIN_SECRET_LEN` are not remembered: replacing them would garble text)."""
    if len(value.strip()) >= MIN_SECRET_LEN:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def registered_secrets() -> tuple[str, ...]:
    """Every value :func:`register_secret` remembered in this process, longest first."""
    with _SECRETS_LOCK:
        return tuple(sorted(_SECRETS, key=lambda v: (-len(v), v)))


def without_credentials(url: str) -> str:
    """``url`` without ``user:password@``, secret query values and registered secrets. (The
    engine cannot use ``qmtl_lock.redact``; the command line redacts everything it prints once
    more.)"""
    for secret in registered_secrets():
        url = url.replace(secret, "<redacted>")
    url = _USERINFO.sub(lambda m: m.group("scheme") + "<redacted>@", url)
    return _SECRET_QUERY.sub(lambda m: m.group(1) + "<redacted>", url)


class StoreError(MaterializationError):
    """Storage failed: the store cannot be opened, read or written (permission denied, a
    read-only file system, a full disk, a missing fsspec backend), or neither can a file
    qmtl-lock writes beside it (the lock, a report).

    ``url`` is the store's URL without credentials (None when the failing file is not in a
    store), ``path`` the file or folder that failed, ``errno`` the OS error number if any.
    """

    def __init__(self, what: str, *, url: str | None = None, path: str | None = None,
                 errno: int | None = None, fix: str | None = None) -> None:
        self.url = without_credentials(url) if url else None
        self.path = without_credentials(path) if path else None
        self.errno = errno
        where = ", ".join(b for b in (f"store {self.url}" if self.url else "",
                                      self.path if self.path and self.path != self.url else "")
                          if b)
        super().__init__(what, where=where or None, fix=fix)


class StoreUnavailable(StoreError, OSError):
    """The store's service cannot be reached, refused access (credentials) or failed otherwise
    (a backend error): what a remote file system raised, as one message without secrets.

    It is an OSError too, so code that treats a failed store call as "try again later" (a lease
    heartbeat) still does; ``kind`` is ``unreachable``, ``timeout``, ``denied``, ``credentials``
    or ``failed``.
    """

    def __init__(self, what: str, *, kind: str, url: str | None = None,
                 fix: str | None = None) -> None:
        self.kind = kind
        super().__init__(what, url=url, fix=fix)
