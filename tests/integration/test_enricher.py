"""The enricher on a real broker against the simulated TikTok Open API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from devstack.demo_data import make_demo
from devstack.simulator.app import Simulator
from devstack.simulator.faults import Fault
from schemas.alert import Alert
from schemas.codec import encode
from schemas.order import Order, OrderStatus
from schemas.rejected import RejectedRecord
from schemas.tokens import SealedTokens
from schemas.topics import ALERTS, ORDERS, TOKENS, WEBHOOKS, WEBHOOKS_PARKED, WEBHOOKS_REJECTED
from schemas.webhook import ParkedWebhook
from tests.integration.kafka_helpers import consume, models, open_recipient, produce, provisioned
from tests.integration.processes import in_process
from tests.integration.sim import start_simulator
from tests.unit.factories import webhook_record as record
from workers.enricher.worker import run
from workers.settings import Settings
from workers.tiktok.codes import CODES, RETRIABLE, Verdict
from workers.tiktok.codes import COMMON as COMMON_PAGE
from workers.tiktok.codes import ORDER_DETAIL as ORDER_DETAIL_PAGE
from workers.tiktok.tokens import Sealer, ShopAuth, shared_tokens


async def set_tokens(settings: Settings, key: str, access: str, refresh: str, **more: Any) -> None:
    """What `parcelflow tokens set` does: the shop's tokens into tiktok.tokens.v1."""
    async with shared_tokens(settings, "test") as store:
        await store.put(key, ShopAuth(access_token=access, refresh_token=refresh, **more))


REAUTH_METRIC = "parcelflow_enricher_reauthorization_alerts_total"
Running = tuple[Settings, Simulator, list[dict[str, Any]]]


@pytest.fixture
async def tiktok(
    make_settings: Callable[..., Settings], serve: Any
) -> tuple[Callable[..., Settings], Simulator, list[dict[str, Any]]]:
    """The simulated TikTok API with three demo orders, and settings that point at it."""
    base = make_settings()
    url, sim = await start_simulator(serve, base)
    demo = [o.tiktok for o in make_demo(3, seed=1, run_id=1, now_s=1_700_000_000)]
    for raw in demo:
        sim.tiktok.orders[raw["id"]] = raw

    def settings(**overrides: Any) -> Settings:
        return make_settings(
            topic_namespace=base.topic_namespace,
            tiktok_api_base=url,
            tiktok_auth_base=url,
            **overrides,
        )

    return settings, sim, demo


@pytest.fixture
async def enricher(
    tiktok: tuple[Callable[..., Settings], Simulator, list[dict[str, Any]]],
) -> AsyncIterator[Running]:
    make, sim, demo = tiktok
    settings = make(enricher_park_retry_s=0.3, tiktok_max_attempts=2, tiktok_timeout_s=0.5)
    async with in_process(run, settings):
        yield settings, sim, demo


async def test_awaiting_shipment_is_enriched_with_one_item_per_unit(
    enricher: Running,
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
        recipient = await open_recipient(settings, got.order_id, got.recipient)
        assert recipient.street1 == raw["recipient_address"]["address_line1"]
        assert raw["recipient_address"]["address_line1"].encode() not in encode(got)  # sealed
    assert sim.tiktok.rejected_signatures == 0


async def test_expired_token_is_refreshed_and_the_call_retried(
    enricher: Running,
) -> None:
    settings, sim, demo = enricher
    sim.tiktok.shops["ROW_test"].access_token = "rotated-by-tiktok"  # ours is now expired
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"]))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[0]["id"]]
    assert sim.tiktok.refreshes == 1


async def test_rate_limit_and_503_are_retried(
    enricher: Running,
) -> None:
    settings, sim, demo = enricher
    sim.faults.push("tiktok", [Fault(status=429, retry_after=0.2), Fault(status=503)])
    await produce(settings, WEBHOOKS, "7495", record(demo[1]["id"]))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[1]["id"]]
    assert sim.tiktok.calls >= 3


async def test_cancel_needs_no_api_call_and_other_statuses_are_skipped(
    enricher: Running,
) -> None:
    settings, sim, demo = enricher
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"], "IN_TRANSIT", 1))
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"], "CANCEL", 2))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [(o.order_id, o.status) for o in orders] == [(demo[0]["id"], OrderStatus.CANCELLED)]
    assert sim.tiktok.calls == 0


async def test_malformed_webhook_is_dead_lettered_and_the_worker_goes_on(
    enricher: Running,
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
    enricher: Running,
) -> None:
    settings, _, _ = enricher
    await produce(settings, WEBHOOKS, "7495", record("999"))
    rejected = models(
        RejectedRecord, await consume(settings, WEBHOOKS_REJECTED, lambda v: len(v) >= 1)
    )
    assert rejected[0].reason == "order 999 not found at TikTok"


async def test_an_address_update_publishes_the_updated_order_and_says_why(
    enricher: Running,
) -> None:
    settings, sim, demo = enricher
    changed = {
        **demo[0],
        "recipient_address": {**demo[0]["recipient_address"], "postal_code": "10001"},
    }
    sim.tiktok.orders[demo[0]["id"]] = changed
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"], "", 3, type=3))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    recipient = await open_recipient(settings, orders[0].order_id, orders[0].recipient)
    assert recipient.postal_code == "10001"
    assert orders[0].cause == f"webhook 3 RECIPIENT_ADDRESS_UPDATE ntf-{demo[0]['id']}-3"


async def test_is_on_hold_order_names_the_flow_and_only_the_status_holds(
    enricher: Running,
) -> None:
    """TikTok's changelog "For US and UK markets: introducing On Hold order status":
    ON_HOLD is a status; is_on_hold_order true is the new flow (ships at once), false the
    old flow (held an hour after payment)."""
    settings, sim, demo = enricher
    sim.tiktok.orders[demo[0]["id"]] = {**demo[0], "status": "ON_HOLD"}
    sim.tiktok.orders[demo[1]["id"]] = {**demo[1], "is_on_hold_order": True}
    sim.tiktok.orders[demo[2]["id"]] = {
        **demo[2],
        "is_on_hold_order": False,
        "paid_time": 1_700_000_100,
        "is_buyer_request_cancel": True,
    }
    await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"], "AWAITING_SHIPMENT", 1))
    await produce(settings, WEBHOOKS, "7495", record(demo[1]["id"], "AWAITING_SHIPMENT", 2))
    await produce(settings, WEBHOOKS, "7495", record(demo[2]["id"], "AWAITING_SHIPMENT", 3))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 3))
    found = {o.order_id: (o.status, o.ship_after, o.buyer_cancel_requested) for o in orders}
    assert found == {
        demo[0]["id"]: (OrderStatus.ON_HOLD, 0, False),
        demo[1]["id"]: (OrderStatus.AWAITING_SHIPMENT, 0, False),
        demo[2]["id"]: (OrderStatus.AWAITING_SHIPMENT, 1_700_003_700, True),
    }


async def test_a_slow_answer_times_out_and_is_retried(enricher: Running) -> None:
    settings, sim, demo = enricher
    sim.faults.push("tiktok", [Fault(delay_s=2.0)])  # longer than tiktok_timeout_s=0.5
    await produce(settings, WEBHOOKS, "7495", record(demo[1]["id"]))
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[1]["id"]]
    assert sim.tiktok.calls == 2


async def test_an_outage_longer_than_the_retries_parks_the_webhook_until_tiktok_answers(
    enricher: Running,
) -> None:
    settings, sim, demo = enricher
    # two attempts per call (tiktok_max_attempts=2): 503 twice parks it; the retry works
    sim.faults.push("tiktok", [Fault(status=503), Fault(status=503, code=None)])
    await produce(settings, WEBHOOKS, "7495", record(demo[2]["id"]))
    parked = models(ParkedWebhook, await consume(settings, WEBHOOKS_PARKED, lambda v: len(v) >= 1))
    assert parked[0].record.event_id == f"ntf-{demo[2]['id']}-0"
    assert "http_503" in parked[0].reason and parked[0].attempts == 1
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[2]["id"]]
    assert await consume(settings, WEBHOOKS_REJECTED, lambda v: False, timeout_s=0.5) == []


async def test_a_refreshed_token_is_persisted_and_survives_a_restart(
    tiktok: tuple[Callable[..., Settings], Simulator, list[dict[str, Any]]],
) -> None:
    make, sim, demo = tiktok
    settings = make()
    sim.tiktok.shops["ROW_test"].access_token = "rotated-by-tiktok"
    async with in_process(run, settings):
        await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"]))
        await consume(settings, ORDERS, lambda v: len(v) >= 1)
    assert sim.tiktok.refreshes == 1
    records = await consume(settings, TOKENS, lambda v: len(v) >= 2)  # imported, refreshed
    newest = models(SealedTokens, records)[-1]
    current = sim.tiktok.shops["ROW_test"]
    assert newest.shop_key == "*" and current.access_token.encode() not in records[-1]
    assert current.refresh_token.encode() not in records[-1]  # sealed, not in clear
    opened = Sealer(settings.tiktok_token_key).open(newest)
    assert opened is not None
    assert opened.access_token.get_secret_value() == current.access_token
    assert opened.refresh_token.get_secret_value() == current.refresh_token
    # settings still hold the old, now refused, tokens: the restart must use the topic's
    async with in_process(run, settings):
        await produce(settings, WEBHOOKS, "7495", record(demo[1]["id"]))
        orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 2))
    assert {o.order_id for o in orders} == {demo[0]["id"], demo[1]["id"]}
    assert sim.tiktok.refreshes == 1


async def test_a_token_is_refreshed_before_it_expires(
    tiktok: tuple[Callable[..., Settings], Simulator, list[dict[str, Any]]],
) -> None:
    make, sim, demo = tiktok
    settings = make(tiktok_refresh_before_s=3600)
    await provisioned(settings)
    in_ten_minutes = int(time.time()) + 600
    await set_tokens(
        settings,
        "7495",
        "TTP_access_1",
        "TTP_refresh_1",
        shop_cipher="ROW_test",
        access_expires_at=in_ten_minutes,
    )
    async with in_process(run, settings):
        await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"]))
        orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
    assert [o.order_id for o in orders] == [demo[0]["id"]]
    assert sim.tiktok.refreshes == 1  # the old token still worked: refreshed ahead of time


async def test_a_shop_that_must_reauthorize_waits_with_an_alert_and_other_shops_go_on(
    tiktok: tuple[Callable[..., Settings], Simulator, list[dict[str, Any]]],
) -> None:
    make, sim, demo = tiktok
    settings = make(enricher_park_retry_s=0.3, tiktok_refresh_race_wait_s=0.2)
    await provisioned(settings)
    other = sim.tiktok.add_shop("ROW_other", "TTP_other_access", "TTP_other_refresh")
    await set_tokens(
        settings, "8001", "TTP_other_access", "TTP_other_refresh", shop_cipher="ROW_other"
    )
    gone = sim.tiktok.shops["ROW_test"]
    gone.revoked, gone.access_token = True, "expired"  # the seller deauthorized the app
    alerts_before = REGISTRY.get_sample_value(REAUTH_METRIC) or 0
    async with in_process(run, settings):
        await produce(settings, WEBHOOKS, "7495", record(demo[0]["id"]))
        await produce(settings, WEBHOOKS, "8001", record(demo[1]["id"], shop_id="8001"))
        alerts = models(Alert, await consume(settings, ALERTS, lambda v: len(v) >= 1))
        assert [(a.kind, a.shop_id) for a in alerts] == [("shop_reauthorization_required", "7495")]
        assert (REGISTRY.get_sample_value(REAUTH_METRIC) or 0) - alerts_before == 1
        orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 1))
        assert [(o.order_id, o.shop_id) for o in orders] == [(demo[1]["id"], "8001")]
        await asyncio.sleep(1.0)  # parked, tried again a few times: still waiting, not failed
        assert await consume(settings, WEBHOOKS_REJECTED, lambda v: False, timeout_s=0.5) == []
        assert len(await consume(settings, ORDERS, lambda v: False, timeout_s=0.5)) == 1
        # the seller authorizes again; the operator writes the new tokens
        gone.revoked, gone.access_token, gone.refresh_token = False, "TTP_new", "TTP_new_refresh"
        await set_tokens(settings, "7495", "TTP_new", "TTP_new_refresh", shop_cipher="ROW_test")
        orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 2))
    assert {(o.order_id, o.shop_id) for o in orders} == {
        (demo[0]["id"], "7495"),
        (demo[1]["id"], "8001"),
    }
    assert len(other.call_times) == 1


async def test_calls_per_shop_are_rate_limited(
    tiktok: tuple[Callable[..., Settings], Simulator, list[dict[str, Any]]],
) -> None:
    make, sim, demo = tiktok
    settings = make(tiktok_rate_limit_qps=4, tiktok_batch_size=1)
    for n in range(12):
        sim.tiktok.orders[f"rl{n}"] = {**demo[0], "id": f"rl{n}"}
    async with in_process(run, settings):
        for n in range(12):
            await produce(settings, WEBHOOKS, "7495", record(f"rl{n}"))
        await consume(settings, ORDERS, lambda v: len(v) >= 12)
    times = sim.tiktok.shops["ROW_test"].call_times
    assert len(times) == 12
    # a leaky bucket of 4/s: the first 4 at once, then one every 1/4 s at most
    assert times[-1] - times[0] >= (12 - 4) / 4 * 0.9


async def test_poison_webhook_records_are_dead_lettered_and_the_enricher_goes_on(
    enricher: Running,
) -> None:
    """A record too large, one keyed by another shop, and order ids no order can have
    (also in a cancellation, which needs no API call) each end with a reason; the
    demo orders after them are all enriched."""
    from aiokafka import AIOKafkaProducer

    from schemas.codec import encode
    from workers.kafka import Topics

    settings, _, demo = enricher
    await provisioned(settings)
    topic = Topics(settings)(WEBHOOKS)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=5 * 1024 * 1024
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{" + b" " * (2 * 1024 * 1024) + b"}", key=b"7495")
        await producer.send_and_wait(topic, encode(record("576-KEY")), key=b"another-shop")
        for n, status in enumerate(["AWAITING_SHIPMENT", "CANCEL"]):
            long_id = orjson.loads(encode(record(f"LONG-{n}", status, n)))
            long_id["webhook"]["data"]["order_id"] = "9" * 300
            await producer.send_and_wait(topic, orjson.dumps(long_id), key=b"7495")
        for raw in demo:
            await producer.send_and_wait(topic, encode(record(raw["id"])), key=b"7495")
    finally:
        await producer.stop()
    rejected = models(
        RejectedRecord, await consume(settings, WEBHOOKS_REJECTED, lambda v: len(v) >= 4)
    )
    reasons = sorted(r.reason for r in rejected)
    assert any("over the" in r and "input limit" in r for r in reasons), reasons
    assert any("'another-shop' is not the record's shop id '7495'" in r for r in reasons)
    assert sum("data.order_id: longer than 128" in r for r in reasons) == 2
    orders = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 3))
    assert {o.order_id for o in orders} == {raw["id"] for raw in demo}


ORDER_DETAIL_CODES = sorted(
    c.code for c in CODES.values() if {ORDER_DETAIL_PAGE, COMMON_PAGE} & set(c.pages)
)


async def test_every_documented_answer_of_get_order_detail_is_handled_as_documented(
    tiktok: tuple[Callable[..., Settings], Simulator, list[dict[str, Any]]],
) -> None:
    """Each code TikTok's "Common errors" and Get Order Detail pages list, answered once by
    the simulator: what TikTok says to try again is retried (the order is published);
    what needs a person about the shop parks the webhook with the shop's alert, naming
    TikTok's request_id. (Parked webhooks are not tried again during the test: a retry
    would take the next code's scripted answer.)"""
    make, sim, demo = tiktok
    settings = make(enricher_park_retry_s=600, tiktok_max_attempts=2, tiktok_timeout_s=0.5)
    async with in_process(run, settings):
        await documented_answers(settings, sim, demo)


async def documented_answers(
    settings: Settings, sim: Simulator, demo: list[dict[str, Any]]
) -> None:
    order_id = demo[0]["id"]
    outcomes: dict[int, str] = {}
    for n, code in enumerate(ORDER_DETAIL_CODES, start=100):
        sim.faults.push("tiktok", [Fault(code=code, message=f"injected {code}")])
        await produce(settings, WEBHOOKS, "7495", record(order_id, n=n))
        event = f"ntf-{order_id}-{n}"

        def published(values: list[bytes], event: str = event) -> bool:
            return any(event in o.cause for o in models(Order, values))

        def parked(values: list[bytes], event: str = event) -> bool:
            return any(p.record.event_id == event for p in models(ParkedWebhook, values))

        verdict = CODES[code].verdict
        if verdict in RETRIABLE:
            ok = published(await consume(settings, ORDERS, published, timeout_s=15))
            outcomes[code] = "published" if ok else "missing"
        else:
            values = await consume(settings, WEBHOOKS_PARKED, parked, timeout_s=15)
            found = [p for p in models(ParkedWebhook, values) if p.record.event_id == event]
            why = found[0].reason if found else ""
            shop = verdict is Verdict.SHOP and "must authorize the app again" in why
            outcomes[code] = "parked" if shop and "request_id sim" in why else f"wrong: {why}"
    expected = {
        c: "published" if CODES[c].verdict in RETRIABLE else "parked" for c in ORDER_DETAIL_CODES
    }
    assert outcomes == expected
    alerts = models(Alert, await consume(settings, ALERTS, lambda v: len(v) >= 1))
    assert any(a.kind == "shop_reauthorization_required" for a in alerts)
