"""SIGKILL of the enricher mid-run: after a restart every order is published, none lost."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.demo_data import make_demo
from devstack.simulator.faults import Fault
from schemas.order import Order
from schemas.topics import ORDERS, WEBHOOKS
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.processes import worker_process
from tests.integration.sim import start_simulator
from tests.unit.factories import webhook_record

pytestmark = pytest.mark.slow

COUNT = 200


def published(values: list[bytes]) -> set[str]:
    return {o.order_id for o in models(Order, values)}


async def test_sigkill_mid_run_loses_no_order(
    make_settings: Callable[..., Any], serve: Any, tmp_path: Path
) -> None:
    base = make_settings()
    url, sim = await start_simulator(serve, base)
    settings = make_settings(
        topic_namespace=base.topic_namespace,
        tiktok_api_base=url,
        tiktok_auth_base=url,
        tiktok_batch_size=5,
    )
    demo = [o.tiktok for o in make_demo(COUNT, seed=2, run_id=3, now_s=1_700_000_000)]
    for raw in demo:
        sim.tiktok.orders[raw["id"]] = raw
    sim.faults.push("tiktok", [Fault(delay_s=0.15) for _ in range(COUNT)])  # slow TikTok
    for n, raw in enumerate(demo):
        record = webhook_record(raw["id"], n=n)
        await produce(settings, WEBHOOKS, "7495", record)
    log = tmp_path / "enricher.log"
    with worker_process("enricher", settings, log, b"enricher_ready") as first:
        await consume(settings, ORDERS, lambda v: len(published(v)) >= COUNT // 4, timeout_s=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = len(published(await consume(settings, ORDERS, lambda v: False, timeout_s=1)))
    assert killed_at < COUNT, "the kill came too late to prove anything"
    with worker_process("enricher", settings, log, b"enricher_ready"):
        values = await consume(settings, ORDERS, lambda v: len(published(v)) >= COUNT, 120)
    orders = models(Order, values)
    assert published(values) == {raw["id"] for raw in demo}
    by_id = {raw["id"]: raw for raw in demo}
    for order in orders:
        assert [i.item_id for i in order.line_items] == [
            li["id"] for li in by_id[order.order_id]["line_items"]
        ]
    # duplicates are the replayed batch: same event id, harmless downstream
    assert len({o.event_id for o in orders}) == COUNT
    print(f"\nenricher kill: {killed_at} orders before the kill, {len(orders)} events in all")
