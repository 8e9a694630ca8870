"""Box-closed events on ``warehouse.boxes.v1``, as packing stations send them."""

from __future__ import annotations

from pydantic import Field

from schemas.common import MAX_INT, Dimensions, Id, Model, OptionalId, Weight


class BoxItem(Model):
    sku: Id = Field(description="Seller SKU or TikTok SKU id of the units.")
    quantity: int = Field(ge=1, le=10_000)


class BoxClosed(Model):
    event_id: Id
    box_id: Id
    order_id: Id
    station_id: Id
    warehouse_id: OptionalId = Field(
        "",
        description="The warehouse the box was packed in. The receiver fills it in from a "
        "station that posts for one warehouse; empty: the order's warehouse.",
    )
    items: list[BoxItem] = Field(min_length=1, max_length=1_000)
    weight: Weight
    dimensions: Dimensions
    last_box: bool = Field(False, description="No more boxes follow for this order.")
    closed_at_ms: int = Field(ge=0, le=MAX_INT)
