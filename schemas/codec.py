"""Bytes <-> models. Decoding returns a model or a rejection reason, never raises."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json"))


def describe(error: ValidationError) -> str:
    """One line naming each bad field and its problem: ``items.0.quantity: ...``."""
    parts = []
    for err in error.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def decode(model: type[M], raw: bytes | None) -> M | str:
    """The model, or a reason why ``raw`` is not one."""
    if raw is None:
        return "empty value"
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            return "not valid JSON"
        return describe(error)
