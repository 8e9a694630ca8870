"""No input can stop parcelflow: poison records on every topic the planner, labeler and
auditor read, each ending in a rejected topic with its reason, and good orders sent after
them all labeled.

One planner process, one labeler and one auditor (in this process) on the real broker,
against the simulated Shipium. The poison goes first; then good orders, whose labels
prove the workers went on.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from devstack.simulator.app import Simulator, create_app
from schemas.box import BoxClosed, BoxItem
from schemas.codec import encode
from schemas.common import Dimensions, Weight, now_ms
from schemas.label import LabelResult
from schemas.order import LineItem, Order, OrderStatus
from schemas.rejected import RejectedRecord
from schemas.topics import (
    BOXES,
    BOXES_REJECTED,
    LABEL_JOBS,
    LABEL_JOBS_REJECTED,
    LABELS,
    ORDERS,
    ORDERS_REJECTED,
    TopicSpec,
)
from tests.conftest import FAKE_SECRETS, Broker
from tests.integration.kafka_helpers import consume, models, provisioned
from tests.integration.processes import worker_process
from tests.unit.factories import box, job, order
from workers.auditor.worker import run as run_auditor
from workers.kafka import Topics
from workers.labeler.worker import run as run_labeler
from workers.settings import Settings

pytestmark = pytest.mark.slow

BIG = 4 * 1024 * 1024  # over the 1 MiB record limit, under what the embedded broker takes


@dataclass
class Pipeline:
    settings: Settings
    labeler: asyncio.Task[None]
    auditor: asyncio.Task[None]


@pytest.fixture(scope="module")
async def pipeline(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    root = tmp_path_factory.mktemp("poison")
    base = Settings(
        kafka_bootstrap=broker.bootstrap,
        kafka_embedded=broker.embedded,
        topic_namespace=f"x{uuid.uuid4().hex[:10]}.",
        topic_partitions=2,
        planner_data_dir=root / "planner",
        label_dir=root / "labels",
        sim_label_latency_median_s=0.02,
        sim_label_latency_sigma=0.0,
        sim_label_tail_probability=0.0,
        **FAKE_SECRETS,
    )
    runner = web.AppRunner(create_app(Simulator.from_settings(base)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    settings = base.model_copy(update={"shipium_base_url": url, "auditor_repair_after_s": 3600.0})
    await provisioned(settings)  # its topics, and the factories' data key
    stop = asyncio.Event()
    labeler = asyncio.create_task(run_labeler(settings, stop))
    auditor = asyncio.create_task(run_auditor(settings, stop))
    try:
        with worker_process("planner", settings, root / "planner.log", b"Worker]: Ready"):
            yield Pipeline(settings, labeler, auditor)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(labeler, auditor, return_exceptions=True), 20)
        await runner.cleanup()


async def send(settings: Settings, spec: TopicSpec, key: bytes | None, value: bytes) -> None:
    """One record as any producer could write it: up to 5 MB, any key or none."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=5 * 1024 * 1024
    )
    await producer.start()
    try:
        await producer.send_and_wait(Topics(settings)(spec), value, key=key)
    finally:
        await producer.stop()


async def rejected(settings: Settings, spec: TopicSpec, count: int) -> list[RejectedRecord]:
    return models(RejectedRecord, await consume(settings, spec, lambda v: len(v) >= count, 60))


async def labels_for(settings: Settings, order_ids: set[str]) -> dict[str, LabelResult]:
    def done(values: list[bytes]) -> bool:
        return {lb.order_id for lb in models(LabelResult, values)} >= order_ids

    found = models(LabelResult, await consume(settings, LABELS, done, 90))
    return {lb.order_id: lb for lb in found if lb.order_id in order_ids}


async def send_good_orders(settings: Settings, prefix: str, count: int) -> set[str]:
    ids = {f"{prefix}-{n}" for n in range(count)}
    for order_id in sorted(ids):
        await send(settings, ORDERS, order_id.encode(), encode(order(order_id, skus={"A": 1})))
        await send(
            settings, BOXES, order_id.encode(), encode(box(f"{order_id}-B", {"A": 1}, order_id))
        )
    return ids


def with_ids(order_id: str, box_ids: list[str]) -> tuple[Order, list[BoxClosed]]:
    items = [
        LineItem(item_id=f"{n}{order_id}"[:128], sku_id="S", product_id="P")
        for n in range(len(box_ids))
    ]
    the_order = Order(
        event_id=f"ev{order_id}"[:128],
        order_id=order_id,
        shop_id="shop-1",
        status=OrderStatus.AWAITING_SHIPMENT,
        line_items=items,
        update_time=1,
    )
    boxes = [
        BoxClosed(
            event_id=f"ev{b}"[:128],
            box_id=b,
            order_id=order_id,
            station_id="PACK-01",
            items=[BoxItem(sku="S", quantity=1)],
            weight=Weight(value=1),
            dimensions=Dimensions(length=1, width=1, height=1),
            closed_at_ms=now_ms(),
        )
        for b in box_ids
    ]
    return the_order, boxes


async def test_oversized_and_malformed_records_are_dead_lettered_and_the_join_goes_on(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    huge = b'{"order_id": "' + b"x" * BIG + b'"}'
    await send(settings, ORDERS, b"H1", huge)
    await send(settings, ORDERS, b"H2", b"\xff\xfe not utf-8")
    await send(settings, BOXES, b"H3", b'{"box_id": "no order"}')
    await send(settings, ORDERS, b"H4", b'{"a":' + b"[" * 500 + b"]" * 500 + b"}")
    good = await send_good_orders(settings, "AFTER-BIG", 5)

    orders = await rejected(settings, ORDERS_REJECTED, 3)
    big = next(r for r in orders if r.value_size == len(huge))
    assert big.truncated and "over the" in big.reason and big.source_topic.endswith("orders.v1")
    assert big.value_sha256 == hashlib.sha256(huge).hexdigest()
    assert huge.startswith(big.original()) and len(encode(big)) < 1024 * 1024
    assert any(r.original() == b"\xff\xfe not utf-8" for r in orders)
    assert any("not valid JSON" in r.reason and r.value_size > 1000 for r in orders)
    boxes = await rejected(settings, BOXES_REJECTED, 1)
    assert "order_id" in boxes[0].reason
    assert set(await labels_for(settings, good)) == good


async def test_null_and_wrong_keys_are_dead_lettered(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    await send(settings, ORDERS, None, encode(order("NK1")))
    await send(settings, BOXES, b"SOMEONE-ELSE", encode(box("WK1-B", {"A": 2, "B": 1}, "WK1")))
    good = await send_good_orders(settings, "AFTER-KEYS", 3)
    reasons = [r.reason for r in await rejected(settings, ORDERS_REJECTED, 4)]
    assert any(r.startswith("null key") for r in reasons)
    box_reasons = [r.reason for r in await rejected(settings, BOXES_REJECTED, 2)]
    assert any("'SOMEONE-ELSE' is not the record's order id 'WK1'" in r for r in box_reasons)
    assert set(await labels_for(settings, good)) == good


async def test_ids_at_every_maximum_ship_and_path_like_box_ids_get_their_own_files(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    cases = {
        "é" * 128: ["é" * 128, "b" * 128],
        "o" * 128: ["x" * 110, "y" * 128],
        "ORD-PATHS": ["a/b", "a_b", "a\\b", "../../../etc"],
    }
    for order_id, box_ids in cases.items():
        the_order, boxes = with_ids(order_id, box_ids)
        await send(settings, ORDERS, order_id.encode(), encode(the_order))
        for b in boxes:
            await send(settings, BOXES, order_id.encode(), encode(b))
    labels = await labels_for(settings, set(cases))
    assert set(labels) == set(cases)
    for order_id, label in labels.items():
        assert sorted(p.box_id for p in label.parcels) == sorted(cases[order_id])
    paths = [Path(p.document_path) for lb in labels.values() for p in lb.parcels]
    assert len(set(paths)) == len(paths) == 8  # no two parcels share a file
    root = settings.label_dir.resolve()
    for label in labels.values():
        for parcel in label.parcels:
            path = Path(parcel.document_path)
            assert path.resolve().is_relative_to(root)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == parcel.document_sha256
            assert path.stat().st_mode & 0o777 == 0o600


async def test_poison_label_jobs_end_with_a_reason_and_the_labeler_goes_on(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    await send(settings, LABEL_JOBS, b"JB1", b'{"job_id": "' + b"j" * BIG + b'"}')
    traversal = job("JT1").model_copy(update={"job_id": "../../../x"})
    escape = settings.label_dir.parent / "escape"  # an absolute path outside the folder
    absolute = job("JT2").model_copy(update={"job_id": str(escape)})
    await send(settings, LABEL_JOBS, b"JT1", encode(traversal))
    await send(settings, LABEL_JOBS, b"JT2", encode(absolute))
    await send(settings, LABEL_JOBS, b"NOT-JK1", encode(job("JK1")))
    good = {f"JG{n}" for n in range(5)}
    for order_id in sorted(good):
        await send(settings, LABEL_JOBS, order_id.encode(), encode(job(order_id)))

    dead = await rejected(settings, LABEL_JOBS_REJECTED, 2)
    assert any(r.truncated and r.value_size > BIG for r in dead)
    assert any("is not the record's order id 'JK1'" in r.reason for r in dead)
    labels = await labels_for(settings, good | {"JT1", "JT2"})
    root = settings.label_dir.resolve()
    for order_id in ("JT1", "JT2"):
        path = Path(labels[order_id].parcels[0].document_path).resolve()
        assert path.is_relative_to(root)
    assert not escape.exists() and not list(settings.label_dir.parent.glob("escape*"))


async def test_the_auditor_reads_every_poison_record_and_keeps_running(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    await send(settings, BOXES, b"AU1", b'{"a":' + b"[" * 300 + b"]" * 300 + b"}")
    the_order, boxes = with_ids("é" * 128, ["é" * 128])
    await send(settings, ORDERS, the_order.order_id.encode(), encode(the_order))
    await send(settings, BOXES, the_order.order_id.encode(), encode(boxes[0]))

    def skipped() -> float:
        total = 0.0
        for spec in (ORDERS, BOXES):
            labels = {"topic": Topics(settings)(spec)}
            total += (
                REGISTRY.get_sample_value("parcelflow_auditor_skipped_records_total", labels) or 0
            )
        return total

    async with asyncio.timeout(30):
        # polling a metric: there is no event to wait on
        while skipped() < 3:  # noqa: ASYNC110 (the 4 MB order, the non-JSON ones, no key...)
            await asyncio.sleep(0.5)
    assert not pipeline.auditor.done(), "the auditor stopped on a record"
    assert not pipeline.labeler.done(), "the labeler stopped on a record"

    # a fresh auditor's start-up replay reads all of the above from retention, and lives
    stop = asyncio.Event()
    fresh = asyncio.create_task(run_auditor(settings, stop))
    before = skipped()
    try:
        async with asyncio.timeout(30):
            while skipped() < before * 2:  # noqa: ASYNC110 (polling a metric)
                await asyncio.sleep(0.5)
        assert not fresh.done(), "a restarted auditor stopped on a record in retention"
    finally:
        stop.set()
        await asyncio.wait_for(fresh, 15)
