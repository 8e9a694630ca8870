"""The chaos schedule and the end-to-end verdict, without a stack."""

from __future__ import annotations

import copy
from typing import Any

from devstack.chaos import TARGETS, schedule
from devstack.demo_data import DemoOrder, make_demo
from devstack.verify import verify
from schemas.label import LabelResult, ParcelLabel
from workers.labeler.shipium.request import ITEM_REFERENCE_FIELD, TIKTOK_ORDER_ID_FIELD


def test_a_seed_gives_one_schedule_with_every_worker_killed_and_stopped_and_the_broker_paused() -> (
    None
):
    faults = schedule(42, 300)
    assert faults == schedule(42, 300), "replayable from its seed"
    assert faults != schedule(43, 300)
    kinds = sorted((f.kind, f.target) for f in faults)
    expected = [("kill", t) for t in TARGETS] + [("stop", t) for t in TARGETS]
    assert kinds == sorted(expected + [("pause", "broker")] * 3)
    assert all(30 <= f.at_s <= 240 for f in faults), "inside the traffic, leaving time to heal"
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert all(f.hold_s == 0 for f in faults if f.kind == "kill")
    assert all(f.hold_s > 0 for f in faults if f.kind != "kill")
    assert [f.kind for f in schedule(1, 60)].count("pause") == 1


def request_for(order: DemoOrder) -> dict[str, Any]:
    """The label create a correct labeler sends: one package per box, its units' ids."""
    free = {}
    for item in order.tiktok["line_items"]:
        free.setdefault(item["seller_sku"], []).append(item["id"])
    packages = []
    for box in order.boxes:
        ids = [free[i.sku].pop() for i in box.items for _ in range(i.quantity)]
        packages.append({"orderItemQuantities": [{ITEM_REFERENCE_FIELD: i} for i in ids]})
    shipment: dict[str, Any] = {TIKTOK_ORDER_ID_FIELD: order.order_id, **packages[0]}
    if len(packages) > 1:
        shipment["multiParcelShipmentParameters"] = packages
    return {"shipmentParameters": shipment}


def label_for(order: DemoOrder) -> LabelResult:
    return LabelResult(
        event_id=f"label-j{order.order_id}",
        job_id=f"j{order.order_id}",
        order_id=order.order_id,
        carrier="TikTok Shop",
        service="standard",
        shipment_id="s",
        parcels=[ParcelLabel(box_id=b.box_id, tracking_id="t") for b in order.boxes],
        attempts=1,
        latency_ms=1,
        call_ms=1,
        labeled_at_ms=1,
    )


def test_the_verdict_counts_labels_duplicates_and_losses_and_finds_wrong_contents() -> None:
    orders = make_demo(20, seed=4, run_id=1, now_s=1_700_000_000)
    requests = [request_for(o) for o in orders]
    labels = {o.order_id: label_for(o) for o in orders}
    good = verify(orders, requests, labels)
    assert good.ok and (good.labeled, good.duplicate_calls, good.lost) == (20, 0, 0)

    twice = verify(orders, [*requests, requests[3]], labels)
    assert (twice.duplicate_calls, twice.ok) == (1, False)

    gone = dict(labels)
    del gone[orders[0].order_id], gone[orders[1].order_id]
    lost = verify(orders, requests, gone, failed={orders[1].order_id})
    assert (lost.labeled, lost.lost, lost.ok) == (18, 1, False)

    multi = next(n for n, o in enumerate(orders) if len(o.boxes) > 1)
    swapped = copy.deepcopy(requests)
    packages = swapped[multi]["shipmentParameters"]["multiParcelShipmentParameters"]
    first, second = packages[0]["orderItemQuantities"], packages[1]["orderItemQuantities"]
    second.append(first.pop())  # one unit on the wrong box's label
    wrong = verify(orders, swapped, labels)
    assert not wrong.ok
    assert wrong.problems == [
        f"order {orders[multi].order_id} box {orders[multi].boxes[0].box_id}: wrong item ids",
        f"order {orders[multi].order_id} box {orders[multi].boxes[1].box_id}: wrong item ids",
    ]
