"""The enricher's loop: consume webhooks, fetch order detail in batches, publish orders.

Offsets are committed per partition only after every order event of the batch was
acked by the broker; a crash replays the batch and the planner dedupes by event id.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any, TypeAlias

import aiohttp
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from schemas.codec import decode
from schemas.topics import ORDERS, WEBHOOKS, WEBHOOKS_REJECTED
from schemas.webhook import WebhookRecord
from workers.enricher.decide import Action, cancellation, decide
from workers.kafka import Topics, dead_letter, ensure_topics, make_consumer, make_producer, publish
from workers.settings import Settings
from workers.tiktok.client import TikTokClient, TikTokError
from workers.tiktok.wire import parse_order

log = structlog.get_logger(__name__)

Message: TypeAlias = ConsumerRecord  # ConsumerRecord[bytes, bytes]; aiokafka is untyped


class Enricher:
    def __init__(
        self, settings: Settings, producer: AIOKafkaProducer, tiktok: TikTokClient
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.tiktok = tiktok
        names = Topics(settings)
        self.orders_topic = names(ORDERS)
        self.rejected_topic = names(WEBHOOKS_REJECTED)

    async def reject(self, message: Message, reason: str) -> None:
        await dead_letter(self.producer, self.rejected_topic, message, reason, "enricher")

    async def handle(self, messages: Sequence[Message]) -> None:
        """Handle one batch; returns when every resulting event is acked."""
        to_fetch: dict[str, list[tuple[Message, WebhookRecord]]] = {}
        for message in messages:
            record = decode(WebhookRecord, message.value)
            if isinstance(record, str):
                await self.reject(message, record)
                continue
            decision = decide(record)
            if decision.action is Action.CANCEL:
                order = cancellation(record, decision.order_id)
                await publish(self.producer, self.orders_topic, order.order_id, order)
            elif decision.action is Action.FETCH:
                to_fetch.setdefault(decision.order_id, []).append((message, record))
            else:
                log.debug("webhook_skipped", reason=decision.reason, event_id=record.event_id)
        ids = sorted(to_fetch)
        for start in range(0, len(ids), self.settings.tiktok_batch_size):
            await self.fetch_and_publish(
                ids[start : start + self.settings.tiktok_batch_size], to_fetch
            )

    async def fetch_and_publish(
        self, ids: list[str], waiting: dict[str, list[tuple[Message, WebhookRecord]]]
    ) -> None:
        try:
            found = {str(o["id"]): o for o in await self.tiktok.get_orders(ids)}
        except TikTokError as err:
            for order_id in ids:
                for message, _ in waiting[order_id]:
                    await self.reject(message, f"Get Order Detail failed: {err}")
            return
        for order_id in ids:
            raw: dict[str, Any] | None = found.get(order_id)
            for message, record in waiting[order_id]:
                if raw is None:
                    await self.reject(message, f"order {order_id} not found at TikTok")
                    continue
                try:
                    order = parse_order(raw, record.webhook.shop_id, f"tiktok-{record.event_id}")
                except (KeyError, ValueError, TypeError) as exc:
                    await self.reject(
                        message, f"unreadable order detail: {type(exc).__name__}: {exc}"
                    )
                    continue
                await publish(self.producer, self.orders_topic, order.order_id, order)
                log.info(
                    "order_enriched",
                    order_id=order_id,
                    status=order.status,
                    items=len(order.line_items),
                )


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or Ctrl-C)."""
    await ensure_topics(settings)
    names = Topics(settings)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    consumer = make_consumer(settings, names.group("parcelflow-enricher"), names(WEBHOOKS))
    producer = make_producer(settings)
    async with aiohttp.ClientSession() as http:
        enricher = Enricher(settings, producer, TikTokClient(http, settings))
        try:
            await producer.start()
            await consumer.start()
            log.info("enricher_ready", topic=names(WEBHOOKS))
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp, messages in batches.items():
                    await enricher.handle(messages)
                    await consumer.commit(
                        {TopicPartition(tp.topic, tp.partition): messages[-1].offset + 1}
                    )
        finally:
            await consumer.stop()
            await producer.stop()
