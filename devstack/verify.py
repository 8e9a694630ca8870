"""Check demo orders against what the label provider was asked: the end-to-end truth.

The simulator records every label create it answered. For each demo order there must be
exactly one, and each of its packages must list exactly the TikTok item ids of one box
(the seller SKUs of those ids are what the packing station put in that box). Pure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from devstack.demo_data import DemoOrder
from schemas.label import LabelResult
from workers.labeler.shipium.request import ITEM_REFERENCE_FIELD, TIKTOK_ORDER_ID_FIELD


@dataclass
class Verdict:
    orders: int
    labeled: int  # orders with a label on labels.v1
    label_calls: int  # creates the provider answered
    duplicate_calls: int  # creates beyond the first, per order
    lost: int  # orders with neither a label nor a failure
    problems: list[str] = field(default_factory=list)  # wrong contents, one line each

    @property
    def ok(self) -> bool:
        return (
            self.labeled == self.orders
            and self.duplicate_calls == 0
            and self.lost == 0
            and not self.problems
        )


def verify(
    orders: list[DemoOrder],
    requests: list[dict[str, Any]],
    labels: dict[str, LabelResult],
    failed: frozenset[str] | set[str] = frozenset(),
) -> Verdict:
    """``requests``: the simulator's record of label creates (``/_sim/shipium/requests``);
    ``labels``: labels.v1 by order id; ``failed``: order ids on label-failures.v1."""
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in requests:
        shipment = request["shipmentParameters"]
        calls[shipment[TIKTOK_ORDER_ID_FIELD]].append(shipment)
    verdict = Verdict(
        orders=len(orders),
        labeled=sum(1 for o in orders if o.order_id in labels),
        label_calls=len(requests),
        duplicate_calls=sum(max(0, len(c) - 1) for c in calls.values()),
        lost=sum(1 for o in orders if o.order_id not in labels and o.order_id not in failed),
    )
    for order in orders:
        made = calls.get(order.order_id, [])
        label = labels.get(order.order_id)
        if label is None or not made:
            if label is not None:
                verdict.problems.append(f"order {order.order_id}: labeled, but never called")
            continue
        verdict.problems += contents_problems(order, made[-1], label)
    return verdict


def contents_problems(order: DemoOrder, shipment: dict[str, Any], label: LabelResult) -> list[str]:
    """Each package lists exactly the item ids of its box, and every unit is in one box."""
    packages = shipment.get("multiParcelShipmentParameters") or [shipment]
    if not len(packages) == len(order.boxes) == len(label.parcels):
        return [
            f"order {order.order_id}: {len(order.boxes)} boxes, {len(packages)} packages, "
            f"{len(label.parcels)} parcels"
        ]
    sku_of = {item["id"]: item["seller_sku"] for item in order.tiktok["line_items"]}
    boxes = {box.box_id: box for box in order.boxes}
    problems: list[str] = []
    seen: list[str] = []
    for package, parcel in zip(packages, label.parcels, strict=True):
        ids = [q[ITEM_REFERENCE_FIELD] for q in package["orderItemQuantities"]]
        box = boxes.get(parcel.box_id)
        packed = Counter({i.sku: i.quantity for i in box.items}) if box else Counter()
        if Counter(sku_of.get(i, "?") for i in ids) != packed:
            problems.append(f"order {order.order_id} box {parcel.box_id}: wrong item ids")
        seen += ids
    if sorted(seen) != sorted(sku_of):
        problems.append(f"order {order.order_id}: not every unit exactly once")
    return problems
