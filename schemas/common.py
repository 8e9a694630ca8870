"""Building blocks shared by several topics' models."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ID_MAX = 128
MAX_INT = 2**53 - 1  # every integer field: exact in JSON everywhere, and in 64 bits
Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(max_length=256)]  # names, address lines


def derived_id(prefix: str, *parts: str) -> str:
    """An id made from other ids that always fits an ``Id``, whatever the parts hold.

    One part: ``prefix-part`` when that fits, else ``prefix-<digest>``. Several parts are
    always digested, each with its length, so that ``("a-b", "c")`` and ``("a", "b-c")``
    never meet. Deterministic: the same parts give the same id.
    """
    if len(parts) == 1 and len(prefix) + 1 + len(parts[0]) <= ID_MAX:
        return f"{prefix}-{parts[0]}"
    framed = "".join(f"{len(part)}:{part}" for part in parts)
    digest = hashlib.sha256(framed.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}-{digest[:40]}"


class Model(BaseModel):
    """Base of every event model: frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Address(Model):
    name: Text = ""
    phone: Text = ""
    street1: Text = ""
    street2: Text = ""
    city: Text = ""
    state: Text = ""
    postal_code: Text = ""
    country_code: str = Field("US", min_length=2, max_length=2)


class Weight(Model):
    value: float = Field(gt=0)
    unit: Literal["lb", "oz", "kg", "g"] = "lb"


class Dimensions(Model):
    length: float = Field(gt=0)
    width: float = Field(gt=0)
    height: float = Field(gt=0)
    unit: Literal["in", "cm"] = "in"
