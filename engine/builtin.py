"""The built-in preset catalog as a file: where it lives and its bytes, without the catalog models.

:func:`qmtl_engine.presets.load_registry` reads the catalog through here, and ``qmtl-lock check``
hashes the very same bytes on its light path, which must not import pydantic (DESIGN §10).
"""

from __future__ import annotations

from pathlib import Path

# The package's own folder, as importlib.resources gives it for a package on disk.
_DATA = Path(__file__).parent / "data"


def builtin_data_dir() -> str:
    """The folder of the built-in catalog: relative paths in its source options start here."""
    return str(_DATA)


def builtin_catalog_bytes() -> bytes:
    """The bytes of the built-in catalog (``data/presets.yaml``)."""
    return (_DATA / "presets.yaml").read_bytes()
