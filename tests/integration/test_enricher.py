"""The enricher on a real broker against the simulated TikTok Open API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from schemas.order import Order, OrderStatus
from schemas.rejected import RejectedRecord
from schemas.topics import ORDERS, WEBHOOKS, WEBHOOKS_REJECTED
from schemas.webhook import TikTokWebhook, WebhookRecord
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.sim import start_simulator
from workers.devstack.demo_data import make_demo
from workers.enricher.worker import run
from workers.settings import Settings
from workers.simulator.app import Simulator
from workers.simulator.faults import Fault


def record(order_id: str, status: str = "AWAITING_SHIPMENT", n: int = 0) -> WebhookRecord:
    return WebhookRecord(
        event_id=f"ntf-{order_id}-{n}",
        received_at_ms=1,
        app_key="testapp",
        webhook=TikTokWebhook(
            type=1,
            tts_notification_id=f"ntf-{order_id}-{n}",
            shop_id="7495",
            timestamp=1_700_000_000,
            data={"order_id": order_id, "order_status": status},
        ),
    )


@pytest.fixture
async def enricher(
    make_settings: Callable[..., Settings], serve: Any
) -> AsyncIterator[tuple[Settings, Simulator, list[dict[str, Any]]]]:
    base = make_settings()
    url, sim = await start_simulator(serve, base)
    settings = make_settings(tiktok_api_base=url, tiktok_auth_base=url)
    demo = [o.tiktok for o in make_demo(3, seed=1, run_id=1, now_s=1_700_000_000)]
    for raw in demo:
        sim.tiktok.orders[raw["id"]] = raw
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    yield settings, sim, demo
    stop.set()
    await asyncio.wait_for(task, 15)


async def test_awaiting_shipment_is_enriched_with_one_item_per_unit(
    enricher: tuple[Settings, Simulator, list[dict[str, Any]]],
) -> None:
    settings, sim, demo = enricher
    for raw in demo:
        await produce(settings, WEBHOOKS, "7495", record(raw["id"]))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 3))
    by_id = {o.order_id: o for o in orders}
    assert set(by_id) == {raw["id"] for raw in demo}
    for raw in demo:
        got = by_id[raw["id"]]
        assert got.status is OrderStatus.AWAITING_SHIPMENT
        assert [i.item_id for i in got.line_items] == [li["id"] for li in raw["line_items"]]
        assert got.source == "tiktok" and got.recipient is not None
    assert sim.tiktok.rejected_signatures == 0


async def test_expired_token_is_refreshed_and_the_call_retried(
    enricher: tuple[Settings, Simulator, list[dict[str, Any]]],
) -> None:
    settings, sim, demo = enricher
    sim.tiktok.access_token = "rotated-by-tiktok"  # the worker's token is now expired
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"]))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[0]["id"]]
    assert sim.tiktok.refreshes == 1


async def test_rate_limit_and_503_are_retried(
    enricher: tuple[Settings, Simulator, list[dict[str, Any]]],
) -> None:
    settings, sim, demo = enricher
    sim.faults.push("tiktok", [Fault(status=429, retry_after=0.2), Fault(status=503)])
    await produce(settings, WEBHOOKS, "7495", record(demo[1]["id"]))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[1]["id"]]
    assert sim.tiktok.calls >= 3


async def test_cancel_needs_no_api_call_and_other_statuses_are_skipped(
    enricher: tuple[Settings, Simulator, list[dict[str, Any]]],
) -> None:
    settings, sim, demo = enricher
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"], "IN_TRANSIT", 1))
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"], "CANCEL", 2))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [(o.order_id, o.status) for o in orders] == [(demo[0]["id"], OrderStatus.CANCELLED)]
    assert sim.tiktok.calls == 0


async def test_malformed_webhook_is_dead_lettered_and_the_worker_goes_on(
    enricher: tuple[Settings, Simulator, list[dict[str, Any]]],
) -> None:
    settings, _, demo = enricher
    await produce(settings, WEBHOOKS, "7495", b"\xff garbage")
    await produce(settings, WEBHOOKS, "7495", record(demo[2]["id"]))
    rejected = models(
        RejectedRecord, await consume(settings, WEBHOOKS_REJECTED, lambda v: len(v) >= 1)
    )
    assert rejected[0].original() == b"\xff garbage"
    assert rejected[0].reason == "not valid JSON" and rejected[0].worker == "enricher"
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[2]["id"]]


async def test_unknown_order_is_dead_lettered(
    enricher: tuple[Settings, Simulator, list[dict[str, Any]]],
) -> None:
    settings, _, _ = enricher
    await produce(settings, WEBHOOKS, "7495", record("999"))
    rejected = models(
        RejectedRecord, await consume(settings, WEBHOOKS_REJECTED, lambda v: len(v) >= 1)
    )
    assert rejected[0].reason == "order 999 not found at TikTok"
