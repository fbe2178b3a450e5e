"""Write each event's JSON Schema under `schemas/json/`. Run `python -m schemas.export`.

The checked-in files are the published contract; a test fails when they drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.base import Event
from schemas.codec import EVENT_TYPES

JSON_DIR = Path(__file__).parent / "json"


def json_schema(cls: type[Event]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": cls.schema_id(),
        **schema,
    }


def rendered() -> dict[str, str]:
    return {
        f"{cls.TYPE}.v{cls.VERSION}.json": json.dumps(json_schema(cls), indent=2, sort_keys=True)
        + "\n"
        for cls in EVENT_TYPES.values()
    }


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (JSON_DIR / name).write_text(text)


if __name__ == "__main__":
    main()
