"""JSON Schemas of seamless.yaml, seamless.lock and preset catalogs, generated from the models.

The checked-in copies under ``schemas/`` are tested to equal what this module generates, so editors
that validate against them see exactly what qmtl-lock accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from qmtl_engine import Catalog

from qmtl_lock.lockfile import LockModel
from qmtl_lock.manifest import Manifest

SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "seamless.schema.json": (Manifest, "seamless.yaml: the data a project asks for"),
    "seamless.lock.schema.json": (LockModel, "seamless.lock: what qmtl-lock resolved"),
    "presets.schema.json": (Catalog, "a qmtl-lock preset catalog"),
}


def generate() -> dict[str, str]:
    """File name -> JSON text of every schema."""
    out = {}
    for name, (model, title) in SCHEMAS.items():
        schema: dict[str, Any] = model.model_json_schema(mode="validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": name, "title": title, **{k: v for k, v in schema.items()
                                                  if k != "title"}}
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: str | Path) -> list[Path]:
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = root / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
