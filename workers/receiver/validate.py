"""Request bodies to models, or an HTTP-ready error that names the field. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Invalid:
    """Why a body was refused, as the JSON body of a 400."""

    error: str
    fields: list[dict[str, str]]

    @property
    def reason(self) -> str:
        if not self.fields:
            return self.error
        return "; ".join(f"{f['field']}: {f['problem']}" for f in self.fields)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "fields": self.fields, "detail": self.reason}


MAX_DEPTH = 64  # arrays and objects inside each other; real webhooks use fewer than 5


def depth_over(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def parse_json(raw: bytes) -> Any | Invalid:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Invalid("body is not valid JSON", [{"field": "(body)", "problem": str(exc)}])
    if depth_over(parsed, MAX_DEPTH):
        return Invalid(
            "body nests too deep",
            [{"field": "(body)", "problem": f"arrays or objects nested deeper than {MAX_DEPTH}"}],
        )
    return parsed


def validate(model: type[M], raw: bytes) -> M | Invalid:
    parsed = parse_json(raw)
    if isinstance(parsed, Invalid):
        return parsed
    if not isinstance(parsed, dict):
        return Invalid(
            "body must be a JSON object", [{"field": "(body)", "problem": "not an object"}]
        )
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        fields = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "(body)",
                "problem": err["msg"],
            }
            for err in exc.errors(include_url=False)
        ]
        return Invalid(f"invalid {model.__name__}", fields)
