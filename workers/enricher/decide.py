"""What one webhook asks of the enricher. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from schemas.common import ID_MAX, derived_id
from schemas.order import Order, OrderStatus
from schemas.webhook import WebhookRecord, WebhookType
from workers.tiktok import wire


class Action(Enum):
    FETCH = "fetch"  # Get Order Detail, then publish the order with its line items
    CANCEL = "cancel"  # publish a cancellation; no API call needed
    SKIP = "skip"  # nothing for the planner (kept in tiktok.webhooks.v1)
    REJECT = "reject"  # the webhook names an order id no order can have: dead-lettered


@dataclass(frozen=True)
class Decision:
    action: Action
    order_id: str = ""
    reason: str = ""


FETCH_TYPES = {WebhookType.RECIPIENT_ADDRESS_UPDATE, WebhookType.CANCELLATION_STATUS_CHANGE}


def decide(record: WebhookRecord) -> Decision:
    hook = record.webhook
    order_id = str(hook.data.get(wire.WEBHOOK_ORDER_ID, "")).strip()
    if len(order_id) > ID_MAX:
        return Decision(
            Action.REJECT, reason=f"data.{wire.WEBHOOK_ORDER_ID}: longer than {ID_MAX} characters"
        )
    if hook.type == WebhookType.ORDER_STATUS_CHANGE:
        if not order_id:
            return Decision(Action.SKIP, reason="order status change without order_id")
        raw_status = str(hook.data.get(wire.WEBHOOK_ORDER_STATUS, ""))
        try:
            status = OrderStatus.parse(raw_status)
        except ValueError:
            return Decision(Action.SKIP, order_id, f"unknown order status {raw_status!r}")
        if status is OrderStatus.CANCELLED:
            return Decision(Action.CANCEL, order_id)
        if status is OrderStatus.AWAITING_SHIPMENT:
            return Decision(Action.FETCH, order_id)
        return Decision(Action.SKIP, order_id, f"status {status} needs no label work")
    if hook.type in FETCH_TYPES and order_id:
        return Decision(Action.FETCH, order_id)
    return Decision(Action.SKIP, order_id, f"webhook type {hook.type} needs no order detail")


def cause(record: WebhookRecord) -> str:
    """Where an order event came from, for the ``cause`` field: 'webhook 1 ORDER_STATUS_CHANGE'."""
    kind = record.webhook.type
    name = WebhookType(kind).name if kind in WebhookType._value2member_map_ else "UNKNOWN"
    return f"webhook {kind} {name} {record.event_id}"


def cancellation(record: WebhookRecord, order_id: str) -> Order:
    hook = record.webhook
    return Order(
        event_id=derived_id("tiktok", record.event_id),
        order_id=order_id,
        shop_id=hook.shop_id,
        status=OrderStatus.CANCELLED,
        update_time=update_time(hook.data.get(wire.WEBHOOK_UPDATE_TIME), hook.timestamp),
        source="tiktok",
        cause=cause(record),
    )


def update_time(given: object, fallback: int) -> int:
    """The webhook's update time in unix seconds, or the envelope's when it has none."""
    try:
        value = int(given)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return fallback
    return value if value >= 0 else fallback
