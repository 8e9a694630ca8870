"""The receiver against a real broker: 200 only once the event is in Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from schemas.alert import Alert
from schemas.box import BoxClosed
from schemas.buyer import Erasure
from schemas.codec import encode
from schemas.common import now_ms
from schemas.rejected import RejectedRecord
from schemas.topics import ALERTS, BOXES, ERASURES, WEBHOOKS, WEBHOOKS_REJECTED
from schemas.webhook import WebhookRecord
from tests.integration.kafka_helpers import consume, models
from tests.unit.factories import box
from workers.receiver.app import create_app
from workers.settings import Settings
from workers.tiktok.signing import webhook_signature


def signed(settings: Settings, body: bytes) -> dict[str, str]:
    secret = settings.tiktok_app_secret.get_secret_value()
    return {"Authorization": webhook_signature(settings.tiktok_app_key, secret, body)}


def envelope(notification: str = "ntf-1", type: int = 1) -> dict[str, Any]:
    return {
        "type": type,
        "tts_notification_id": notification,
        "shop_id": "7495",
        "timestamp": int(time.time()),
        "data": {"order_id": "576", "order_status": "AWAITING_SHIPMENT"},
    }


@pytest.fixture
async def receiver(make_settings: Callable[..., Settings], serve: Any) -> tuple[str, Settings]:
    settings = make_settings(
        receiver_max_body_bytes=4096,
        tiktok_webhook_apps={"second-app": "second-secret"},
        ingest_tokens={
            "oms": "oms-token-0123456789-0123456789-x",
            "packing": "packing-token-0123456789-0123456789",
        },
    )
    return await serve(create_app(settings)), settings


async def test_signed_webhook_is_stored_before_200(receiver: tuple[str, Settings]) -> None:
    url, settings = receiver
    body = orjson.dumps({**envelope(), "unknown_field": "kept"})
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/webhooks/tiktok", data=body, headers=signed(settings, body)
        ) as r:
            assert r.status == 200
            assert await r.read() == b""
    stored = models(WebhookRecord, await consume(settings, WEBHOOKS, lambda v: len(v) >= 1))
    assert [s.event_id for s in stored] == ["ntf-1"]
    assert stored[0].webhook.data["order_id"] == "576"
    assert stored[0].webhook.model_extra == {"unknown_field": "kept"}


@pytest.mark.parametrize("header", [None, "", "00" * 32])
async def test_bad_or_missing_signature_is_401_and_not_stored(
    receiver: tuple[str, Settings], header: str | None
) -> None:
    url, settings = receiver
    headers = {} if header is None else {"Authorization": header}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/webhooks/tiktok", data=orjson.dumps(envelope()), headers=headers
        ) as r:
            assert r.status == 401
            assert await r.read() == b""
    assert await consume(settings, WEBHOOKS, lambda v: False, timeout_s=1.5) == []


async def test_signed_invalid_envelope_is_400_naming_the_field_and_kept(
    receiver: tuple[str, Settings],
) -> None:
    url, settings = receiver
    bad = envelope()
    del bad["shop_id"]
    body = orjson.dumps(bad)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/webhooks/tiktok", data=body, headers=signed(settings, body)
        ) as r:
            assert r.status == 400
            answer = await r.json()
    assert answer["fields"] == [{"field": "shop_id", "problem": "Field required"}]
    kept = models(RejectedRecord, await consume(settings, WEBHOOKS_REJECTED, lambda v: len(v) >= 1))
    assert kept[0].original() == body
    assert "shop_id" in kept[0].reason


async def test_signed_non_json_is_400(receiver: tuple[str, Settings]) -> None:
    url, settings = receiver
    body = b"\x00not json"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/webhooks/tiktok", data=body, headers=signed(settings, body)
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"] == "body is not valid JSON"


async def test_body_over_the_cap_is_413(receiver: tuple[str, Settings]) -> None:
    url, settings = receiver
    body = orjson.dumps({**envelope(), "pad": "x" * 5000})
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/webhooks/tiktok", data=body, headers=signed(settings, body)
        ) as r:
            assert r.status == 413
            assert (await r.json())["fields"] == [{"field": "(body)", "problem": "over 4096 bytes"}]


async def test_boxes_need_the_bearer_token_and_valid_fields(receiver: tuple[str, Settings]) -> None:
    url, settings = receiver
    good = encode(box("B1", {"A": 2}))
    auth = {"Authorization": "Bearer ingest-test-token"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/boxes", data=good) as r:
            assert r.status == 401
        async with http.post(
            f"{url}/v1/boxes", data=good, headers={"Authorization": "Bearer nope"}
        ) as r:
            assert r.status == 401
        bad = good.replace(b'"quantity":2', b'"quantity":-1')
        async with http.post(f"{url}/v1/boxes", data=bad, headers=auth) as r:
            assert r.status == 400
            assert (await r.json())["fields"][0]["field"] == "items.0.quantity"
        async with http.post(f"{url}/v1/boxes", data=good, headers=auth) as r:
            assert r.status == 202
            assert (await r.json())["event_id"] == "ev-B1"
    stored = models(BoxClosed, await consume(settings, BOXES, lambda v: len(v) >= 1))
    assert [b.box_id for b in stored] == ["B1"]


async def test_void_is_refused_with_where_to_void_instead(receiver: tuple[str, Settings]) -> None:
    url, _ = receiver
    auth = {"Authorization": "Bearer ingest-test-token"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/labels/job-1/void", headers=auth) as r:
            assert r.status == 409
            body = await r.json()
    assert body["error"] == "void_not_supported" and "TikTok Seller Center" in body["detail"]


async def test_healthz(receiver: tuple[str, Settings]) -> None:
    url, _ = receiver
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as r:
        assert r.status == 200


async def post_webhook(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/webhooks/tiktok", data=body, headers=headers) as r:
            return r.status, await r.read()


@pytest.mark.parametrize(
    ("age_s", "problem"),
    [(25 * 3600, "older than the freshness window"), (-3600, "in the future")],
)
async def test_stale_or_future_webhook_is_400_and_kept(
    receiver: tuple[str, Settings], age_s: int, problem: str
) -> None:
    url, settings = receiver
    body = orjson.dumps({**envelope("ntf-old"), "timestamp": int(time.time()) - age_s})
    status, answer = await post_webhook(url, body, signed(settings, body))
    assert status == 400
    assert orjson.loads(answer)["fields"][0]["field"] == "timestamp"
    assert problem in orjson.loads(answer)["fields"][0]["problem"]
    kept = models(RejectedRecord, await consume(settings, WEBHOOKS_REJECTED, lambda v: len(v) >= 1))
    assert kept[0].original() == body and problem in kept[0].reason
    assert await consume(settings, WEBHOOKS, lambda v: False, timeout_s=1.0) == []


async def test_a_redelivered_notification_is_200_but_stored_once(
    receiver: tuple[str, Settings],
) -> None:
    url, settings = receiver
    body = orjson.dumps(envelope("ntf-dup"))
    first = [post_webhook(url, body, signed(settings, body)) for _ in range(4)]
    answers = await asyncio.gather(*first)  # concurrent redeliveries share one write
    answers.append(await post_webhook(url, body, signed(settings, body)))
    other = orjson.dumps(envelope("ntf-other"))
    answers.append(await post_webhook(url, other, signed(settings, other)))
    assert answers == [(200, b"")] * 6
    stored = models(WebhookRecord, await consume(settings, WEBHOOKS, lambda v: len(v) >= 3, 3.0))
    assert sorted(s.event_id for s in stored) == ["ntf-dup", "ntf-other"]
    metrics = await get_text(url, "/metrics")
    assert "parcelflow_receiver_duplicate_webhooks_total 4.0" in metrics


async def test_webhooks_of_a_second_tiktok_app_are_accepted(
    receiver: tuple[str, Settings],
) -> None:
    url, settings = receiver
    body = orjson.dumps(envelope("ntf-app2"))
    good = {"Authorization": webhook_signature("second-app", "second-secret", body)}
    crossed = {"Authorization": webhook_signature("second-app", "test-app-secret", body)}
    assert await post_webhook(url, body, crossed) == (401, b"")
    assert await post_webhook(url, body, good) == (200, b"")
    stored = models(WebhookRecord, await consume(settings, WEBHOOKS, lambda v: len(v) >= 1))
    assert [(s.event_id, s.app_key) for s in stored] == [("ntf-app2", "second-app")]
    assert "parcelflow_receiver_bad_signatures_total 1.0" in await get_text(url, "/metrics")


async def test_every_type_is_kept_and_authorization_webhooks_raise_alerts(
    receiver: tuple[str, Settings],
) -> None:
    url, settings = receiver
    for notification, kind in [("ntf-t99", 99), ("ntf-t6", 6), ("ntf-t7", 7), ("ntf-t4", 4)]:
        body = orjson.dumps(envelope(notification, type=kind))
        assert await post_webhook(url, body, signed(settings, body)) == (200, b"")
    stored = models(WebhookRecord, await consume(settings, WEBHOOKS, lambda v: len(v) >= 4))
    assert sorted(s.webhook.type for s in stored) == [4, 6, 7, 99]
    alerts = models(Alert, await consume(settings, ALERTS, lambda v: len(v) >= 2))
    assert sorted((a.kind, a.shop_id) for a in alerts) == [
        ("authorization_expiring", "7495"),
        ("seller_deauthorized", "7495"),
    ]
    # the de-authorization also asks for the shop's erasure, in effect after the grace
    [erasure] = models(Erasure, await consume(settings, ERASURES, lambda v: len(v) >= 1))
    assert (erasure.scope, erasure.shop_id, erasure.principal) == (
        "shop",
        "7495",
        "tiktok:deauthorization",
    )
    grace_ms = int(settings.deauthorized_erase_after_s * 1000)
    assert erasure.not_before_ms == erasure.at_ms + grace_ms > now_ms()
    metrics = await get_text(url, "/metrics")
    assert 'parcelflow_receiver_webhooks_total{type="99"} 1.0' in metrics
    assert (
        'parcelflow_receiver_authorization_alerts_total{kind="seller_deauthorized",'
        'shop_id="7495"} 1.0'
    ) in metrics


async def test_each_upstream_system_has_its_own_token(receiver: tuple[str, Settings]) -> None:
    url, settings = receiver
    async with aiohttp.ClientSession() as http:
        for token, box_id in [
            ("oms-token-0123456789-0123456789-x", "B-oms"),
            ("packing-token-0123456789-0123456789", "B-pack"),
        ]:
            body = encode(box(box_id, {"A": 1}))
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{url}/v1/boxes", data=body, headers=headers) as r:
                assert r.status == 202
    stored = models(BoxClosed, await consume(settings, BOXES, lambda v: len(v) >= 2))
    assert sorted(b.box_id for b in stored) == ["B-oms", "B-pack"]


async def get_text(url: str, path: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as r:
        assert r.status == 200
        return await r.text()


async def test_readyz_metrics_and_openapi(receiver: tuple[str, Settings]) -> None:
    url, settings = receiver
    body = orjson.dumps(envelope("ntf-metrics"))
    assert (await post_webhook(url, body, signed(settings, body)))[0] == 200
    assert orjson.loads(await get_text(url, "/readyz")) == {"status": "ready"}
    metrics = await get_text(url, "/metrics")
    assert (
        'parcelflow_receiver_requests_total{route="/webhooks/tiktok",status="200"} 1.0' in metrics
    )
    assert "parcelflow_receiver_broker_ack_seconds_count 1.0" in metrics
    doc = orjson.loads(await get_text(url, "/openapi.json"))
    assert {"/webhooks/tiktok", "/v1/orders", "/v1/boxes", "/readyz"} <= set(doc["paths"])
    webhook = doc["components"]["schemas"]["TikTokWebhook"]
    assert set(webhook["required"]) == {
        "type",
        "tts_notification_id",
        "shop_id",
        "timestamp",
        "data",
    }


async def test_the_bearer_scheme_is_case_insensitive_and_a_bare_token_is_refused(
    receiver: tuple[str, Settings],
) -> None:
    url, _ = receiver
    good = encode(box("BEARER-1", {"A": 1}))
    answers = {}
    async with aiohttp.ClientSession() as http:
        for header in (
            "bearer oms-token-0123456789-0123456789-x",
            "BEARER oms-token-0123456789-0123456789-x",
            "oms-token-0123456789-0123456789-x",
            "Bearer",
            "Basic x",
        ):
            async with http.post(
                f"{url}/v1/boxes", data=good, headers={"Authorization": header}
            ) as r:
                answers[header] = r.status
    assert answers == {
        "bearer oms-token-0123456789-0123456789-x": 202,
        "BEARER oms-token-0123456789-0123456789-x": 202,
        "oms-token-0123456789-0123456789-x": 401,
        "Bearer": 401,
        "Basic x": 401,
    }


async def test_half_open_and_idle_connections_are_closed(
    make_settings: Callable[..., Settings],
) -> None:
    """Slow clients that never finish their headers (or never send any) do not pile up."""
    from aiohttp import web

    from workers.receiver.app import server_options

    settings = make_settings(receiver_idle_timeout_s=1.0)
    runner = web.AppRunner(create_app(settings), **server_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    clients = []
    try:
        for n in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if n % 2:  # half a request: a request line and one header, never the blank line
                writer.write(b"POST /v1/boxes HTTP/1.1\r\nHost: x\r\n")
                await writer.drain()
            clients.append((reader, writer))
        started = time.monotonic()
        async with asyncio.timeout(10):
            closed = [await reader.read() for reader, _ in clients]  # b"" once closed
        assert closed == [b""] * 50
        assert time.monotonic() - started < 6
    finally:
        for _, writer in clients:
            writer.close()
        await runner.cleanup()
