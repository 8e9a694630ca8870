"""Orders on ``orders.v1``: one line item per unit, as TikTok models them."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.common import MAX_INT, Address, Id, Model, OptionalId, Sealed, Text

MAX_UNITS = 5_000  # line items (units) of one order


class OrderStatus(StrEnum):
    UNPAID = "UNPAID"
    ON_HOLD = "ON_HOLD"
    AWAITING_SHIPMENT = "AWAITING_SHIPMENT"
    AWAITING_COLLECTION = "AWAITING_COLLECTION"
    PARTIALLY_SHIPPING = "PARTIALLY_SHIPPING"
    IN_TRANSIT = "IN_TRANSIT"
    DELIVERED = "DELIVERED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"

    @classmethod
    def parse(cls, raw: str) -> OrderStatus:
        """TikTok spells cancellation CANCEL in webhooks and CANCELLED in the order API."""
        return cls.CANCELLED if raw == "CANCEL" else cls(raw)


class LineItem(Model):
    """One unit of an order: TikTok gives every unit its own line item id."""

    item_id: Id
    sku_id: Id
    seller_sku: Text = ""
    product_id: Id
    product_name: Text = ""


class OrderFields(Model):
    """What an order event says, but for its recipient (``Order``, ``OrderPosted``)."""

    event_id: Id = Field(description="Stable per source event (dedupe).")
    order_id: Id
    shop_id: Id
    status: OrderStatus
    line_items: list[LineItem] = Field(default_factory=list, max_length=MAX_UNITS)
    update_time: int = Field(
        ge=0, description="Unix seconds of the order's last change.", le=MAX_INT
    )
    source: Literal["tiktok", "upstream"] = "upstream"
    shipping_type: Literal["TIKTOK", "SELLER", ""] = Field(
        "",
        description="TIKTOK: TikTok Shipping, TikTok provides the label; SELLER: the seller "
        "ships with its own logistics (no TikTok Shop label); empty: not known (TIKTOK).",
    )
    warehouse_id: OptionalId = Field("", description="The seller's warehouse the order ships from.")
    paid_time: int = Field(0, ge=0, le=MAX_INT, description="Unix seconds of payment (0: unknown).")
    ship_after: int = Field(
        0,
        ge=0,
        le=MAX_INT,
        description="Unix seconds before which no label may be bought (0: none). TikTok's "
        "old-flow orders (is_on_hold_order false) are held for the buyer's one-hour remorse "
        "window after payment: the enricher sets paid_time + PARCELFLOW_REMORSE_HOLD_S.",
    )
    buyer_cancel_requested: bool = Field(
        False,
        description="The buyer has a pending cancellation request (TikTok's "
        "is_buyer_request_cancel): no label while it is pending.",
    )
    cause: str = Field(
        "",
        max_length=512,
        description="What produced this event, e.g. 'webhook 3 RECIPIENT_ADDRESS_UPDATE' "
        "for the enricher; free text for upstream systems.",
    )


class Order(OrderFields):
    """An order on ``orders.v1``: its recipient sealed where it entered parcelflow."""

    recipient: Sealed | None = Field(
        None, description="The buyer's address, sealed (only the labeler opens it)."
    )


class OrderPosted(OrderFields):
    """An order as an upstream system posts it to ``/v1/orders`` (over TLS): the receiver
    seals its recipient before it is stored."""

    recipient: Address | None = None

    def sealed(self, recipient: str | None) -> Order:
        return Order(
            **{name: getattr(self, name) for name in OrderFields.model_fields}, recipient=recipient
        )
