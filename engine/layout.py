"""Where a store keeps each kind of file, relative to its root (DESIGN.md, store layout).

Kept apart from :mod:`qmtl_engine.store` so that a light path (a no-op ``resolve`` on a local
store) can find a snapshot manifest without importing fsspec.
"""

from __future__ import annotations

from qmtl_engine.fingerprint import Fingerprint


def object_key(digest: str) -> str:
    """``objects/<aa>/<hex>.parquet`` of a partition digest (ValueError when not a digest)."""
    hexd = Fingerprint(digest).hex
    return f"objects/{hexd[:2]}/{hexd}.parquet"


def snapshot_key(fingerprint: str) -> str:
    """``snapshots/<aa>/<hex>.json`` of a dataset fingerprint (ValueError when not one)."""
    hexd = Fingerprint(fingerprint).hex
    return f"snapshots/{hexd[:2]}/{hexd}.json"
