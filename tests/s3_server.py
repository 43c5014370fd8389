"""A real S3 endpoint on loopback for tests: moto's threaded server, reached through s3fs.

Never moto's in-process mocks: every request crosses a real socket, as it would to AWS. In front
of it, :class:`S3Proxy` forwards requests unchanged, counts them by method (the figure "store
requests per fetched partition" is counted here, at the server side of the client) and can add a
fixed latency per request, for the slow-store cases.

Fixtures (registered in conftest.py):

- ``s3_endpoint``: one moto server per test session.
- ``s3``: a fresh bucket of its own per test, behind a fresh counting proxy: an :class:`S3Bucket`
  with the URL, the storage options s3fs needs and the request counts.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

KEY_ID = "qmtl-test-key-id"
SECRET = "qmtl-test-secret-do-not-print"  # planted: tests check it appears in no output
REGION = "us-east-1"

# Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade"}


class S3Proxy:
    """A forwarding proxy on 127.0.0.1 in front of ``target`` (``host:port``): counts requests
    by method and sleeps ``delay_s`` before forwarding each one."""

    def __init__(self, target: str, *, delay_s: float = 0.0) -> None:
        self.target = target
        self.delay_s = delay_s
        self.counts: Counter[str] = Counter()
        self.paths: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: tests read their own output
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.counts[self.command] += 1
                    proxy.paths.append((self.command, self.path))
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                conn = http.client.HTTPConnection(proxy.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                # HEAD has no body: its Content-Length is the object's size, as the server said
                length = (resp.getheader("Content-Length") or "0") if self.command == "HEAD" \
                    else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.paths.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class S3Endpoint:
    """The moto server of a test session."""

    url: str
    server: Any

    def client(self, url: str | None = None) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=url or self.url, aws_access_key_id=KEY_ID,
                            aws_secret_access_key=SECRET, region_name=REGION)


@dataclass
class S3Bucket:
    """A bucket of its own for one test, reached through a counting proxy."""

    name: str
    endpoint: S3Endpoint
    proxy: S3Proxy
    extra: list[S3Proxy] = field(default_factory=list)

    @property
    def endpoint_url(self) -> str:
        return self.proxy.url

    def url(self, prefix: str = "store") -> str:
        return f"s3://{self.name}/{prefix}"

    def options(self) -> dict[str, Any]:
        """s3fs storage options with the secret inline (for engine-level tests)."""
        return {"endpoint_url": self.endpoint_url, "key": KEY_ID, "secret": SECRET}

    def env(self) -> dict[str, str]:
        """The AWS environment a process needs to reach this bucket through the proxy."""
        return {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def slow_proxy(self, delay_s: float) -> S3Proxy:
        """Another proxy to the same server that adds ``delay_s`` to every request."""
        proxy = S3Proxy(self.endpoint.url.removeprefix("http://"), delay_s=delay_s)
        self.extra.append(proxy)
        return proxy

    def keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket (straight to moto: not counted)."""
        client = self.endpoint.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.name,
                                                                     Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    pytest.importorskip("s3fs", reason="the [s3] extra is not installed")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(f"http://{host}:{port}", server)
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    name = f"qmtl-{uuid.uuid4().hex[:12]}"
    s3_endpoint.client().create_bucket(Bucket=name)
    proxy = S3Proxy(s3_endpoint.url.removeprefix("http://"))
    bucket = S3Bucket(name, s3_endpoint, proxy)
    for key, value in bucket.env().items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # no client cached for another test's proxy
    try:
        yield bucket
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        proxy.close()
        for other in bucket.extra:
            other.close()
