"""Reaching a store on object storage: its options, its credentials and its failures (DESIGN §6).

A store is opened from a URL and fsspec storage options. Option keys ending in ``_env`` name an
environment variable that holds the value (``secret_env: TEAM_S3_SECRET``), so no secret is
written in seamless.yaml or the lock; they are resolved here, when a :class:`~qmtl_engine.store.
Store` is built, and never before: a Dask worker rebuilds the store from the same unresolved
options with its own environment. Every resolved value of a secret-looking option is registered
with :func:`~qmtl_engine.errors.register_secret`, so that no message shows it.

A remote file system is wrapped in a :class:`GuardedFileSystem`: the store's logic relies on
``FileNotFoundError`` and ``FileExistsError``, which pass through; anything else the backend
raises (a refused connection, a timeout, denied access, a botocore or aiohttp error) becomes one
:class:`~qmtl_engine.errors.StoreUnavailable` naming the store and its endpoint, without secrets.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from qmtl_engine.errors import (
    InputError,
    StoreError,
    StoreUnavailable,
    register_secret,
    without_credentials,
)

# Protocols whose stores live on this machine: no cache, no guard, folders made on write.
LOCAL_PROTOCOLS = frozenset({"file", "local", "memory"})
S3_PROTOCOLS = frozenset({"s3", "s3a"})
# Protocols whose first path component is a bucket (or container) that qmtl-lock never creates.
BUCKET_PROTOCOLS = S3_PROTOCOLS | {"gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}

_SECRET_OPTION = re.compile(r"(key|secret|token|pass|credential|auth|session|signature|sas)",
                            re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OPTIONS_WHERE = "seamless.yaml, `store: options:`"
ENV_FIX = ("write `store: {url: s3://bucket/prefix, options: {key_env: VARIABLE, secret_env: "
           "VARIABLE}}` in seamless.yaml and set those environment variables")

# What botocore's retries do when the user did not say: a few attempts, not minutes of them, so
# that an unreachable endpoint fails in seconds (the default legacy mode waits ~10 s on a refused
# port, far longer on a silent one).
S3_CONFIG_DEFAULTS: dict[str, Any] = {
    "retries": {"max_attempts": 3, "mode": "standard"},
    "connect_timeout": 5,
}


def protocol_of(url: str) -> str:
    """The fsspec protocol of ``url`` (``file`` for a plain path)."""
    import fsspec

    protocol = fsspec.core.split_protocol(url)[0] or "file"
    return protocol


def refuse_credentials(url: str) -> None:
    """Raise :class:`InputError` when ``url`` carries a password (``user:password@``) for the
    service it names, or any user at all in a file:// URL (fsspec would make a folder named after
    it). A memory:// URL names no service: what looks like a password there is part of a name."""
    shown = without_credentials(url)
    if re.match(r"(file|local)://[^/]*@", url):
        raise InputError("a file:// store URL cannot carry a user or password",
                         where=f"store {shown}",
                         fix="write the store as a path, or file:///absolute/path")
    if url.startswith("memory://"):
        return
    try:
        password = urlsplit(url).password
    except ValueError:  # a netloc urllib cannot read (a bad port): fsspec will say what it is
        password = None
    if password is not None:
        raise InputError(f"the store URL {shown} carries a password, which would end up in "
                         "seamless.yaml, in git and in every message",
                         where=f"store {shown}", fix=f"drop it from the URL: {ENV_FIX}")


def check_options(options: Mapping[str, Any], *, prefix: str = "") -> None:
    """Raise :class:`InputError` for options that cannot be resolved whatever the environment:
    a non-text key, an ``_env`` key that names no option or no valid variable, or an option given
    both as itself and as ``<name>_env``."""
    for key, value in options.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str):
            raise InputError(f"store option {name!r} is not a name", where=OPTIONS_WHERE,
                             fix="write option names as text")
        if key.endswith("_env"):
            target = key.removesuffix("_env")
            if not target:
                raise InputError("store option `_env` names no option", where=OPTIONS_WHERE,
                                 fix="write <option>_env, e.g. secret_env: MY_S3_SECRET")
            if target in options:
                raise InputError(f"store option {prefix}{target} is given twice: as itself and "
                                 f"as {name}", where=OPTIONS_WHERE, fix=f"keep only {name}")
            if not isinstance(value, str) or not _ENV_NAME.match(value):
                raise InputError(f"store option {name} must name an environment variable, "
                                 f"not {value!r}", where=OPTIONS_WHERE,
                                 fix=f"write {name}: VARIABLE_NAME (letters, digits and _)")
        elif isinstance(value, Mapping):
            check_options(value, prefix=f"{name}.")


def resolve_options(options: Mapping[str, Any], environ: Mapping[str, str] | None = None, *,
                    prefix: str = "") -> dict[str, Any]:
    """``options`` with every ``<name>_env: VARIABLE`` replaced by ``<name>: $VARIABLE``, at any
    depth. Raises :class:`InputError` naming the variable and the option when one is not set."""
    check_options(options, prefix=prefix)
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if key.endswith("_env"):
            target = key.removesuffix("_env")
            if value not in env:
                raise InputError(
                    f"environment variable {value} is not set; store option {name} reads "
                    f"{prefix}{target} from it", where=f"{OPTIONS_WHERE} {name}",
                    fix=f"set {value} in the environment of every process that opens the store "
                    "(your shell, the CI job's secrets, each Dask worker), or fix the name in "
                    "seamless.yaml")
            out[target] = env[value]
            if _SECRET_OPTION.search(target):
                register_secret(env[value])
        elif isinstance(value, Mapping):
            out[key] = resolve_options(value, env, prefix=f"{name}.")
        else:
            out[key] = value
            if isinstance(value, str) and _SECRET_OPTION.search(key):
                register_secret(value)  # written inline: still never shown
    return out


def with_defaults(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with bounded retries and a connect timeout for S3 where the user set none."""
    if protocol not in S3_PROTOCOLS:
        return options
    config = dict(options.get("config_kwargs") or {})
    for key, value in S3_CONFIG_DEFAULTS.items():
        config.setdefault(key, value)
    return {**options, "config_kwargs": config}


def endpoint_of(protocol: str, options: Mapping[str, Any],
                environ: Mapping[str, str] | None = None) -> str:
    """The service a remote store talks to, as messages name it (without credentials)."""
    env = os.environ if environ is None else environ
    if protocol in S3_PROTOCOLS:
        client = options.get("client_kwargs") or {}
        endpoint = (options.get("endpoint_url") or client.get("endpoint_url")
                    or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"))
        return without_credentials(str(endpoint)) if endpoint else "AWS S3 (the default endpoint)"
    return f"the {protocol}:// service"


# -- failures of a remote file system, as one message -----------------------------------------
_PASS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, StoreError)
_UNREACHABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError",
                          "ConnectionClosedError", "ClientConnectorError", "ClientConnectionError",
                          "ServerDisconnectedError", "ProxyConnectionError", "ClientOSError"})
_TIMEOUT = frozenset({"ReadTimeoutError", "ServerTimeoutError", "FSTimeoutError"})
_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError",
                          "CredentialRetrievalError", "NoAuthTokenError"})
_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "InvalidToken", "ExpiredToken", "AllAccessDisabled", "403"})
_BACKENDS = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "google", "azure",
             "requests", "urllib3")


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify(exc: BaseException) -> str | None:
    """What a failure of a remote file system call means: ``unreachable``, ``timeout``,
    ``denied``, ``credentials`` or ``failed``; None for what the store's logic handles itself
    (a missing or existing file) and for what is no storage failure at all (a bug)."""
    if isinstance(exc, _PASS) or not isinstance(exc, Exception):
        return None
    for link in _chain(exc):
        names = _names(link)
        response = getattr(link, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if isinstance(link, PermissionError) or code in _DENIED_CODES:
            return "denied"
        if names & _CREDENTIALS:
            return "credentials"
        if names & _TIMEOUT or isinstance(link, TimeoutError):
            return "timeout"
        if names & _UNREACHABLE or isinstance(link, ConnectionError):
            return "unreachable"
    if isinstance(exc, OSError) or any(type(link).__module__.split(".")[0] in _BACKENDS
                                       for link in _chain(exc)):
        return "failed"  # e.g. a ValueError s3fs made of an S3 error code
    return None


class Failures:
    """Turns what a remote file system raised into a :class:`StoreUnavailable` for one store."""

    def __init__(self, url: str, endpoint: str) -> None:
        self.url = url
        self.endpoint = endpoint

    def __call__(self, exc: BaseException) -> StoreUnavailable | None:
        kind = classify(exc)
        if kind is None:
            return None
        detail = without_credentials(str(exc).strip() or type(exc).__name__)
        at = self.endpoint
        what, fix = {
            "unreachable": (f"cannot reach the store at {at}: {detail}",
                            "check that the endpoint is up and its address is right "
                            "(`endpoint_url` under `store: options:` in seamless.yaml, or "
                            "AWS_ENDPOINT_URL), then rerun"),
            "timeout": (f"the store at {at} did not answer in time: {detail}",
                        "check the network to the endpoint and rerun; raise "
                        "`config_kwargs: {connect_timeout: …, read_timeout: …}` under "
                        "`store: options:` for a slow link"),
            "denied": (f"the store at {at} refused access: {detail}",
                       "check the credentials: the variables that `key_env`, `secret_env` and "
                       "`token_env` under `store: options:` name (or AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY), and that they may read and write the bucket"),
            "credentials": (f"no credentials to reach the store at {at}: {detail}",
                            f"{ENV_FIX}; for a public bucket set `anon: true` under "
                            "`store: options:`"),
            "failed": (f"the store at {at} failed: {type(exc).__name__}: {detail}",
                       "rerun; if it fails again, check the store's service and the options "
                       "under `store: options:` in seamless.yaml"),
        }[kind]
        return StoreUnavailable(what, kind=kind, url=self.url, fix=fix)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = self(exc)
            if error is None:
                raise
            raise error from None  # the backend's chain may hold request details: not shown


class GuardedFileSystem:
    """A remote fsspec file system whose failures are :class:`StoreUnavailable` (see the module
    docstring). Attributes pass through; so do missing and existing files. :func:`guarded` makes
    one class per backend class, so ``type(a.fs) is type(b.fs)`` still says "same backend"."""

    def __init__(self, fs: Any, failures: Failures) -> None:
        self.unwrapped = fs
        self._failures = failures

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.unwrapped, name)
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            return value
        return functools.partial(self._call, name, value)

    def _call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = self._failures.call(fn, *args, **kwargs)
        return _GuardedFile(result, self._failures) if name == "open" else result

    def __repr__(self) -> str:
        return f"guarded({self.unwrapped!r})"


class _GuardedFile:
    """A file of a guarded file system: its reads, writes and close (where an upload happens)
    fail as :class:`StoreUnavailable` too."""

    def __init__(self, f: Any, failures: Failures) -> None:
        self._f = f
        self._failures = failures

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._f, name)
        if name.startswith("_") or not callable(value):
            return value
        return functools.partial(self._failures.call, value)

    def __enter__(self) -> _GuardedFile:
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._failures.call(self._f.__exit__, *exc)


_GUARDS: dict[type, type[GuardedFileSystem]] = {}


def guarded(fs: Any, failures: Failures) -> GuardedFileSystem:
    """``fs`` behind a :class:`GuardedFileSystem` of its own backend's class."""
    cls = _GUARDS.get(type(fs))
    if cls is None:
        cls = _GUARDS.setdefault(type(fs), type(f"Guarded{type(fs).__name__}",
                                                 (GuardedFileSystem,), {}))
    return cls(fs, failures)
