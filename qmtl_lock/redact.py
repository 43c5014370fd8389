"""Keep credentials out of everything qmtl-lock writes or prints.

:func:`redact_text` and :func:`redact` give the same result on every machine, so the lock can use
them. :func:`redact_output`, for what the command line prints, also removes the values of secret
environment variables (an API key a source reads, echoed back by a server or an exception).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_SECRET_KEY = re.compile(r"(key|secret|token|pass|credential|auth|cookie|session)",
                         re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# the value stops at the next parameter, or where the URL ends inside a message
_QUERY_SECRET = re.compile(
    r"([?&][^=&\s]*(?:key|secret|token|signature|password|passwd|credential|auth)[^=&\s]*=)"
    r"(?:<redacted>|[^&\s'\"<>]*)", re.IGNORECASE)
_MIN_SECRET_LEN = 8  # shorter values ("1", "true", "dev") are too likely to be ordinary words
REDACTED = "<redacted>"


def redact_text(text: str) -> str:
    """Remove user:password@ from URLs and secret-looking query parameters."""
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


def redact(value: Any, *, key: str = "") -> Any:
    """A copy of ``value`` with secret-looking keys and URL credentials replaced."""
    if key and _SECRET_KEY.search(key) and not key.endswith("_env") and value is not None:
        return REDACTED  # the whole value, whatever its type: a dict of secrets is a secret
    if isinstance(value, dict):
        return {k: redact(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look secret (``POLYGON_API_KEY``,
    ``AWS_SECRET_ACCESS_KEY``, ``GITHUB_TOKEN``), longest first."""
    env = os.environ if environ is None else environ
    found = {value for name, value in env.items()
             if _SECRET_KEY.search(name) and len(value.strip()) >= _MIN_SECRET_LEN}
    return sorted(found, key=lambda v: (-len(v), v))


def redact_output(text: str, environ: Mapping[str, str] | None = None) -> str:
    """:func:`redact_text`, and every secret environment value and every secret the engine read
    for a store (``secret_env: ANY_NAME``) replaced: for printed output only (it depends on the
    environment, which a lock must not)."""
    from qmtl_engine import registered_secrets

    values = {*secret_values(environ), *registered_secrets()}
    for value in sorted(values, key=lambda v: (-len(v), v)):
        text = text.replace(value, REDACTED)
    return redact_text(text)
