"""Small builders of valid events for tests."""

from __future__ import annotations

from typing import Any

import orjson

from devstack.simulator.render import Label
from schemas.box import BoxClosed, BoxItem
from schemas.codec import encode
from schemas.common import Address, Dimensions, Weight, now_ms
from schemas.label import LabelDocument, LabelJob, LabelResult, Parcel, ParcelLabel
from schemas.order import LineItem, Order, OrderStatus
from schemas.webhook import TikTokWebhook, WebhookRecord
from workers.buyer.keys import open_with, parts_of, seal_with

# The tests' buyer data key (tests/integration/kafka_helpers.py publishes it wrapped by the
# test settings' local KEK, so that a labeler opens what the factories seal).
TEST_SHOP = "shop-1"
TEST_KEY_ID = "7e57" * 8
TEST_KEY = bytes(range(32))
BUYER = Address(name="Buyer", street1="1 Main St", city="Austin", state="TX")


def sealed(order_id: str = "O1", **changes: str) -> str:
    """A recipient sealed for ``order_id`` under the tests' data key."""
    return seal_with(TEST_KEY_ID, TEST_KEY, order_id, BUYER.model_copy(update=changes))


def opened(order_id: str, recipient: str | None) -> Address:
    """A recipient sealed under the tests' data key, opened."""
    assert recipient is not None
    return open_with(parts_of(recipient), TEST_KEY, order_id)


def line_items(order_id: str, skus: dict[str, int]) -> list[LineItem]:
    items = []
    for sku, units in skus.items():
        for _ in range(units):
            n = len(items) + 1
            items.append(
                LineItem(
                    item_id=f"{order_id}-{n:03d}",
                    sku_id=f"id-{sku}",
                    seller_sku=sku,
                    product_id=f"prod-{sku}",
                )
            )
    return items


def order(
    order_id: str = "O1",
    skus: dict[str, int] | None = None,
    status: OrderStatus = OrderStatus.AWAITING_SHIPMENT,
    update_time: int = 100,
    event_id: str | None = None,
) -> Order:
    return Order(
        event_id=event_id or f"ev-{order_id}-{status}-{update_time}",
        order_id=order_id,
        shop_id="shop-1",
        status=status,
        line_items=line_items(order_id, skus or {"A": 2, "B": 1}),
        recipient=sealed(order_id),
        update_time=update_time,
        source="upstream",
    )


def posted(order_id: str = "O1", **given: Any) -> dict[str, Any]:
    """An order as an upstream system posts it to /v1/orders: its recipient in clear."""
    fields = orjson.loads(encode(order(order_id, **given)))
    return fields | {"recipient": BUYER.model_dump()}


def box(
    box_id: str,
    contents: dict[str, int],
    order_id: str = "O1",
    last_box: bool = False,
) -> BoxClosed:
    return BoxClosed(
        event_id=f"ev-{box_id}",
        box_id=box_id,
        order_id=order_id,
        station_id="PACK-01",
        items=[BoxItem(sku=s, quantity=q) for s, q in contents.items()],
        weight=Weight(value=1.5),
        dimensions=Dimensions(length=10, width=8, height=4),
        last_box=last_box,
        closed_at_ms=1,
    )


def job(order_id: str = "O1", parcels: int = 1) -> LabelJob:
    items = line_items(order_id, {"A": parcels * 2})
    return LabelJob(
        job_id=f"job-{order_id}",
        event_id=f"job-{order_id}",
        order_id=order_id,
        shop_id="shop-1",
        recipient=sealed(order_id),
        parcels=[
            Parcel(
                box_id=f"{order_id}-B{n}",
                items=items[2 * n : 2 * n + 2],
                weight=Weight(value=2),
                dimensions=Dimensions(length=10, width=8, height=4),
            )
            for n in range(parcels)
        ],
        created_at_ms=now_ms(),
    )


def label_result(order_id: str, box_id: str = "BOX-1", warehouse: str = "A") -> LabelResult:
    """The label of job ``job-<order_id>``: one parcel, box ``box_id`` in ``warehouse``."""
    return LabelResult(
        event_id=f"label-job-{order_id}",
        job_id=f"job-{order_id}",
        order_id=order_id,
        carrier="TikTok Shop",
        service="ground",
        shipment_id=f"s-{order_id}",
        parcels=[
            ParcelLabel(
                box_id=box_id,
                warehouse_id=warehouse,
                tracking_id=f"T-{order_id}",
                documents=[LabelDocument(format="pdf", uri="x", sha256="x", size=1)],
            )
        ],
        attempts=1,
        latency_ms=1,
        call_ms=1,
        labeled_at_ms=1,
    )


# a simulator label: box 2 of a three-box shipment, 14 item ids
LABEL = Label(
    tracking="TT0123456789ABCDEF01",
    service="TikTok Shop Standard",
    order_id="576460000000000001",
    box_id="576460000000000001-B2",
    index=2,
    count=3,
    weight="2.4 lb",
    ship_from=["Warehouse", "1 Dock Rd", "Reno, NV 89502"],
    ship_to=["Buyer 0001", "12 Main St", "Austin, TX 73301", "US"],
    item_ids=[f"57646000000000000100{n}" for n in range(14)],
)


def webhook_record(
    order_id: str,
    status: str = "AWAITING_SHIPMENT",
    n: int = 0,
    shop_id: str = "7495",
    type: int = 1,
) -> WebhookRecord:
    """A verified order webhook as the receiver stores it (notification ntf-ORDER-N)."""
    return WebhookRecord(
        event_id=f"ntf-{order_id}-{n}",
        received_at_ms=1,
        app_key="testapp",
        webhook=TikTokWebhook(
            type=type,
            tts_notification_id=f"ntf-{order_id}-{n}",
            shop_id=shop_id,
            timestamp=1_700_000_000,
            data={"order_id": order_id, "order_status": status},
        ),
    )
