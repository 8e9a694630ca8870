"""Parcel plans on ``parcel-plans.v1``: the TikTok item ids assigned to one box."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import Dimensions, Id, Model, OptionalId, Weight
from schemas.order import LineItem


class ParcelPlan(Model):
    event_id: Id = Field(description="Deterministic: plan-<digest of order id and box id>.")
    order_id: Id
    box_id: Id
    warehouse_id: OptionalId = Field(
        "", description="Where the box is: the box's warehouse, else its order's."
    )
    status: Literal["planned", "rejected"]
    reason: str = ""
    items: list[LineItem] = Field(default_factory=list)
    weight: Weight | None = None
    dimensions: Dimensions | None = None
