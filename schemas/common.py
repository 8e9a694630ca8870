"""Building blocks shared by several topics' models."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]


class Model(BaseModel):
    """Base of every event model: frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Address(Model):
    name: str = ""
    phone: str = ""
    street1: str = ""
    street2: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country_code: str = Field("US", min_length=2, max_length=2)


class Weight(Model):
    value: float = Field(gt=0)
    unit: Literal["lb", "oz", "kg", "g"] = "lb"


class Dimensions(Model):
    length: float = Field(gt=0)
    width: float = Field(gt=0)
    height: float = Field(gt=0)
    unit: Literal["in", "cm"] = "in"
