"""Keep credentials out of everything qmtl-lock writes or prints."""

from __future__ import annotations

import re
from typing import Any

_SECRET_KEY = re.compile(r"(key|secret|token|pass|credential|auth|cookie|session)",
                         re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_QUERY_SECRET = re.compile(r"([?&][^=&]*(?:key|secret|token|signature|password)[^=&]*=)[^&]*",
                           re.IGNORECASE)
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
