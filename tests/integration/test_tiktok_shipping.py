"""The labeler making TikTok Shipping labels, on a real broker, against the simulated
Fulfillment API: one package per box, whatever answers get lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from devstack.simulator.app import Simulator
from devstack.simulator.faults import Fault
from schemas.label import LabelAttempt, LabelFailure, LabelJob, LabelResult
from schemas.topics import LABEL_ATTEMPTS, LABEL_FAILURES, LABEL_JOBS, LABELS
from tests.integration.kafka_helpers import consume, models, produce, provisioned
from tests.integration.processes import in_process
from tests.integration.sim import start_simulator
from tests.unit.factories import job
from workers.labeler.codes import FailureCode
from workers.labeler.worker import run
from workers.settings import Settings
from workers.tiktok.codes import CODES, RETRIABLE, Verdict
from workers.tiktok.codes import CREATE as CREATE_PAGE
from workers.tiktok.tokens import ANY_SHOP, ShopAuth, shared_tokens


def sim_order(j: LabelJob, on_hold: bool = False) -> dict[str, Any]:
    """The order TikTok holds for a job: its line items, none in a package yet."""
    items = [item for parcel in j.parcels for item in parcel.items]
    return {
        "id": j.order_id,
        "status": "ON_HOLD" if on_hold else "AWAITING_SHIPMENT",
        "shipping_type": "TIKTOK",
        "is_on_hold_order": True,  # the new flow: ships once AWAITING_SHIPMENT
        "line_items": [{"id": i.item_id, "sku_id": i.sku_id, "package_id": ""} for i in items],
        "packages": [],
    }


@pytest.fixture
async def tiktok_labeler(
    make_settings: Callable[..., Settings], serve: Any
) -> AsyncIterator[tuple[Settings, Simulator]]:
    base = make_settings(sim_label_latency_median_s=0.05)
    url, sim = await start_simulator(serve, base)
    settings = make_settings(
        label_provider="tiktok",
        tiktok_api_base=url,
        labeler_max_in_flight=4,
        labeler_backoff_base_s=0.05,
        labeler_max_attempts=10,
        labeler_on_hold_retry_s=0.3,
        labeler_backoff_max_s=0.5,
        labeler_max_age_s=30,
        tiktok_refresh_race_wait_s=0.5,
        tiktok_timeout_s=2.0,
    )
    await provisioned(settings)
    async with in_process(run, settings):
        yield settings, sim


def boxes_in_packages(sim: Simulator) -> dict[tuple[str, ...], int]:
    counted: dict[tuple[str, ...], int] = {}
    for package in sim.shipping.packages.values():
        key = tuple(sorted(package.items))
        counted[key] = counted.get(key, 0) + 1
    return counted


async def test_every_box_becomes_one_package_with_its_items_label_and_record(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    jobs = [job(f"77{n}", parcels=1 + n % 3) for n in range(6)]
    for j in jobs:
        sim.tiktok.orders[j.order_id] = sim_order(j)
        await produce(settings, LABEL_JOBS, j.order_id, j)
    labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 6))
    assert sorted(lb.job_id for lb in labels) == sorted(j.job_id for j in jobs)
    boxes = sum(len(j.parcels) for j in jobs)
    assert len(sim.shipping.packages) == boxes and sim.shipping.refused_packed == 0
    assert set(boxes_in_packages(sim).values()) == {1}
    for label in labels:
        source = next(j for j in jobs if j.job_id == label.job_id)
        assert label.carrier == "TikTok Shipping" and label.service == "USPS Ground Advantage"
        assert label.shipment_id.split(",") == [
            next(p.package_id for p in sim.shipping.packages.values() if p.items == items)
            for items in ([i.item_id for i in parcel.items] for parcel in source.parcels)
        ]
        for parcel in label.parcels:
            document = Path(parcel.document_path).read_bytes()
            assert document.startswith(b"%PDF-") and b"/MediaBox [0 0 288 432]" in document
            assert parcel.tracking_id.startswith("9400")
    attempts = models(
        LabelAttempt, await consume(settings, LABEL_ATTEMPTS, lambda v: len(v) >= 6 + boxes)
    )
    recorded = {p.package_id for a in attempts for p in a.packages}
    assert recorded == set(sim.shipping.packages)


async def test_a_package_made_but_its_answer_lost_is_found_not_made_again(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    j = job("781", parcels=3)
    sim.tiktok.orders[j.order_id] = sim_order(j)
    # the second box's package is made, then the connection drops; then a 503 after the
    # third's is made: neither is made twice
    sim.faults.push(
        "tiktok_shipping",
        [Fault(), Fault(status=0, after="created"), Fault(status=503, after="created")],
    )
    await produce(settings, LABEL_JOBS, j.order_id, j)
    [label] = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert label.attempts == 3
    assert len(sim.shipping.packages) == 3 and sim.shipping.refused_packed == 0
    assert set(boxes_in_packages(sim).values()) == {1}
    assert [p.box_id for p in label.parcels] == [p.box_id for p in j.parcels]


async def test_an_order_on_hold_waits_then_is_labeled_once_released(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    j = job("782")
    sim.tiktok.orders[j.order_id] = sim_order(j, on_hold=True)
    sim.faults.push("tiktok_shipping", [Fault(), Fault()])  # two held answers, then release
    await produce(settings, LABEL_JOBS, j.order_id, j)
    consumed = await consume(settings, LABEL_ATTEMPTS, lambda v: len(v) >= 1)
    assert consumed
    sim.tiktok.orders[j.order_id]["status"] = "AWAITING_SHIPMENT"
    [label] = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert label.attempts >= 2 and len(sim.shipping.packages) == 1


async def test_items_packed_in_another_package_end_the_job_with_a_reason(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    j = job("783", parcels=2)
    order = sim_order(j)
    order["line_items"][1]["package_id"] = "1100000000000000042"  # packed in Seller Center
    sim.tiktok.orders[j.order_id] = order
    await produce(settings, LABEL_JOBS, j.order_id, j)
    [failure] = models(LabelFailure, await consume(settings, LABEL_FAILURES, lambda v: len(v) >= 1))
    assert failure.error_code == FailureCode.ITEMS_IN_OTHER_PACKAGE and not failure.retriable
    assert "783-B0" in failure.message and "1100000000000000042" in failure.message
    assert sim.shipping.packages == {}


async def test_rate_limited_answers_are_retried(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    j = job("784")
    sim.tiktok.orders[j.order_id] = sim_order(j)
    limited = Fault(status=429, retry_after=0.2)
    sim.faults.push("tiktok_shipping", [limited, Fault(code=36009002, message="too many")])
    await produce(settings, LABEL_JOBS, j.order_id, j)
    [label] = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert label.attempts == 3 and len(sim.shipping.packages) == 1


async def test_an_expired_token_waits_for_the_enrichers_refresh_never_refreshes_itself(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    shop = sim.tiktok.shops[settings.tiktok_shop_cipher]
    shop.access_expires_at = time.time() - 1  # TikTok answers 105002 from now on
    j = job("785")
    sim.tiktok.orders[j.order_id] = sim_order(j)
    await produce(settings, LABEL_JOBS, j.order_id, j)
    await consume(settings, LABEL_ATTEMPTS, lambda v: len(v) >= 1)
    await asyncio.sleep(0.5)
    assert sim.shipping.packages == {} and sim.tiktok.refreshes == 0
    # the enricher refreshes (one use of the refresh token) and writes tiktok.tokens.v1
    shop.access_token, shop.access_expires_at = "TTP_access_2", 0.0
    async with shared_tokens(settings, "enricher-test") as store:
        fresh = ShopAuth(
            access_token=SecretStr("TTP_access_2"),
            refresh_token=SecretStr("TTP_refresh_2"),
            shop_cipher=settings.tiktok_shop_cipher,
        )
        await store.put(ANY_SHOP, fresh)
    [label] = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert label.carrier == "TikTok Shipping" and len(sim.shipping.packages) == 1
    assert sim.tiktok.refreshes == 0 and sim.tiktok.refused_refreshes == 0


async def test_a_warehouse_with_a_handover_method_ships_each_package_once(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    url, sim = await start_simulator(serve, make_settings(sim_label_latency_median_s=0.0))
    dock = {"ship_from": {"name": "Dock", "street1": "1 Dock Rd", "city": "Reno"}}
    settings = make_settings(
        label_provider="tiktok",
        tiktok_api_base=url,
        warehouses={
            "WH-D": {**dock, "tiktok_handover": "DROP_OFF"},
            "WH-P": {**dock, "tiktok_handover": "PICKUP"},
            "WH-U": dock,
        },
    )
    await provisioned(settings)
    jobs = [
        job("786", parcels=2).model_copy(update={"warehouse_id": "WH-D"}),
        job("787").model_copy(update={"warehouse_id": "WH-U"}),
        job("788").model_copy(update={"warehouse_id": "WH-P"}),
    ]
    async with in_process(run, settings):
        for j in jobs:
            sim.tiktok.orders[j.order_id] = sim_order(j)
            await produce(settings, LABEL_JOBS, j.order_id, j)
        labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 3))
    assert len(labels) == 3
    shipped = {p.package_id: (p.order_id, p.shipped) for p in sim.shipping.packages.values()}
    assert sorted(shipped.values()) == [
        ("786", "DROP_OFF"),
        ("786", "DROP_OFF"),
        ("787", ""),
        ("788", "PICKUP"),
    ]
    # PICKUP was sent with a slot of Get Package Handover Time Slots (21011054 without one)
    [picked] = [p for p in sim.shipping.packages.values() if p.order_id == "788"]
    assert picked.pickup_slot and picked.pickup_slot["end_time"] > time.time()


CREATE_CODES = sorted(
    c.code
    for c in CODES.values()
    if CREATE_PAGE in c.pages and c.verdict is not Verdict.TOKEN  # (the test above)
)
ENDS = {
    Verdict.NO_SERVICE: FailureCode.NO_SHIPPING_SERVICE,
    Verdict.SHOP: FailureCode.SHOP_UNAUTHORIZED,
}


async def outcome(settings: Settings, j: LabelJob) -> LabelResult | LabelFailure:
    """The job's label or failure, once one is on its topic."""

    def mine(values: list[bytes], model: Any) -> list[Any]:
        return [m for m in models(model, values) if m.job_id == j.job_id]

    async def first(topic: Any, model: Any) -> list[Any]:
        return mine(await consume(settings, topic, lambda v: bool(mine(v, model))), model)

    done, pending = await asyncio.wait(
        [
            asyncio.create_task(first(LABELS, LabelResult)),
            asyncio.create_task(first(LABEL_FAILURES, LabelFailure)),
        ],
        return_when=asyncio.FIRST_COMPLETED,
        timeout=40,
    )
    for task in pending:
        task.cancel()
    found = [m for task in done for m in task.result()]
    assert found, f"no label or failure for {j.job_id}"
    return found[0]  # type: ignore[no-any-return]


async def test_every_documented_answer_of_create_packages_is_handled_as_documented(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    """Each code of Create Packages' reference page, answered once by the simulator: what
    TikTok says to try again (or that may have bought the label) is retried after a look-up
    and labeled, with one package per box; what can never work ends the job with its
    reason, TikTok's request_id in the message, and nothing bought."""
    settings, sim = tiktok_labeler
    results: dict[int, str] = {}
    expected: dict[int, str] = {}
    for n, code in enumerate(CREATE_CODES):
        j = job(f"9{n:03d}")
        sim.tiktok.orders[j.order_id] = sim_order(j)
        sim.faults.push("tiktok_shipping", [Fault(code=code, message=f"injected {code}")])
        await produce(settings, LABEL_JOBS, j.order_id, j)
        got = await outcome(settings, j)
        packages = [p for p in sim.shipping.packages.values() if p.order_id == j.order_id]
        verdict = CODES[code].verdict
        if verdict in RETRIABLE or verdict is Verdict.DONE:
            expected[code] = "labeled, 1 package"
        else:
            expected[code] = f"{ENDS.get(verdict, str(code))}, 0 packages, request_id"
        if isinstance(got, LabelResult):
            results[code] = f"labeled, {len(packages)} package"
        else:
            rid = ", request_id" if "request_id sim" in got.message else ""
            results[code] = f"{got.error_code}, {len(packages)} packages{rid}"
    assert results == expected
    assert sim.shipping.refused_packed == 0


async def test_a_document_still_being_generated_is_asked_for_again_and_a_gone_one_ends(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    sim.shipping.document_pending_calls = 2  # 11034037 twice after each package is made
    j = job("790")
    sim.tiktok.orders[j.order_id] = sim_order(j)
    await produce(settings, LABEL_JOBS, j.order_id, j)
    got = await outcome(settings, j)
    assert isinstance(got, LabelResult) and got.attempts == 1  # asked again in place
    sim.shipping.document_pending_calls = 0
    for n, (code, status) in enumerate([(21042102, "FULFILLING"), (21023059, "CANCELLED")]):
        j = job(f"79{n + 1}")
        sim.tiktok.orders[j.order_id] = sim_order(j)
        sim.faults.push("tiktok_document", [Fault(code=code, message=f"package {status}")])
        await produce(settings, LABEL_JOBS, j.order_id, j)
        failed = await outcome(settings, j)
        assert isinstance(failed, LabelFailure)
        assert (failed.error_code, failed.retriable) == (FailureCode.DOCUMENT_GONE, False)
        assert str(code) in failed.message


async def test_no_eligible_service_ends_the_box_before_anything_is_bought(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    light = job("793")
    parcel = light.parcels[0]
    heavy_parcel = parcel.model_copy(
        update={"weight": parcel.weight.model_copy(update={"value": 200})}
    )
    heavy = light.model_copy(update={"parcels": [heavy_parcel]})  # 200 lb: no service takes it
    sim.tiktok.orders[heavy.order_id] = sim_order(heavy)
    await produce(settings, LABEL_JOBS, heavy.order_id, heavy)
    failed = await outcome(settings, heavy)
    assert isinstance(failed, LabelFailure) and not failed.retriable
    assert failed.error_code == FailureCode.NO_SHIPPING_SERVICE
    assert sim.shipping.creates == 0 and sim.shipping.eligible_queries >= 1


async def test_no_package_while_the_buyer_asks_to_cancel(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = tiktok_labeler
    j = job("794")
    sim.tiktok.orders[j.order_id] = {**sim_order(j), "is_buyer_request_cancel": True}
    await produce(settings, LABEL_JOBS, j.order_id, j)
    await consume(settings, LABEL_ATTEMPTS, lambda v: len(v) >= 1)
    await asyncio.sleep(1.0)
    assert sim.shipping.packages == {}
    sim.tiktok.orders[j.order_id]["is_buyer_request_cancel"] = False  # the seller declined
    got = await outcome(settings, j)
    assert isinstance(got, LabelResult) and got.attempts >= 2
    assert sim.shipping.created_with_cancel_request == 0


async def test_a_cancelled_package_holds_no_items_and_a_new_one_is_made(
    tiktok_labeler: tuple[Settings, Simulator],
) -> None:
    """The look-up reads the order's packages with Get Package Detail: a CANCELLED one
    ("lost or damaged") does not hold the box's items any more."""
    settings, sim = tiktok_labeler
    j = job("795")
    sim.tiktok.orders[j.order_id] = sim_order(j)
    await produce(settings, LABEL_JOBS, j.order_id, j)
    assert isinstance(await outcome(settings, j), LabelResult)
    [first] = sim.shipping.packages.values()
    first.status = "CANCELLED"
    again = j.model_copy(update={"job_id": "job-795-again", "event_id": "job-795-again"})
    await produce(settings, LABEL_JOBS, j.order_id, again)
    assert isinstance(await outcome(settings, again), LabelResult)
    assert len(sim.shipping.packages) == 2 and sim.shipping.refused_packed == 0
