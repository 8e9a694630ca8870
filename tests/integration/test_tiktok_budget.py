"""TikTok's per-shop limit shared by every process that calls TikTok, counted from the
consumer groups' members on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from schemas.topics import LABEL_JOBS, WEBHOOKS
from workers.kafka import Topics, make_consumer
from workers.settings import Settings
from workers.tiktok import wire
from workers.tiktok.budget import keep_shared
from workers.tiktok.client import TikTokClient
from workers.tiktok.tokens import TokenStore
from workers.topics import ensure_topics


async def settle(client: TikTokClient, qps: float, timeout_s: float = 30) -> None:
    """Wait until the client's share is ``qps`` (the budget reads the groups every 0.2 s)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while abs(client.qps - qps) > 1e-9:
        assert asyncio.get_running_loop().time() < deadline, f"share {client.qps}, not {qps}"
        await asyncio.sleep(0.1)


async def test_each_process_takes_an_equal_share_as_replicas_come_and_go(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        label_provider="tiktok", tiktok_rate_limit_qps=60, tiktok_budget_every_s=0.2
    )
    await ensure_topics(settings)
    names = Topics(settings)
    joined: list[AIOKafkaConsumer] = []

    async def join(group: str, topic: str) -> AIOKafkaConsumer:
        consumer = make_consumer(settings, names.group(group), names(topic))
        await consumer.start()
        joined.append(consumer)
        return consumer

    client = TikTokClient(None, settings, TokenStore())  # type: ignore[arg-type] (no calls)
    stop = asyncio.Event()
    sharing = asyncio.create_task(keep_shared(settings, client, stop))
    try:
        await join("parcelflow-enricher", WEBHOOKS)
        await join("parcelflow-labeler", LABEL_JOBS)
        await settle(client, 30.0)  # one enricher, one labeler
        leaving = await join("parcelflow-enricher", WEBHOOKS)
        await settle(client, 20.0)  # a second enricher replica
        assert client.limiter("7495", wire.ORDER_DETAIL_PATH).max_rate == 20.0
        await leaving.stop()
        joined.remove(leaving)
        await settle(client, 30.0)  # it left: the others take its share back
    finally:
        stop.set()
        await sharing
        for consumer in joined:
            with contextlib.suppress(Exception):
                await consumer.stop()


async def test_labeler_replicas_count_only_where_a_shop_gets_tiktok_shipping(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(tiktok_rate_limit_qps=50, tiktok_budget_every_s=0.2)
    await ensure_topics(settings)
    names = Topics(settings)
    consumers = [
        make_consumer(settings, names.group("parcelflow-enricher"), names(WEBHOOKS)),
        make_consumer(settings, names.group("parcelflow-labeler"), names(LABEL_JOBS)),
    ]
    client = TikTokClient(None, settings, TokenStore())  # type: ignore[arg-type] (no calls)
    stop = asyncio.Event()
    for consumer in consumers:
        await consumer.start()
    sharing = asyncio.create_task(keep_shared(settings, client, stop))
    try:
        await asyncio.sleep(1.0)
        assert client.qps == 50.0  # Shipium makes every label: the enricher alone calls
    finally:
        stop.set()
        await sharing
        for consumer in consumers:
            await consumer.stop()
