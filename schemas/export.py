"""Export one JSON Schema per topic into ``schemas/json/`` for other languages, and the
AsyncAPI document of every topic (``schemas/asyncapi.json``, see ``schemas/asyncapi.py``).

Run ``python -m schemas.export`` after changing a model; a test fails while they differ.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.asyncapi import LABEL_EVENTS, document
from schemas.label import LabelEvent
from schemas.topics import ALL_TOPICS

JSON_DIR = Path(__file__).parent / "json"
ASYNCAPI = Path(__file__).parent / "asyncapi.json"


def render() -> dict[str, bytes]:
    """File name -> JSON Schema bytes, one per topic (dead-letter topics share one)."""
    files: dict[str, bytes] = {}
    for spec in ALL_TOPICS:
        schema = spec.model.model_json_schema(mode="serialization")
        schema = {"$id": f"parcelflow/{spec.name}", "description": spec.description, **schema}
        files[f"{spec.name}.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    events = LabelEvent.model_json_schema(mode="serialization")
    events = {"$id": f"parcelflow/{LABEL_EVENTS}", "description": LabelEvent.__doc__, **events}
    files[f"{LABEL_EVENTS}.json"] = (
        orjson.dumps(events, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return files


def render_asyncapi() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2) + b"\n"


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for old in JSON_DIR.glob("*.json"):
        old.unlink()
    for name, body in render().items():
        (JSON_DIR / name).write_bytes(body)
    ASYNCAPI.write_bytes(render_asyncapi())
    print(f"wrote {len(ALL_TOPICS)} schemas to {JSON_DIR} and {ASYNCAPI.name}")


if __name__ == "__main__":
    main()
