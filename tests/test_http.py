"""The shared HTTP layer against a real server on 127.0.0.1: retries, Retry-After, rate limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_server import Reply, Server, serve
from qmtl_engine.http import (
    HttpClient,
    NotFound,
    PermanentError,
    RateLimit,
    TokenBucket,
    TransientError,
)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client(**kwargs: object) -> tuple[HttpClient, Sleeps]:
    sleeps = Sleeps()
    return HttpClient(sleep=sleeps, timeout_s=2, **kwargs), sleeps  # type: ignore[arg-type]


def test_ok(server: Server) -> None:
    server.route("/a", Reply(b"hello"))
    http, sleeps = client()
    assert http.get(server.url + "/a") == b"hello"
    assert http.stats.requests == 1 and http.stats.bytes == 5 and not sleeps.calls


@pytest.mark.parametrize("failure", [
    Reply(b"busy", 429), Reply(b"oops", 500), Reply(b"bad gw", 502), Reply(reset=True),
    Reply(b"0123456789", truncate_to=3),
])
def test_transient_failures_are_retried(server: Server, failure: Reply) -> None:
    server.route("/a", failure, failure, Reply(b"fine"))
    http, sleeps = client()
    assert http.get(server.url + "/a") == b"fine"
    assert server.count("/a") == 3
    assert http.stats.retries == 2 and len(sleeps.calls) == 2


def test_retry_after_is_honoured(server: Server) -> None:
    server.route("/a", Reply(b"slow down", 429, {"Retry-After": "7"}), Reply(b"ok"))
    http, sleeps = client(backoff_initial_s=0.01)
    assert http.get(server.url + "/a") == b"ok"
    assert sleeps.calls == [7.0]


def test_backoff_grows_and_gives_up(server: Server) -> None:
    server.route("/a", Reply(b"down", 503))
    http, sleeps = client(max_attempts=4, backoff_initial_s=1, backoff_max_s=100)
    with pytest.raises(TransientError) as info:
        http.get(server.url + "/a")
    assert info.value.status == 503
    assert server.count("/a") == 4
    assert len(sleeps.calls) == 3
    assert all(0 <= s <= 100 for s in sleeps.calls)  # full jitter: random in [0, cap]


def test_timeout_is_transient(server: Server) -> None:
    server.route("/a", Reply(b"late", delay_s=1.0), Reply(b"ok"))
    http, _ = client()
    http.timeout_s = 0.2
    assert http.get(server.url + "/a") == b"ok"
    assert server.count("/a") == 2


@pytest.mark.parametrize(("status", "kind"), [(404, NotFound), (401, PermanentError),
                                              (403, PermanentError)])
def test_permanent_failures_fail_fast(server: Server, status: int, kind: type) -> None:
    server.route("/a", Reply(b"no", status))
    http, sleeps = client()
    with pytest.raises(kind) as info:
        http.get(server.url + "/a")
    assert info.value.status == status and server.url + "/a" in str(info.value)
    assert server.count("/a") == 1 and not sleeps.calls


def test_parse_failures_decide_retry(server: Server) -> None:
    server.route("/a", Reply(b"cut"), Reply(b"whole"))
    http, _ = client()

    def parse(body: bytes) -> bytes:
        if body == b"cut":
            raise TransientError("truncated archive", url="x")
        return body

    assert http.fetch(server.url + "/a", parse) == b"whole"

    def never(body: bytes) -> bytes:
        raise PermanentError("checksum mismatch", url="x")

    with pytest.raises(PermanentError):
        http.fetch(server.url + "/a", never)


def test_fsspec_urls(tmp_path: object) -> None:
    import fsspec

    with fsspec.open("memory://mirror/a.txt", "wb") as f:
        f.write(b"mirrored")
    http, _ = client()
    assert http.get("memory://mirror/a.txt") == b"mirrored"
    with pytest.raises(NotFound):
        http.get("memory://mirror/missing.txt")


def test_token_bucket_limits_rate() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    bucket = TokenBucket(RateLimit(requests_per_second=2, burst=3), clock=lambda: now[0],
                         sleep=sleep)
    for _ in range(7):
        bucket.acquire()
    # 3 at once (burst), then one every 0.5 s
    assert now[0] == pytest.approx(2.0)
    assert all(w == pytest.approx(0.5) for w in waits)


def test_the_options_default_retry_after_cap_is_the_clients() -> None:
    """options.py cannot import http (tenacity stays out of `check`), so the value is repeated."""
    from qmtl_engine.http import MAX_RETRY_AFTER_S
    from qmtl_engine.sources.options import NetworkOptions

    assert NetworkOptions().max_retry_after_s == MAX_RETRY_AFTER_S
