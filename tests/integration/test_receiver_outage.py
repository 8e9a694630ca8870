"""The broker goes away under a running receiver: 503 within TikTok's 3 s, never 200."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from devstack.broker.embedded import EmbeddedBroker
from tests.integration.test_receiver import envelope, signed
from workers.receiver.app import create_app
from workers.settings import Settings


async def test_503_within_three_seconds_when_the_broker_stops(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    with EmbeddedBroker() as broker:  # a broker of its own: this test stops it
        settings = make_settings(
            kafka_bootstrap=broker.bootstrap, kafka_embedded=True, receiver_ack_timeout_s=1.5
        )
        url = await serve(create_app(settings))
        async with aiohttp.ClientSession() as http:
            before = orjson.dumps(envelope("ntf-before"))
            async with http.post(
                f"{url}/webhooks/tiktok", data=before, headers=signed(settings, before)
            ) as r:
                assert r.status == 200
            broker.stop()
            answers = []
            for n in range(3):
                body = orjson.dumps(envelope(f"ntf-during-{n}"))
                started = time.monotonic()
                async with http.post(
                    f"{url}/webhooks/tiktok", data=body, headers=signed(settings, body)
                ) as r:
                    answers.append((r.status, r.headers.get("Retry-After")))
                assert time.monotonic() - started < 3.0, "TikTok gives up after 3 s"
            async with http.get(f"{url}/readyz") as r:
                assert r.status == 503
            async with http.get(f"{url}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{url}/metrics") as r:
                assert "parcelflow_receiver_broker_unavailable_total 3.0" in await r.text()
        assert answers == [(503, "5")] * 3
