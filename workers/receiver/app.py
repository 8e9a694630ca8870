"""The receiver's aiohttp app.

A 200 (or 202) means the event is durably in Kafka: the broker acked the write with
acks=all. When the broker does not ack within ``receiver_ack_timeout_s`` the answer is
503 and TikTok retries; nothing a client sends produces any other 5xx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from schemas.alert import Alert
from schemas.box import BoxClosed
from schemas.buyer import Erasure, ErasureRequest
from schemas.codec import encode
from schemas.common import derived_id, now_ms
from schemas.order import Order, OrderPosted
from schemas.topics import ALERTS, BOXES, ERASURES, ORDERS, WEBHOOKS, WEBHOOKS_REJECTED
from schemas.webhook import TikTokWebhook, WebhookRecord, WebhookType
from workers import auth
from workers.auth import PRINCIPAL, Principal, Principals, protect
from workers.buyer.erase import Target, logged, requested
from workers.buyer.kek import key_service
from workers.buyer.keys import Sealer
from workers.errors import ConfigError
from workers.kafka import (
    Topics,
    make_producer,
    max_value_bytes,
    rejected_record,
    writer_name,
)
from workers.labeler.operations import VOID_REFUSAL
from workers.loop import hard_stop_after, new_event_loop
from workers.receiver import labels
from workers.receiver.dedupe import Dedupe
from workers.receiver.keys import (
    APPS,
    DEDUPE,
    METRICS,
    PRINCIPALS,
    PRODUCER,
    SEALER,
    SETTINGS,
)
from workers.receiver.metrics import ReceiverMetrics
from workers.receiver.openapi import document
from workers.receiver.validate import Invalid, validate
from workers.settings import ReceiverSettings
from workers.tiktok.signing import verify_webhook
from workers.topics import ensure_topics

log = structlog.get_logger(__name__)

AUTHORIZATION_ALERTS = {
    WebhookType.SELLER_DEAUTHORIZATION: (
        "seller_deauthorized",
        "The seller deauthorized the app: no more order detail for this shop until it "
        "authorizes again.",
    ),
    WebhookType.UPCOMING_AUTHORIZATION_EXPIRATION: (
        "authorization_expiring",
        "The shop's authorization expires soon: renew it in TikTok Shop Seller Center.",
    ),
}


def error(status: int, invalid: Invalid) -> web.Response:
    return web.json_response(
        invalid.body(), status=status, dumps=lambda o: orjson.dumps(o).decode()
    )


class Unavailable(Exception):
    pass


async def durable_send(app: web.Application, writes: list[tuple[str, str, bytes]]) -> None:
    """Write (topic, key, value)s and wait for every ack, or raise Unavailable in budget."""
    settings = app[SETTINGS]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.receiver_ack_timeout_s):
            acks = [
                await app[PRODUCER].send(topic, value, key=key.encode())
                for topic, key, value in writes
            ]
            for ack in acks:
                await ack
    except (TimeoutError, KafkaError) as exc:
        app[METRICS].broker_unavailable.inc()
        log.warning("broker_unavailable", topics=[w[0] for w in writes], error=type(exc).__name__)
        raise Unavailable from exc
    app[METRICS].ack_seconds.observe(time.perf_counter() - started)


def unavailable() -> web.Response:
    return web.json_response(
        {"error": "broker unavailable, retry later"}, status=503, headers={"Retry-After": "5"}
    )


class TooSlow(Exception):
    """The body did not arrive within the request's deadline."""


async def read_body(request: web.Request) -> bytes:
    """The whole body, or TooSlow past ``receiver_request_timeout_s`` (a body dripped a
    byte at a time must not hold a connection)."""
    try:
        async with asyncio.timeout(request.app[SETTINGS].receiver_request_timeout_s):
            return await request.read()
    except TimeoutError:
        raise TooSlow from None


def signing_app(apps: Mapping[str, str], raw: bytes, signature: str) -> str | None:
    """The app key whose secret signed ``raw``, or None. Each compare is constant-time."""
    if not signature:
        return None
    matches = [key for key, secret in apps.items() if verify_webhook(key, secret, raw, signature)]
    return matches[0] if matches else None


def freshness_problem(settings: ReceiverSettings, webhook: TikTokWebhook) -> Invalid | None:
    age = time.time() - webhook.timestamp
    if age > settings.receiver_max_webhook_age_s:
        problem = f"older than the freshness window ({settings.receiver_max_webhook_age_s:g} s)"
    elif -age > settings.receiver_max_clock_skew_s:
        problem = f"more than {settings.receiver_max_clock_skew_s:g} s in the future"
    else:
        return None
    return Invalid("stale or replayed webhook", [{"field": "timestamp", "problem": problem}])


def authorization_alert(record: WebhookRecord) -> Alert | None:
    hook = record.webhook
    if hook.type not in AUTHORIZATION_ALERTS:
        return None
    kind, message = AUTHORIZATION_ALERTS[WebhookType(hook.type)]
    return Alert(
        event_id=derived_id("alert", record.event_id),
        kind=kind,
        shop_id=hook.shop_id,
        message=message,
        details=hook.data,
        at_ms=record.received_at_ms,
    )


def deauthorization_erasure(record: WebhookRecord, after_s: float) -> Erasure:
    """A de-authorization's erasure of the shop's buyer data, in effect ``after_s`` later."""
    request_id = derived_id("deauthorization", record.event_id)
    return Erasure(
        event_id=request_id,
        request_id=request_id,
        scope="shop",
        shop_id=record.webhook.shop_id,
        principal="tiktok:deauthorization",
        reason="the seller de-authorized the app (TikTok webhook type 6)",
        at_ms=record.received_at_ms,
        not_before_ms=record.received_at_ms + int(after_s * 1000),
    )


async def tiktok_webhook(request: web.Request) -> web.Response:
    app = request.app
    settings, metrics = app[SETTINGS], app[METRICS]
    names = Topics(settings)
    raw = await read_body(request)
    app_key = signing_app(app[APPS], raw, request.headers.get("Authorization", ""))
    if app_key is None:
        metrics.bad_signatures.inc()
        log.warning("webhook_bad_signature", bytes=len(raw))
        return web.Response(status=401)
    webhook = validate(TikTokWebhook, raw)
    if not isinstance(webhook, Invalid):
        webhook = freshness_problem(settings, webhook) or webhook
    try:
        if isinstance(webhook, Invalid):
            record = rejected_record(
                source_topic="http:/webhooks/tiktok",
                value=raw,
                reason=webhook.reason,
                worker="receiver",
                max_bytes=max_value_bytes(settings),
            )
            await durable_send(app, [(names(WEBHOOKS_REJECTED), "", encode(record))])
            metrics.rejected.labels("/webhooks/tiktok", webhook.error).inc()
            return error(400, webhook)
        stored = WebhookRecord(
            event_id=webhook.tts_notification_id,
            received_at_ms=now_ms(),
            app_key=app_key,
            webhook=webhook,
        )
        writes = [(names(WEBHOOKS), webhook.shop_id, encode(stored))]
        alert = authorization_alert(stored)
        if alert is not None:
            writes.append((names(ALERTS), alert.shop_id, encode(alert)))
        if webhook.type == WebhookType.SELLER_DEAUTHORIZATION and webhook.shop_id:
            erasure = deauthorization_erasure(stored, settings.deauthorized_erase_after_s)
            writes.append((names(ERASURES), webhook.shop_id, encode(erasure)))
        wrote = await app[DEDUPE].once(stored.event_id, lambda: durable_send(app, writes))
    except Unavailable:
        return unavailable()
    if not wrote:
        metrics.duplicates.inc()
        log.info("webhook_duplicate", event_id=stored.event_id)
        return web.Response(status=200)
    metrics.webhooks.labels(str(webhook.type)).inc()
    if alert is not None:
        metrics.authorization_alerts.labels(alert.kind, alert.shop_id).inc()
        log.warning("shop_authorization_alert", kind=alert.kind, shop_id=alert.shop_id)
    # one line per webhook at debug only: at thousands per second, /metrics counts them
    log.debug(
        "webhook_stored",
        event_id=stored.event_id,
        type=webhook.type,
        shop_id=webhook.shop_id,
        order_id=str(webhook.data.get("order_id", ""))[:128],
    )
    return web.Response(status=200)


def warehouse_problem(
    principal: Principal, event: BoxClosed | OrderPosted
) -> tuple[int, Invalid] | BoxClosed | OrderPosted:
    """The box or order with its warehouse (filled in for a principal of one warehouse),
    or why the principal may not post it: 403 for a foreign warehouse, 400 when it must
    say. An order is always from an upstream system (never "tiktok": TikTok's orders come
    from the enricher)."""
    kind = "boxes" if isinstance(event, BoxClosed) else "orders"
    if isinstance(event, OrderPosted):
        event = event.model_copy(update={"source": "upstream"})
    if event.warehouse_id:
        if principal.in_warehouse(event.warehouse_id):
            return event
        problem = f"principal {principal.name} may not post {kind} of this warehouse"
        return 403, Invalid("forbidden", [{"field": "warehouse_id", "problem": problem}])
    if principal.only_warehouse is not None:
        return event.model_copy(update={"warehouse_id": principal.only_warehouse})
    if principal.warehouses is None:
        return event  # a principal of every warehouse: a box's warehouse is its order's
    problem = f"required: this principal posts {kind} for several warehouses"
    name = type(event).__name__
    return 400, Invalid(f"invalid {name}", [{"field": "warehouse_id", "problem": problem}])


async def sealed(app: web.Application, event: BoxClosed | OrderPosted) -> BoxClosed | Order:
    """What is stored of an event: an order's recipient sealed (``workers.buyer``)."""
    if isinstance(event, BoxClosed):
        return event
    try:
        async with asyncio.timeout(app[SETTINGS].receiver_ack_timeout_s):
            recipient = await app[SEALER].seal(event.shop_id, event.order_id, event.recipient)
    except (TimeoutError, KafkaError) as exc:  # its new data key could not be stored
        raise Unavailable(type(exc).__name__) from exc
    return event.sealed(recipient)


def ingest(
    model: type[OrderPosted] | type[BoxClosed], topic_of: Callable[[Topics], str]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        event: BaseModel | Invalid = validate(model, await read_body(request))
        if isinstance(event, Invalid):
            request.app[METRICS].rejected.labels(request.path, event.error).inc()
            return error(400, event)
        assert isinstance(event, OrderPosted | BoxClosed)  # noqa: S101 (narrowing for mypy)
        checked = warehouse_problem(principal, event)
        if isinstance(checked, tuple):
            status, invalid = checked
            request.app[METRICS].rejected.labels(request.path, invalid.error).inc()
            kind = "box" if isinstance(event, BoxClosed) else "order"
            log.warning(f"{kind}_refused", principal=principal.name, status=status)
            return error(status, invalid)
        topic = topic_of(Topics(request.app[SETTINGS]))
        try:
            stored = await sealed(request.app, checked)
            await durable_send(request.app, [(topic, stored.order_id, encode(stored))])
        except Unavailable:
            return unavailable()
        event = checked
        log.debug(
            "event_stored",
            topic=topic,
            event_id=event.event_id,
            order_id=event.order_id,
            box_id=event.box_id if isinstance(event, BoxClosed) else None,
            principal=principal.name,
        )
        return web.json_response({"status": "accepted", "event_id": event.event_id}, status=202)

    return handler


async def void_label(request: web.Request) -> web.Response:
    """TikTok Shop labels cannot be voided through Shipium: a clear refusal, never a 5xx."""
    return web.json_response(
        {
            "error": "void_not_supported",
            "job_id": request.match_info["job_id"],
            "detail": VOID_REFUSAL,
        },
        status=409,
    )


async def erasure(request: web.Request) -> web.Response:
    """``POST /v1/erasures`` (operator): erase an order's or a shop's buyer data
    (``workers.buyer.erase``); the erasure record."""
    asked = validate(ErasureRequest, await read_body(request))
    if isinstance(asked, Invalid):
        return error(400, asked)
    order_id, shop_id, reason = asked.order_id or None, asked.shop_id or None, asked.reason
    if (order_id is None) == (shop_id is None):
        problem = "give exactly one of order_id and shop_id"
        return error(
            400, Invalid("invalid ErasureRequest", [{"field": "order_id", "problem": problem}])
        )
    target = Target("order", order_id) if order_id else Target("shop", shop_id or "")
    erasure = requested(target, request[PRINCIPAL].name, reason)
    topic = Topics(request.app[SETTINGS])(ERASURES)
    try:
        await durable_send(request.app, [(topic, target.ident, encode(erasure))])
    except Unavailable:
        return unavailable()
    logged(erasure)
    return web.json_response(erasure.model_dump(), status=202)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "worker": "receiver"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the broker answers a metadata request within the ack budget."""
    try:
        async with asyncio.timeout(request.app[SETTINGS].receiver_ack_timeout_s):
            await request.app[PRODUCER].client.fetch_all_metadata()
    except (TimeoutError, KafkaError) as exc:
        return web.json_response(
            {"status": "broker unreachable", "error": type(exc).__name__}, status=503
        )
    return web.json_response({"status": "ready"})


async def metrics_page(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    doc = document(request.app[SETTINGS].receiver_max_body_bytes)
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


@web.middleware
async def count_and_shape(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count every answer by route and status; answer 413 with a JSON body."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    counter = request.app[METRICS].requests
    try:
        response = await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].receiver_max_body_bytes
        counter.labels(route, "413").inc()
        return error(
            413, Invalid("body too large", [{"field": "(body)", "problem": f"over {limit} bytes"}])
        )
    except TooSlow:
        counter.labels(route, "408").inc()
        deadline = request.app[SETTINGS].receiver_request_timeout_s
        response = error(
            408,
            Invalid(
                "request timeout", [{"field": "(body)", "problem": f"not whole in {deadline:g} s"}]
            ),
        )
        response.force_close()
        return response
    except web.HTTPException as exc:
        counter.labels(route, str(exc.status)).inc()
        raise
    except asyncio.CancelledError:
        raise  # the client went away
    except Exception as exc:  # never a 500: counted, logged, a retriable 503
        counter.labels(route, "503").inc()
        log.exception("request_failed", route=route, error=type(exc).__name__)
        return web.json_response(
            {"error": "the request could not be handled; retry later"},
            status=503,
            headers={"Retry-After": "5"},
        )
    counter.labels(route, str(response.status)).inc()
    return response


async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    await ensure_topics(settings)
    producer = make_producer(
        settings,
        linger_ms=settings.receiver_linger_ms,
        request_timeout_ms=max(1000, int(settings.receiver_ack_timeout_s * 1000)),
    )
    await producer.start()
    app[PRODUCER] = producer
    kek = key_service(settings)
    app[SEALER] = Sealer(settings, settings, kek, producer, writer_name("receiver"))
    yield
    await producer.stop()
    await kek.close()


def tiktok_apps(settings: ReceiverSettings) -> dict[str, str]:
    apps = {key: secret.get_secret_value() for key, secret in settings.tiktok_webhook_apps.items()}
    if settings.tiktok_app_key:
        apps[settings.tiktok_app_key] = settings.tiktok_app_secret.get_secret_value()
    return {key: secret for key, secret in apps.items() if key and secret}


def check_settings(settings: ReceiverSettings) -> dict[str, str]:
    """The TikTok apps whose webhooks the receiver takes; ConfigError for settings it
    cannot start with."""
    apps = tiktok_apps(settings)
    if not apps:
        raise ConfigError(
            "PARCELFLOW_TIKTOK_APP_KEY and PARCELFLOW_TIKTOK_APP_SECRET (or "
            "PARCELFLOW_TIKTOK_WEBHOOK_APPS) must be set: the receiver verifies every "
            "webhook's signature"
        )
    if settings.ingest_open and not auth.is_loopback(settings.receiver_host):
        raise ConfigError(
            "PARCELFLOW_INGEST_OPEN lets anyone post orders and read labels: it is refused "
            "unless PARCELFLOW_RECEIVER_HOST is a loopback address"
        )
    return apps


def create_app(settings: ReceiverSettings) -> web.Application:
    apps = check_settings(settings)
    app = web.Application(
        client_max_size=settings.receiver_max_body_bytes,
        middlewares=[count_and_shape, auth.middleware],
    )
    principals = Principals.from_settings(settings)
    app[SETTINGS] = settings
    app[APPS] = apps
    app[PRINCIPALS] = principals
    app[auth.IDENTIFY] = lambda request: principals.from_header(
        request.headers.get("Authorization")
    )
    app[METRICS] = ReceiverMetrics()
    app[DEDUPE] = Dedupe(settings.receiver_dedupe_window_s, settings.receiver_dedupe_max_ids)
    app.cleanup_ctx.append(kafka_ctx)
    app.router.add_post("/webhooks/tiktok", tiktok_webhook)  # signed: no principal
    orders = ingest(OrderPosted, lambda n: n(ORDERS))
    protect(app, app.router.add_post("/v1/orders", orders), "orders")
    protect(app, app.router.add_post("/v1/boxes", ingest(BoxClosed, lambda n: n(BOXES))), "boxes")
    protect(app, app.router.add_post("/v1/labels/{job_id}/void", void_label), "operator")
    protect(app, app.router.add_post("/v1/erasures", erasure), "operator")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/openapi.json", openapi)
    labels.add_routes(app)
    return app


def server_options(settings: ReceiverSettings) -> dict[str, Any]:
    """How the HTTP server treats connections: one that has not sent a whole request within
    the idle timeout of opening (or of its last answer) is closed."""
    return {"keepalive_timeout": settings.receiver_idle_timeout_s}


def run(settings: ReceiverSettings) -> None:
    app = create_app(settings)

    async def hard_stop(app: web.Application) -> None:  # a broker gone may hang a flush
        hard_stop_after(settings.worker_stop_timeout_s)

    app.on_shutdown.append(hard_stop)
    web.run_app(
        app,
        host=settings.receiver_host,
        port=settings.receiver_port,
        reuse_port=settings.receiver_reuse_port or None,
        print=lambda _: log.info("receiver_ready", port=settings.receiver_port),
        access_log=None,
        loop=new_event_loop(),
        shutdown_timeout=settings.worker_stop_timeout_s / 2,
        **server_options(settings),
    )
