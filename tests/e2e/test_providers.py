"""Two shops in one devstack, one per label provider: Shipium for one, TikTok Shipping for
the other, with TikTok's answers lost after packages were made."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from devstack.demo import Progress, send, watch
from devstack.demo_data import make_demo
from devstack.stack import Stack
from devstack.verify import verify

pytestmark = pytest.mark.slow
SHIPIUM_SHOP, TIKTOK_SHOP = "7495000000000000000", "7495000000000000001"


def call(url: str, body: Any = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local simulator)
        return orjson.loads(response.read())


def test_each_shop_is_labeled_by_its_provider_one_package_per_box(tmp_path: Path) -> None:
    orders = make_demo(40, seed=5, run_id=626, now_s=int(time.time()), shops=2)
    overrides = {
        "SIM_LABEL_LATENCY_MEDIAN_S": "0.3",
        "LABEL_PROVIDER": "shipium",
        "LABEL_PROVIDERS": json.dumps({TIKTOK_SHOP: "tiktok"}),
    }
    stack = Stack(tmp_path, overrides)
    with stack.running(say=False):
        sim = stack.simulator_url
        # three packages made whose answers never arrive: two dropped lines, one 504
        lost = [{"after": "created", "status": s} for s in (0, 504, 0)]
        call(f"{sim}/_sim/faults", {"api": "tiktok_shipping", "faults": lost})
        asyncio.run(send(orders, stack.settings, stack.receiver_url, sim, stack.token))
        progress = Progress(expected={o.order_id for o in orders})
        asyncio.run(watch(stack.settings, progress, timeout_s=150, out=False))
        requests = call(f"{sim}/_sim/shipium/requests")
        packages = call(f"{sim}/_sim/tiktok/packages")
        stats = call(f"{sim}/_sim/stats")
    assert progress.pending == 0 and progress.failures == {}
    by_shop = {
        shop: [o for o in orders if o.shop_id == shop] for shop in (SHIPIUM_SHOP, TIKTOK_SHOP)
    }
    assert all(by_shop.values())
    # Shipium made the labels of its shop, one call per order, the item ids of each box
    shipium = verify(by_shop[SHIPIUM_SHOP], requests, progress.labels)
    assert shipium.problems == [] and shipium.duplicate_calls == 0
    assert len(requests) == len(by_shop[SHIPIUM_SHOP])
    # TikTok Shipping: one package per box, holding exactly that box's units
    assert stats["tiktok_shipping"]["refused_packed"] == 0
    assert len(packages) == sum(len(o.boxes) for o in by_shop[TIKTOK_SHOP])
    for order in by_shop[TIKTOK_SHOP]:
        label = progress.labels[order.order_id]
        assert label.carrier == "TikTok Shipping"
        sku_of = {li["id"]: li["seller_sku"] for li in order.tiktok["line_items"]}
        made = [p for p in packages if p["order_id"] == order.order_id]
        assert label.shipment_id.split(",") == [p["package_id"] for p in made]
        packed = sorted(sorted(Counter(sku_of[i] for i in p["items"]).items()) for p in made)
        boxed = sorted(sorted((b.sku, b.quantity) for b in box.items) for box in order.boxes)
        assert packed == boxed, order.order_id
        assert [p.tracking_id for p in label.parcels] == [p["tracking_number"] for p in made]
    retried = sum(progress.labels[o.order_id].attempts - 1 for o in by_shop[TIKTOK_SHOP])
    assert retried >= len(lost), "every lost answer cost its job one more attempt"
    for order in by_shop[SHIPIUM_SHOP]:
        assert progress.labels[order.order_id].carrier != "TikTok Shipping"
