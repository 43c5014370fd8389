"""``init``: a starter seamless.yaml and a git-ignored store."""

from __future__ import annotations

from pathlib import Path

from qmtl_engine import InputError

from qmtl_lock.manifest import MANIFEST_NAME

STARTER = """\
# What market data this project needs. `qmtl-lock resolve` pins it in seamless.lock.
version: 1
store: .seamless/store            # any fsspec URL, e.g. s3://bucket/prefix
datasets:
  us_equities_daily:
    preset: ohlcv.quandl_wiki.us_equity.1d   # list presets with: qmtl-lock presets
    symbols: [AAPL, MSFT]
    start: 2010-01-01
    end: 2013-01-01               # or: now (pinned in the lock; move it with resolve --update)
    contract_version: v1
    retention_class: default
"""


def init(directory: str | Path = ".", *, force: bool = False) -> list[Path]:
    """Write seamless.yaml and add the store to .gitignore; returns the files written."""
    root = Path(directory)
    manifest = root / MANIFEST_NAME
    if manifest.exists() and not force:
        raise InputError(f"{manifest} already exists", where=str(manifest),
                         fix="edit it, or pass --force to overwrite it with the starter")
    root.mkdir(parents=True, exist_ok=True)
    manifest.write_text(STARTER, encoding="utf-8")
    written = [manifest]
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if ".seamless/" not in lines:
        lines.append(".seamless/")
        ignore.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(ignore)
    return written
