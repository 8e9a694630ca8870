"""The receiver against a real broker: 200 only once the event is in Kafka."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from schemas.box import BoxClosed
from schemas.codec import encode
from schemas.rejected import RejectedRecord
from schemas.topics import BOXES, WEBHOOKS, WEBHOOKS_REJECTED
from schemas.webhook import WebhookRecord
from tests.integration.kafka_helpers import consume, models
from tests.unit.factories import box
from workers.receiver.app import create_app
from workers.settings import Settings
from workers.tiktok.signing import webhook_signature


def signed(settings: Settings, body: bytes) -> dict[str, str]:
    secret = settings.tiktok_app_secret.get_secret_value()
    return {"Authorization": webhook_signature(settings.tiktok_app_key, secret, body)}


def envelope(notification: str = "ntf-1") -> dict[str, Any]:
    return {
        "type": 1,
        "tts_notification_id": notification,
        "shop_id": "7495",
        "timestamp": 1_700_000_000,
        "data": {"order_id": "576", "order_status": "AWAITING_SHIPMENT"},
    }


@pytest.fixture
async def receiver(make_settings: Callable[..., Settings], serve: Any) -> tuple[str, Settings]:
    settings = make_settings(receiver_max_body_bytes=4096)
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
