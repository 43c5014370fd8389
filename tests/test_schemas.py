"""The checked-in JSON Schemas equal what the models generate, and accept the demo files."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from qmtl_engine.ranges import iso, to_ms

from qmtl_lock.schema import generate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(generate()))
def test_checked_in_schema_is_in_sync(name: str) -> None:
    on_disk = (ROOT / "schemas" / name).read_text(encoding="utf-8")
    assert on_disk == generate()[name], (
        f"schemas/{name} is stale: run `qmtl-lock schemas --write schemas`"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso(to_ms(value))
    if isinstance(value, date):
        return value.isoformat()
    return value


@pytest.mark.parametrize(
    ("schema", "document"),
    [
        ("seamless.schema.json", "seamless.yaml"),
        ("seamless.lock.schema.json", "seamless.lock"),
        ("presets.schema.json", "engine/data/presets.yaml"),
    ],
)
def test_demo_files_validate(schema: str, document: str) -> None:
    data = _jsonable(yaml.safe_load((ROOT / document).read_text(encoding="utf-8")))
    jsonschema.validate(data, json.loads((ROOT / "schemas" / schema).read_text()))


def test_schema_rejects_unknown_keys() -> None:
    schema = json.loads((ROOT / "schemas" / "seamless.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "datasets": {}, "stroe": "x"}, schema)
