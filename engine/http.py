"""Fetching bytes for network sources: retries, backoff with jitter, Retry-After, rate limits.

Transient failures (timeouts, connection resets, HTTP 429 and 5xx, truncated bodies or archives)
are retried with exponential backoff and full jitter (``tenacity``), waiting at least as long as a
``Retry-After`` header asks, but never longer than the client's ``max_retry_after_s`` nor the
budget the caller has left (:func:`wait_budget`, set by the SLA timer): a server that asks for an
hour fails the fetch at once, with a :class:`SourceError` that says when to retry. Permanent
failures (404 on a required file, 401/403, a checksum mismatch) fail at once. URLs that are not
http(s) are read through fsspec, so a local mirror (``file://``, ``memory://``, ``s3://``) works
wherever an https base URL does.
"""

from __future__ import annotations

import contextvars
import email.utils
import http.client
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from qmtl_engine.errors import SourceError, without_credentials
from qmtl_engine.ratelimit import Limiter, RateLimit, TokenBucket, limiter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

T = TypeVar("T")
USER_AGENT = "qmtl-lock (+https://pypi.org/project/qmtl-lock/)"
MAX_RETRY_AFTER_S = 120.0  # the longest Retry-After honoured unless a source's options say more

# Seconds the current fetch may still spend waiting (None: no budget known). A context variable:
# the SLA timer of the request being materialized sets it for the thread that fetches.
_budget_s: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "qmtl_wait_budget_s", default=None)


@contextmanager
def wait_budget(seconds: float | None) -> Iterator[None]:
    """Within the block, no fetch waits (for a ``Retry-After``) longer than ``seconds``."""
    outer = _budget_s.get()
    if seconds is not None and outer is not None:
        seconds = min(seconds, outer)
    token = _budget_s.set(seconds if seconds is not None else outer)
    try:
        yield
    finally:
        _budget_s.reset(token)


class TransientError(Exception):
    """A failure worth retrying. ``retry_after`` (seconds) comes from the server when it said."""

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix (404 on a required file, bad credentials, ...)."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class NotFound(PermanentError):
    """The URL does not exist (HTTP 404, or a missing file on a mirror)."""


@dataclass
class FetchStats:
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, requests: int = 0, retries: int = 0, nbytes: int = 0) -> None:
        with self.lock:
            self.requests += requests
            self.retries += retries
            self.bytes += nbytes


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class HttpClient:
    """GET with retries and a rate limit, shared by every request of one source."""

    def __init__(
        self,
        *,
        rate_limit: RateLimit | None = None,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
        timeout_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        source: str | None = None,
        limit_key: str | None = None,
    ) -> None:
        # With a ``limit_key`` (the endpoint) every client of the run shares one limiter, so the
        # limit holds across symbols, threads and workers; without one it is this client's own.
        self.bucket: Limiter | None = None
        if rate_limit is not None:
            self.bucket = (limiter(limit_key, rate_limit) if limit_key is not None
                           else TokenBucket(rate_limit, sleep=sleep))
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self.sleep = sleep
        self.max_retry_after_s = max_retry_after_s
        self.source = source  # names the source in errors raised here (default: the host)
        self.stats = FetchStats()

    # -- one attempt ---------------------------------------------------------------------------
    def _get_once(self, url: str) -> bytes:
        if self.bucket is not None:
            self.bucket.acquire()
        self.stats.add(requests=1)
        if not url.startswith(("http://", "https://")):
            return self._get_fsspec(url)
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body: bytes = response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            if status == 404:
                raise NotFound(f"HTTP 404 Not Found: {url}", url=url, status=404) from None
            if status == 429 or status >= 500:
                asked = _retry_after(exc.headers.get("Retry-After"))
                if asked is not None:
                    self._refuse_long_wait(url, status, asked)
                raise TransientError(f"HTTP {status} from {url}", url=url, status=status,
                                     retry_after=asked) from None
            raise PermanentError(f"HTTP {status} {exc.reason}: {url}", url=url,
                                 status=status) from None
        except http.client.IncompleteRead as exc:
            raise TransientError(f"truncated response ({len(exc.partial)} bytes) from {url}",
                                 url=url) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError,
                http.client.HTTPException) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc} ({url})", url=url) from None
        self.stats.add(nbytes=len(body))
        return body

    def _get_fsspec(self, url: str) -> bytes:
        import fsspec

        try:
            with fsspec.open(url, "rb") as f:
                body: bytes = f.read()
        except FileNotFoundError:
            raise NotFound(f"no such file: {url}", url=url, status=404) from None
        except OSError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc} ({url})", url=url) from None
        self.stats.add(nbytes=len(body))
        return body

    def _refuse_long_wait(self, url: str, status: int, asked: float) -> None:
        """Fail now when the server asks for a longer wait than this fetch may spend."""
        budget = _budget_s.get()
        limit, why = self.max_retry_after_s, f"max_retry_after_s is {self.max_retry_after_s:g} s"
        if budget is not None and budget < limit:
            limit, why = budget, f"the SLA budget left for this fetch is {max(budget, 0):.0f} s"
        if asked <= limit:
            return
        shown = without_credentials(url)
        retry_at = datetime.fromtimestamp(time.time() + asked, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise SourceError(
            f"the server answered HTTP {status} and asks to wait {asked:.0f} s before retrying "
            f"(Retry-After), longer than this fetch may wait ({why})",
            source=self.source or urllib.parse.urlsplit(url).netloc.rpartition("@")[2] or "http",
            url=shown,
            fix=f"rerun after {retry_at}, when the server accepts requests again (finished "
            "partitions are kept); or raise max_retry_after_s in the source options and use an "
            "SLA preset with a larger backfill budget")

    # -- with retries --------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_random_exponential(multiplier=self.backoff_initial_s,
                                          max=self.backoff_max_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        return max(backoff, asked) if asked is not None else backoff

    def fetch(self, url: str, parse: Callable[[bytes], T]) -> T:
        """GET ``url`` and ``parse`` the body, retrying transient failures of either step.

        ``parse`` raises :class:`TransientError` for a body that looks cut short (a truncated
        archive) and :class:`PermanentError` for one that can never be right (a bad checksum).
        """
        def count_retry(state: RetryCallState) -> None:
            self.stats.add(retries=1)

        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=count_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return parse(self._get_once(url))
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, url: str) -> bytes:
        return self.fetch(url, lambda body: body)
