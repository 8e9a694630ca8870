"""Demo orders as TikTok would serve them, and how a packing station boxes them. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from schemas.box import BoxClosed, BoxItem
from schemas.common import Dimensions, Weight

CATALOG = [
    # (seller sku, name, unit weight lb)
    ("MUG-BLK", "Ceramic mug, black", 0.9),
    ("MUG-WHT", "Ceramic mug, white", 0.9),
    ("TEE-S", "T-shirt S", 0.3),
    ("TEE-M", "T-shirt M", 0.3),
    ("TEE-L", "T-shirt L", 0.35),
    ("CAP-RED", "Baseball cap, red", 0.25),
    ("SOCK-3P", "Socks, 3 pack", 0.2),
    ("BTL-750", "Water bottle 750 ml", 0.6),
    ("BAG-TOTE", "Canvas tote bag", 0.4),
    ("CASE-IP15", "Phone case", 0.1),
    ("LAMP-USB", "USB desk lamp", 1.2),
    ("PEN-SET", "Gel pen set", 0.15),
]
CITIES = [
    ("Austin", "TX", "73301"),
    ("Columbus", "OH", "43004"),
    ("Fresno", "CA", "93650"),
    ("Boise", "ID", "83701"),
    ("Tampa", "FL", "33601"),
    ("Denver", "CO", "80201"),
]


# How a demo order reaches AWAITING_SHIPMENT (TikTok's changelog "For US and UK markets:
# introducing On Hold order status": a shop gets both flows):
NEW_FLOW = "new"  # through ON_HOLD (is_on_hold_order true): ships at once
OLD_FLOW = "old"  # UNPAID -> AWAITING_SHIPMENT, paid over an hour ago: ships at once
OLD_FLOW_RECENT = "old-recent"  # the same, paid almost an hour ago: held for seconds
CANCEL_DECLINED = "cancel-declined"  # the buyer asks to cancel, the seller declines: labeled
CANCEL_ACCEPTED = "cancel-accepted"  # the buyer asks to cancel, it is accepted: no label
FLOWS = [(NEW_FLOW, 55), (OLD_FLOW, 25), (OLD_FLOW_RECENT, 10), (CANCEL_DECLINED, 5)]
FLOWS += [(CANCEL_ACCEPTED, 5)]
REMORSE_WINDOW_S = 3600  # TikTok's hour (the enricher's PARCELFLOW_REMORSE_HOLD_S default)


@dataclass(frozen=True)
class DemoOrder:
    order_id: str
    shop_id: str
    tiktok: dict[str, Any]  # the order as Get Order Detail returns it
    boxes: list[BoxClosed]
    flow: str = NEW_FLOW

    @property
    def labeled(self) -> bool:
        """Whether the order ends with a label (a cancelled one must not get one)."""
        return self.flow != CANCEL_ACCEPTED

    @property
    def units(self) -> int:
        return len(self.tiktok["line_items"])


def sku_id(seller_sku: str) -> str:
    return str(
        1729000000000000000 + sum(ord(c) * 131**i for i, c in enumerate(seller_sku)) % 10**15
    )


def make_order(order_id: str, shop_id: str, rng: random.Random, now_s: int) -> dict[str, Any]:
    picks = rng.sample(CATALOG, rng.randint(1, 4))
    units = [(sku, name) for sku, name, _ in picks for _ in range(rng.randint(1, 3))]
    return tiktok_order(order_id, units, rng, now_s)


def order_with(order_id: str, skus: dict[str, int], now_s: int) -> dict[str, Any]:
    """An order as Get Order Detail returns it, with these seller SKUs and quantities."""
    names = {sku: name for sku, name, _ in CATALOG}
    units = [(sku, names.get(sku, sku)) for sku, n in skus.items() for _ in range(n)]
    return tiktok_order(order_id, units, random.Random(order_id), now_s)


def tiktok_order(
    order_id: str, units: list[tuple[str, str]], rng: random.Random, now_s: int
) -> dict[str, Any]:
    """One line item per unit, ``units`` as (seller SKU, name)."""
    items = [
        {
            "id": f"{order_id}{n:03d}",
            "sku_id": sku_id(seller_sku),
            "product_id": f"17{sku_id(seller_sku)[2:12]}",
            "seller_sku": seller_sku,
            "sku_name": name,
            "product_name": name,
            "package_id": "",
            "is_gift": False,
        }
        for n, (seller_sku, name) in enumerate(units, start=1)
    ]
    city, state, postal = rng.choice(CITIES)
    return {
        "id": order_id,
        "status": "AWAITING_SHIPMENT",
        "shipping_type": "TIKTOK",
        "warehouse_id": "7300000000000000001",
        "is_on_hold_order": True,
        "is_buyer_request_cancel": False,
        "create_time": now_s - 4000,
        "paid_time": now_s - 3990,
        "update_time": now_s,
        "recipient_address": {
            "name": f"Buyer {order_id[-4:]}",
            "phone_number": "(+1)555-0100",
            "address_line1": f"{rng.randint(1, 999)} Main St",
            "address_line2": "",
            "postal_code": postal,
            "region_code": "US",
            "district_info": [
                {"address_level": "L0", "address_name": "United States"},
                {"address_level": "L1", "address_name": state},
                {"address_level": "L3", "address_name": city},
            ],
        },
        "line_items": items,
        "packages": [],
    }


def pack(order: dict[str, Any], rng: random.Random, now_ms: int) -> list[BoxClosed]:
    """Split the order's units into 1-3 boxes (60/30/10 %), as a packing station would."""
    units = [li["seller_sku"] for li in order["line_items"]]
    rng.shuffle(units)
    wanted = rng.choices([1, 2, 3], weights=[6, 3, 1])[0]
    count = min(wanted, len(units))
    contents: list[list[str]] = [[] for _ in range(count)]
    for n, sku in enumerate(units):
        contents[n % count].append(sku)
    weights = {sku: w for sku, _, w in CATALOG}
    boxes = []
    for n, skus in enumerate(contents, start=1):
        counted: dict[str, int] = {}
        for sku in skus:
            counted[sku] = counted.get(sku, 0) + 1
        boxes.append(
            BoxClosed(
                event_id=f"box-{order['id']}-{n}",
                box_id=f"{order['id']}-B{n}",
                order_id=order["id"],
                station_id=f"PACK-{rng.randint(1, 6):02d}",
                items=[BoxItem(sku=s, quantity=q) for s, q in sorted(counted.items())],
                weight=Weight(value=round(0.2 + sum(weights[s] for s in skus), 2)),
                dimensions=Dimensions(length=12, width=9, height=4 + 2 * len(skus)),
                closed_at_ms=now_ms,
            )
        )
    return boxes


def make_demo(
    count: int, *, seed: int, run_id: int, now_s: int, shops: int = 1, flows: bool = False
) -> list[DemoOrder]:
    """``count`` orders; all of the new flow, or with ``flows`` a mix of ``FLOWS``."""
    rng = random.Random(seed)
    orders = []
    for i in range(count):
        order_id = str(576460000000000000 + run_id * 100_000 + i)
        shop_id = str(7495000000000000000 + i % shops)
        raw = make_order(order_id, shop_id, rng, now_s)
        flow = NEW_FLOW
        if flows:
            flow = rng.choices([f for f, _ in FLOWS], weights=[w for _, w in FLOWS])[0]
            with_flow(raw, flow, now_s, rng)
        orders.append(DemoOrder(order_id, shop_id, raw, pack(raw, rng, now_s * 1000), flow))
    return orders


def with_flow(raw: dict[str, Any], flow: str, now_s: int, rng: random.Random) -> None:
    """Set the order's flow fields as TikTok would serve them (Get Order Detail)."""
    if flow == NEW_FLOW:
        return
    raw["is_on_hold_order"] = False
    if flow == OLD_FLOW_RECENT:  # the window ends 10-20 s from now
        raw["paid_time"] = now_s - REMORSE_WINDOW_S + rng.randint(10, 20)
    else:
        raw["paid_time"] = now_s - 2 * REMORSE_WINDOW_S
    raw["create_time"] = raw["paid_time"] - 10
    raw["is_buyer_request_cancel"] = flow in (CANCEL_DECLINED, CANCEL_ACCEPTED)


def answered(raw: dict[str, Any], flow: str, now_s: int) -> dict[str, Any]:
    """The order once the seller answered its buyer's cancel request."""
    answer = {**raw, "is_buyer_request_cancel": False, "update_time": now_s}
    if flow == CANCEL_ACCEPTED:
        answer |= {"status": "CANCELLED", "cancel_time": now_s}
    return answer


def cancellation_webhook(order: DemoOrder, now_s: int) -> dict[str, Any]:
    """TikTok's type 11 once the seller answered the buyer's request (TikTok's webhook
    page "11 Cancellation status change": CANCELLATION_REQUEST_SUCCESS when accepted,
    CANCELLATION_REQUEST_CANCELLED when the request was closed)."""
    accepted = order.flow == CANCEL_ACCEPTED
    return {
        "type": 11,
        "tts_notification_id": f"ntf-{order.order_id}-cancel",
        "shop_id": order.shop_id,
        "timestamp": now_s,
        "data": {
            "order_id": order.order_id,
            "cancellations_role": "BUYER",
            "cancel_status": "CANCELLATION_REQUEST_SUCCESS"
            if accepted
            else "CANCELLATION_REQUEST_CANCELLED",
            "cancel_id": str(4035318504086604100 + int(order.order_id) % 1000),
            "create_time": now_s - 5,
        },
    }


def webhook(order: DemoOrder, now_s: int) -> dict[str, Any]:
    return {
        "type": 1,
        "tts_notification_id": f"ntf-{order.order_id}-aws",
        "shop_id": order.shop_id,
        "timestamp": now_s,
        "data": {
            "order_id": order.order_id,
            "order_status": "AWAITING_SHIPMENT",
            "is_on_hold_order": order.tiktok.get("is_on_hold_order", True),
            "update_time": now_s,
        },
    }
