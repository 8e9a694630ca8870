"""The enricher: consume webhooks, fetch order detail in batches per shop, publish orders.

Offsets are committed per partition only after every event of the batch was acked by the
broker; a crash replays the batch and the planner dedupes by event id.

Nothing is dropped on a TikTok problem. A webhook whose shop must re-authorize (its
refresh token was refused), or whose Get Order Detail failed after every retry, is
*parked*: written to ``tiktok.webhooks.parked.v1`` with the reason, and an alert names the
shop. A second consumer takes parked webhooks again when they are due, and parks them
again while the cause lasts. Only what can never work (a malformed record, an order
TikTok does not know) goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiohttp
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter

from schemas.alert import Alert
from schemas.codec import decode, encode
from schemas.common import derived_id, now_ms
from schemas.order import Order
from schemas.topics import ALERTS, ORDERS, WEBHOOKS, WEBHOOKS_PARKED, WEBHOOKS_REJECTED
from schemas.webhook import ParkedWebhook, WebhookRecord
from workers.buyer.kek import key_service
from workers.buyer.keys import Sealer
from workers.enricher.decide import Action, cancellation, cause, decide
from workers.errors import problem_of
from workers.kafka import (
    Refused,
    Topics,
    dead_letter,
    make_consumer,
    make_producer,
    max_value_bytes,
    publish,
    read_record,
    writer_name,
)
from workers.runtime import Runtime, worker_runtime
from workers.settings import EnricherSettings
from workers.tiktok.budget import keep_shared
from workers.tiktok.client import ShopUnauthorized, TikTokClient, TikTokError
from workers.tiktok.tokens import (
    TokenStore,
    TokenTopic,
    defaults_of,
    import_missing,
    read_token_file,
)
from workers.tiktok.wire import parse_address, parse_order

log = structlog.get_logger(__name__)

Message: TypeAlias = ConsumerRecord  # ConsumerRecord[bytes, bytes]; aiokafka is untyped

ENRICHED = Counter("parcelflow_enricher_orders", "Order events published (with line items).")
PARKED = Counter("parcelflow_enricher_parked", "Webhooks parked to be tried again later.")
REAUTHORIZE = Counter(
    "parcelflow_enricher_reauthorization_alerts", "Alerts that a shop must re-authorize."
)


def shop_id_of(record: WebhookRecord) -> str:
    return record.webhook.shop_id


@dataclass(frozen=True)
class Pending:
    """One webhook to handle, and how many times it was tried before (parked)."""

    message: Message
    record: WebhookRecord
    attempts: int = 0


class Enricher:
    def __init__(
        self,
        settings: EnricherSettings,
        producer: AIOKafkaProducer,
        tiktok: TikTokClient,
        sealer: Sealer,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.tiktok = tiktok
        self.sealer = sealer
        names = Topics(settings)
        self.orders_topic = names(ORDERS)
        self.rejected_topic = names(WEBHOOKS_REJECTED)
        self.parked_topic = names(WEBHOOKS_PARKED)
        self.alerts_topic = names(ALERTS)
        self.alerted: dict[str, str] = {}  # shop id -> the reason last alerted

    async def reject(self, message: Message, reason: str) -> None:
        await dead_letter(
            self.producer,
            self.rejected_topic,
            message,
            reason,
            "enricher",
            max_value_bytes(self.settings),
        )

    def read(self, message: Message) -> WebhookRecord | Refused:
        """The webhook a record holds (keyed by its shop id), or why it is refused."""
        limit = self.settings.max_input_bytes
        return read_record(WebhookRecord, message, limit, shop_id_of, "shop id")

    async def handle(self, messages: Sequence[Message]) -> None:
        """Handle one batch of ``tiktok.webhooks.v1``; returns when every result is acked."""
        pending = []
        for message in messages:
            record = self.read(message)
            if isinstance(record, Refused):
                await self.reject(message, record.reason)
            else:
                pending.append(Pending(message, record))
        await self.process(pending)

    async def process(self, pending: Sequence[Pending]) -> None:
        to_fetch: dict[str, dict[str, list[Pending]]] = {}  # shop id -> order id -> webhooks
        for item in pending:
            decision = decide(item.record)
            if decision.action is Action.REJECT:
                await self.reject(item.message, decision.reason)
            elif decision.action is Action.CANCEL:
                order = cancellation(item.record, decision.order_id)
                await publish(self.producer, self.orders_topic, order.order_id, order)
            elif decision.action is Action.FETCH:
                shop = to_fetch.setdefault(item.record.webhook.shop_id, {})
                shop.setdefault(decision.order_id, []).append(item)
            else:
                log.debug("webhook_skipped", reason=decision.reason, event_id=item.record.event_id)
        size = self.settings.tiktok_batch_size
        for shop_id, waiting in to_fetch.items():
            ids = sorted(waiting)
            for start in range(0, len(ids), size):
                await self.fetch_and_publish(shop_id, ids[start : start + size], waiting)

    async def fetch_and_publish(
        self, shop_id: str, ids: list[str], waiting: dict[str, list[Pending]]
    ) -> None:
        items = [item for order_id in ids for item in waiting[order_id]]
        try:
            found = {str(o["id"]): o for o in await self.tiktok.get_orders(shop_id, ids)}
        except ShopUnauthorized as err:
            await self.alert_unauthorized(shop_id, err.reason)
            await self.park(items, str(err))
            return
        except TikTokError as err:
            await self.park(items, f"Get Order Detail failed: {err} (code {err.code})")
            return
        self.alerted.pop(shop_id, None)
        sends = []  # every order of the call at once, then wait for all acks: one linger
        for order_id in ids:
            raw: dict[str, Any] | None = found.get(order_id)
            for item in waiting[order_id]:
                order = await self.order_of(shop_id, order_id, raw, item)
                if order is not None:
                    sends.append(
                        await self.producer.send(
                            self.orders_topic, encode(order), key=order.order_id.encode()
                        )
                    )
        await asyncio.gather(*sends)
        ENRICHED.inc(len(sends))

    async def order_of(
        self, shop_id: str, order_id: str, raw: dict[str, Any] | None, item: Pending
    ) -> Order | None:
        """The order event one webhook makes, or None when it was dead-lettered."""
        if raw is None:
            await self.reject(item.message, f"order {order_id} not found at TikTok")
            return None
        try:
            event_id = derived_id("tiktok", item.record.event_id)
            order = parse_order(
                raw, shop_id, event_id, cause(item.record), self.settings.remorse_hold_s
            )
            recipient = parse_address(raw.get("recipient_address"))
        except (KeyError, ValueError, TypeError) as exc:
            # the reason names the problem, never a value (a buyer's data may be in it)
            await self.reject(item.message, f"unreadable order detail: {problem_of(exc)}")
            return None
        sealed = await self.sealer.seal(shop_id, order.order_id, recipient)
        order = order.model_copy(update={"recipient": sealed})
        log.info("order_enriched", order_id=order_id, status=order.status, cause=order.cause)
        return order

    async def park(self, items: Sequence[Pending], reason: str) -> None:
        now = now_ms()
        due = now + int(self.settings.enricher_park_retry_s * 1000)
        for item in items:
            parked = ParkedWebhook(
                record=item.record,
                reason=reason,
                attempts=item.attempts + 1,
                parked_at_ms=now,
                due_at_ms=due,
            )
            await publish(self.producer, self.parked_topic, item.record.webhook.shop_id, parked)
        PARKED.inc(len(items))
        log.warning("webhooks_parked", count=len(items), reason=reason)

    async def alert_unauthorized(self, shop_id: str, reason: str) -> None:
        """One alert per shop and reason (again after a restart: alerts may repeat)."""
        if self.alerted.get(shop_id) == reason:
            return
        at = now_ms()
        alert = Alert(
            event_id=derived_id("reauthorize", shop_id, str(at)),
            kind="shop_reauthorization_required",
            shop_id=shop_id,
            message=f"TikTok refused the tokens of shop {shop_id}: the seller must authorize "
            "the app again, then run `parcelflow tokens set`. Its orders wait in "
            f"{self.parked_topic} and are fetched once the new tokens work.",
            details={"reason": reason},
            at_ms=at,
        )
        await publish(self.producer, self.alerts_topic, shop_id, alert)
        self.alerted[shop_id] = reason
        REAUTHORIZE.inc()
        log.error("shop_reauthorization_required", shop_id=shop_id, reason=reason)


async def consume(consumer: AIOKafkaConsumer, enricher: Enricher, stop: asyncio.Event) -> None:
    """The main loop over ``tiktok.webhooks.v1``: commit each partition after its batch."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=500, max_records=500)
        for tp, messages in batches.items():
            await enricher.handle(messages)
            await consumer.commit({TopicPartition(tp.topic, tp.partition): messages[-1].offset + 1})


async def consume_parked(
    consumer: AIOKafkaConsumer, enricher: Enricher, stop: asyncio.Event
) -> None:
    """Take parked webhooks again when due. Each partition is in due order (one delay for
    all), so the first webhook not yet due means the rest of its partition is not either."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=500, max_records=100)
        wait_ms = 0
        for tp, messages in batches.items():
            due: list[Pending] = []  # handled together: one Get Order Detail per 50 orders
            done = None
            for message in messages:
                parked = decode(ParkedWebhook, message.value)
                if isinstance(parked, str):
                    await enricher.reject(message, parked)
                elif parked.due_at_ms > now_ms():
                    consumer.seek(tp, message.offset)  # read it again when due
                    wait_ms = max(wait_ms, min(parked.due_at_ms - now_ms(), 1000))
                    break
                else:
                    due.append(Pending(message, parked.record, parked.attempts))
                done = message.offset + 1
            await enricher.process(due)
            if done is not None:
                await consumer.commit({TopicPartition(tp.topic, tp.partition): done})
        if wait_ms:
            try:
                await asyncio.wait_for(stop.wait(), wait_ms / 1000)
            except TimeoutError:
                pass


async def run(settings: EnricherSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or Ctrl-C)."""
    async with worker_runtime(settings, "enricher", stop) as runtime:
        await enrich(settings, runtime)


async def enrich(settings: EnricherSettings, runtime: Runtime[EnricherSettings]) -> None:
    names, stop = Topics(settings), runtime.stop
    consumer = make_consumer(settings, names.group("parcelflow-enricher"), names(WEBHOOKS))
    parked = make_consumer(
        settings, names.group("parcelflow-enricher-parked"), names(WEBHOOKS_PARKED)
    )
    producer = make_producer(settings)
    runtime.wants_broker(producer.client)
    runtime.wants_consumer("the webhooks consumer", consumer)
    store = TokenStore()
    tokens = TokenTopic(settings, store, writer_name("enricher"))
    kek = key_service(settings)
    async with aiohttp.ClientSession() as http:
        owner = Ownership(consumer, names(WEBHOOKS))
        tiktok = TikTokClient(http, settings, store, owner.owns)
        sealer = Sealer(settings, settings, kek, producer, writer_name("enricher"))
        enricher = Enricher(settings, producer, tiktok, sealer)
        try:
            await producer.start()
            await tokens.start(producer)
            await import_missing(store, defaults_of(settings), "settings")
            if settings.tiktok_token_file is not None:
                found = read_token_file(settings.tiktok_token_file)
                await import_missing(store, found, str(settings.tiktok_token_file))
            await consumer.start()
            await parked.start()
            log.info("enricher_ready", topic=names(WEBHOOKS))
            loops = [
                asyncio.create_task(consume(consumer, enricher, stop), name="webhooks"),
                asyncio.create_task(consume_parked(parked, enricher, stop), name="parked"),
                asyncio.create_task(refresh_ahead(tiktok, owner, stop), name="refresh"),
                asyncio.create_task(keep_shared(settings, tiktok, stop), name="budget"),
            ]
            await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            stop.set()
            await asyncio.gather(*loops)  # raises a loop's error after both ended
        finally:
            await parked.stop()
            await consumer.stop()
            await tokens.stop()
            await producer.stop()
            await kek.close()


class Ownership:
    """Which token keys this replica refreshes: those whose partition of the webhooks
    topic (keyed by shop id) its webhooks consumer holds now. Shops' webhooks and their
    refreshes then happen in one replica, and two replicas never refresh one shop."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self.consumer, self.topic = consumer, topic
        self.partitioner = DefaultPartitioner()

    def owns(self, key: str) -> bool:
        partitions = sorted(self.consumer.partitions_for_topic(self.topic) or ())
        if not partitions:
            return False
        mine = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        return self.partitioner(key.encode(), partitions, partitions) in mine


REFRESH_CHECK_S = 30.0


async def refresh_ahead(tiktok: TikTokClient, owner: Ownership, stop: asyncio.Event) -> None:
    """Refresh the tokens this replica owns before they expire (and once, tokens whose
    expiry is not known yet), so that no call waits on a refresh."""
    tried: set[str] = set()
    settings = tiktok.settings
    while not stop.is_set():
        for key, auth in list(tiktok.store.shops.items()):
            unknown = auth.access_expires_at == 0 and key not in tried
            due = auth.needs_refresh(settings.tiktok_refresh_before_s, time.time())
            if auth.unauthorized or not (unknown or due) or not owner.owns(key):
                continue
            tried.add(key)
            try:
                await tiktok.refresh_tokens(key, stale=auth)
            except (TikTokError, ShopUnauthorized) as err:
                log.warning("tiktok_refresh_ahead_failed", shop_key=key, error=str(err))
        every = REFRESH_CHECK_S if owner.consumer.assignment() else 1.0  # not joined yet
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
