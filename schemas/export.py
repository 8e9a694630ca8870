"""Export one JSON Schema per topic into ``schemas/json/`` for other languages.

Run ``python -m schemas.export`` after changing a model; a test fails while they differ.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.topics import ALL_TOPICS

JSON_DIR = Path(__file__).parent / "json"


def render() -> dict[str, bytes]:
    """File name -> JSON Schema bytes, one per topic (dead-letter topics share one)."""
    files: dict[str, bytes] = {}
    for spec in ALL_TOPICS:
        schema = spec.model.model_json_schema(mode="serialization")
        schema = {"$id": f"parcelflow/{spec.name}", "description": spec.description, **schema}
        files[f"{spec.name}.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return files


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for old in JSON_DIR.glob("*.json"):
        old.unlink()
    for name, body in render().items():
        (JSON_DIR / name).write_bytes(body)
    print(f"wrote {len(ALL_TOPICS)} schemas to {JSON_DIR}")


if __name__ == "__main__":
    main()
