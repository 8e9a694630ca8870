"""Parcel plans on ``parcel-plans.v1``: the TikTok item ids assigned to one box."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import MAX_INT, Dimensions, Id, Model, OptionalId, Weight
from schemas.order import LineItem


class ParcelPlan(Model):
    event_id: Id = Field(description="Deterministic: plan-<digest of order id and box id>.")
    order_id: Id
    box_id: Id
    warehouse_id: OptionalId = Field(
        "", description="Where the box is: the box's warehouse, else its order's."
    )
    status: Literal["planned", "rejected", "held"] = Field(
        description="planned: the box's item ids are assigned (a label job follows); "
        "rejected: the box gets no label, ``reason`` says why; held: the order is complete "
        "but may not ship yet (TikTok's buyer remorse window, a pending cancel request): "
        "``release_at_ms`` says when, and a planned or rejected plan follows."
    )
    reason: str = ""
    release_at_ms: int = Field(
        0, ge=0, le=MAX_INT, description="held: when the hold ends (0: when TikTok says)."
    )
    items: list[LineItem] = Field(default_factory=list)
    weight: Weight | None = None
    dimensions: Dimensions | None = None
