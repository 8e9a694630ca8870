"""The receiver's aiohttp app.

A 200 (or 202) means the event is durably in Kafka: the broker acked the write with
acks=all. When the broker does not ack within ``receiver_ack_timeout_s`` the answer is
503 and TikTok retries; nothing a client sends produces any other 5xx.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from schemas.box import BoxClosed
from schemas.codec import encode
from schemas.common import now_ms
from schemas.order import Order
from schemas.topics import BOXES, ORDERS, WEBHOOKS, WEBHOOKS_REJECTED
from schemas.webhook import TikTokWebhook, WebhookRecord
from workers.kafka import Topics, ensure_topics, make_producer, rejected_record
from workers.labeler.operations import VOID_REFUSAL
from workers.receiver.validate import Invalid, validate
from workers.settings import Settings
from workers.tiktok.signing import verify_webhook

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
PRODUCER = web.AppKey("producer", AIOKafkaProducer)


def error(status: int, invalid: Invalid) -> web.Response:
    return web.json_response(
        invalid.body(), status=status, dumps=lambda o: orjson.dumps(o).decode()
    )


class Unavailable(Exception):
    pass


async def durable_send(app: web.Application, topic: str, key: str, value: bytes) -> None:
    """Write and wait for the broker's ack, or raise Unavailable within the budget."""
    settings = app[SETTINGS]
    try:
        async with asyncio.timeout(settings.receiver_ack_timeout_s):
            await app[PRODUCER].send_and_wait(topic, value, key=key.encode())
    except (TimeoutError, KafkaError) as exc:
        log.warning("broker_unavailable", topic=topic, error=type(exc).__name__)
        raise Unavailable from exc


def unavailable() -> web.Response:
    return web.json_response(
        {"error": "broker unavailable, retry later"}, status=503, headers={"Retry-After": "5"}
    )


async def tiktok_webhook(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    names = Topics(settings)
    raw = await request.read()
    secret = settings.tiktok_app_secret.get_secret_value()
    signature = request.headers.get("Authorization", "")
    if not signature or not verify_webhook(settings.tiktok_app_key, secret, raw, signature):
        log.warning("webhook_bad_signature", bytes=len(raw))
        return web.Response(status=401)
    webhook = validate(TikTokWebhook, raw)
    try:
        if isinstance(webhook, Invalid):
            record = rejected_record(
                source_topic="http:/webhooks/tiktok",
                value=raw,
                reason=webhook.reason,
                worker="receiver",
            )
            await durable_send(app, names(WEBHOOKS_REJECTED), "", encode(record))
            return error(400, webhook)
        stored = WebhookRecord(
            event_id=webhook.tts_notification_id,
            received_at_ms=now_ms(),
            app_key=settings.tiktok_app_key,
            webhook=webhook,
        )
        await durable_send(app, names(WEBHOOKS), webhook.shop_id, encode(stored))
    except Unavailable:
        return unavailable()
    log.info("webhook_stored", event_id=stored.event_id, type=webhook.type, shop_id=webhook.shop_id)
    return web.Response(status=200)


def authorized(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    if settings.ingest_token is None:
        return settings.ingest_open
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    expected = settings.ingest_token.get_secret_value()
    return hmac.compare_digest(given.encode(), expected.encode())


def ingest(
    model: type[Order] | type[BoxClosed], topic_of: Callable[[Topics], str]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        event: BaseModel | Invalid = validate(model, await request.read())
        if isinstance(event, Invalid):
            return error(400, event)
        assert isinstance(event, Order | BoxClosed)  # noqa: S101 (narrowing for mypy)
        try:
            await durable_send(
                request.app, topic_of(Topics(request.app[SETTINGS])), event.order_id, encode(event)
            )
        except Unavailable:
            return unavailable()
        return web.json_response({"status": "accepted", "event_id": event.event_id}, status=202)

    return handler


async def void_label(request: web.Request) -> web.Response:
    """TikTok Shop labels cannot be voided through Shipium: a clear refusal, never a 5xx."""
    if not authorized(request):
        return web.json_response({"error": "missing or wrong bearer token"}, status=401)
    return web.json_response(
        {
            "error": "void_not_supported",
            "job_id": request.match_info["job_id"],
            "detail": VOID_REFUSAL,
        },
        status=409,
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    await ensure_topics(settings)
    producer = make_producer(
        settings, request_timeout_ms=max(1000, int(settings.receiver_ack_timeout_s * 1000))
    )
    await producer.start()
    app[PRODUCER] = producer
    yield
    await producer.stop()


def create_app(settings: Settings) -> web.Application:
    if not settings.tiktok_app_key or not settings.tiktok_app_secret.get_secret_value():
        raise ValueError(
            "PARCELFLOW_TIKTOK_APP_KEY and PARCELFLOW_TIKTOK_APP_SECRET must be set: the "
            "receiver verifies every webhook's signature"
        )
    app = web.Application(client_max_size=settings.receiver_max_body_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(kafka_ctx)
    app.router.add_post("/webhooks/tiktok", tiktok_webhook)
    app.router.add_post("/v1/orders", ingest(Order, lambda n: n(ORDERS)))
    app.router.add_post("/v1/boxes", ingest(BoxClosed, lambda n: n(BOXES)))
    app.router.add_post("/v1/labels/{job_id}/void", void_label)
    app.router.add_get("/healthz", healthz)
    return app


def run(settings: Settings) -> None:
    web.run_app(
        create_app(settings),
        host=settings.receiver_host,
        port=settings.receiver_port,
        print=None,
        access_log=None,
    )
