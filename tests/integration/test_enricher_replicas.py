"""Three enricher replicas share the shops' TikTok tokens through tiktok.tokens.v1 while
the simulated TikTok's access tokens expire every few seconds and every refresh token
works once: every order is enriched, no shop ends unauthorized, a refresh is never
raced, and a replica killed mid-run hands its shops over."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.demo_data import make_demo
from schemas.alert import Alert
from schemas.order import Order
from schemas.topics import ALERTS, ORDERS, WEBHOOKS
from tests.integration.kafka_helpers import consume, models, produce, provisioned
from tests.integration.processes import worker_process
from tests.integration.sim import start_simulator
from tests.unit.factories import webhook_record
from workers.kafka import make_producer
from workers.tiktok.client import TikTokClient
from workers.tiktok.tokens import ShopAuth, TokenStore, TokenTopic, shared_tokens

pytestmark = pytest.mark.slow

SHOPS = {f"900{n}": f"ROW_shop{n}" for n in range(1, 7)}  # shop id -> cipher
PER_SHOP = 25
TTL_S = 3.0


async def test_three_replicas_refresh_single_use_tokens_under_traffic(
    make_settings: Callable[..., Any], serve: Any, tmp_path: Path
) -> None:
    base = make_settings()
    url, sim = await start_simulator(serve, base)
    sim.tiktok.token_ttl_s = TTL_S  # every refreshed access token lives 3 s
    settings = make_settings(
        topic_namespace=base.topic_namespace,
        tiktok_api_base=url,
        tiktok_auth_base=url,
        tiktok_refresh_before_s=1.0,
        tiktok_batch_size=5,
        tiktok_max_attempts=4,
        enricher_park_retry_s=1.0,
        topic_partitions=6,
    )
    await provisioned(settings)
    orders: dict[str, list[str]] = {}
    demo = make_demo(len(SHOPS) * PER_SHOP, seed=5, run_id=9, now_s=1_700_000_000)
    async with shared_tokens(settings, "test") as store:
        for n, (shop_id, cipher) in enumerate(SHOPS.items()):
            shop = sim.tiktok.add_shop(cipher, f"TTP_a_{n}", f"TTP_r_{n}")
            shop.access_expires_at = time.time() + TTL_S
            auth = ShopAuth(
                access_token=f"TTP_a_{n}", refresh_token=f"TTP_r_{n}", shop_cipher=cipher
            )
            await store.put(shop_id, auth)
            for o in demo[n * PER_SHOP : (n + 1) * PER_SHOP]:
                sim.tiktok.orders[o.order_id] = o.tiktok
                orders.setdefault(shop_id, []).append(o.order_id)
    wanted = {order_id for ids in orders.values() for order_id in ids}

    async def traffic() -> None:
        """A webhook a shop every 40 ms or so, for about 6 s (two token lifetimes)."""
        for n in range(PER_SHOP):
            for shop_id, ids in orders.items():
                await produce(settings, WEBHOOKS, shop_id, webhook_record(ids[n], shop_id=shop_id))
            await asyncio.sleep(0.25)

    def done(values: list[bytes]) -> bool:
        return {o.order_id for o in models(Order, values)} >= wanted

    with ExitStack() as running:
        # started from a thread: the simulator answers on this loop meanwhile (a refresh
        # whose answer never comes loses the shop: its refresh token was used)
        replicas = await asyncio.gather(
            *(
                asyncio.to_thread(
                    running.enter_context,
                    worker_process("enricher", settings, tmp_path / f"e{n}.log", b"enricher_ready"),
                )
                for n in range(3)
            )
        )
        sending = asyncio.create_task(traffic())
        await asyncio.sleep(3.0)
        replicas[0].send_signal(signal.SIGKILL)  # its shops move to the others mid-traffic
        replicas[0].wait()
        await sending
        values = await consume(settings, ORDERS, done, timeout_s=120)
    enriched = models(Order, values)
    assert {o.order_id for o in enriched} >= wanted
    alerts = models(Alert, await consume(settings, ALERTS, lambda v: False, timeout_s=1))
    assert [a for a in alerts if a.kind == "shop_reauthorization_required"] == []
    async with shared_tokens(settings, "test") as store:
        for shop_id, cipher in SHOPS.items():
            auth = store.shops[shop_id]
            assert not auth.unauthorized, (shop_id, auth.unauthorized)
            # the topic holds the shop's live tokens: no rotated refresh token was lost
            live = sim.tiktok.shops[cipher]
            assert auth.refresh_token.get_secret_value() == live.refresh_token
    assert sim.tiktok.refreshes >= 2 * len(SHOPS), "tokens were not refreshed under traffic"
    logs = "".join((tmp_path / f"e{n}.log").read_text() for n in range(3))
    print(
        f"\nreplicas: {sim.tiktok.refreshes} refreshes, {sim.tiktok.refused_refreshes} refused, "
        f"{logs.count('tiktok_refresh_race_lost')} races lost, {len(enriched)} order events"
    )
    assert sim.tiktok.refused_refreshes == logs.count("tiktok_refresh_race_lost")


async def test_a_replica_that_loses_a_refresh_race_uses_the_winners_tokens(
    make_settings: Callable[..., Any], serve: Any
) -> None:
    """Two replicas that both think they own a shop (as a replica the group dropped may,
    for a moment) refresh at once with one single-use refresh token: TikTok refuses the
    second, which then takes the first's tokens from the topic; the shop stays
    authorized and every replica ends on the live tokens."""

    base = make_settings()
    url, sim = await start_simulator(serve, base)
    settings = make_settings(
        topic_namespace=base.topic_namespace, tiktok_api_base=url, tiktok_auth_base=url
    )
    await provisioned(settings)
    shop = sim.tiktok.add_shop("ROW_race", "TTP_a", "TTP_r")
    async with shared_tokens(settings, "test") as seed:
        stale = ShopAuth(access_token="TTP_a", refresh_token="TTP_r", shop_cipher="ROW_race")
        await seed.put("7700", stale)
    producer = make_producer(settings)
    await producer.start()
    stores = [TokenStore(), TokenStore()]
    topics = [TokenTopic(settings, store, f"replica-{n}") for n, store in enumerate(stores)]
    try:
        for topic in topics:
            await topic.start(producer)
        async with aiohttp.ClientSession() as http:
            clients = [TikTokClient(http, settings, store) for store in stores]  # both "own" it
            await asyncio.gather(*(c.refresh_tokens("7700", stale=stale) for c in clients))
    finally:
        for topic in topics:
            await topic.stop()
        await producer.stop()
    assert (sim.tiktok.refreshes, sim.tiktok.refused_refreshes) == (1, 1)
    for store in stores:
        auth = store.shops["7700"]
        assert not auth.unauthorized
        assert auth.access_token.get_secret_value() == shop.access_token
        assert auth.refresh_token.get_secret_value() == shop.refresh_token
