"""The Faust planner as a real worker process on a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import encode
from schemas.label import LabelJob
from schemas.order import OrderStatus
from schemas.plan import ParcelPlan
from schemas.rejected import RejectedRecord
from schemas.topics import BOXES, BOXES_REJECTED, LABEL_JOBS, ORDERS, ORDERS_REJECTED, PLANS
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.processes import worker_process
from tests.unit.factories import box, order
from workers.kafka import Topics
from workers.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planner(broker: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One planner worker for the module; tests use distinct order ids."""
    import uuid

    from tests.conftest import FAKE_SECRETS

    root = tmp_path_factory.mktemp("planner")
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,  # type: ignore[attr-defined]
        kafka_embedded=broker.embedded,  # type: ignore[attr-defined]
        topic_namespace=f"p{uuid.uuid4().hex[:10]}.",
        topic_partitions=2,
        planner_data_dir=root / "data",
        **FAKE_SECRETS,
    )
    with worker_process("planner", settings, root / "planner.log", b"Worker]: Ready"):
        yield settings


def plans_for(values: list[bytes], order_id: str) -> list[ParcelPlan]:
    return [p for p in models(ParcelPlan, values) if p.order_id == order_id]


def jobs_for(values: list[bytes], order_id: str) -> list[LabelJob]:
    return [j for j in models(LabelJob, values) if j.order_id == order_id]


async def test_boxes_before_order_are_joined_into_plans_and_one_job(planner: Settings) -> None:
    await produce(planner, BOXES, "J1", box("J1-B1", {"A": 2}, order_id="J1"))
    await produce(planner, BOXES, "J1", box("J1-B2", {"B": 1}, order_id="J1"))
    await produce(planner, ORDERS, "J1", order("J1"))
    jobs = jobs_for(await consume(planner, LABEL_JOBS, lambda v: bool(jobs_for(v, "J1"))), "J1")
    assert len(jobs) == 1
    assert [[i.item_id for i in p.items] for p in jobs[0].parcels] == [
        ["J1-001", "J1-002"],
        ["J1-003"],
    ]
    plans = plans_for(await consume(planner, PLANS, lambda v: len(plans_for(v, "J1")) >= 2), "J1")
    assert sorted((p.box_id, p.status) for p in plans) == [
        ("J1-B1", "planned"),
        ("J1-B2", "planned"),
    ]


async def test_bad_events_are_dead_lettered_and_the_join_goes_on(planner: Settings) -> None:
    await produce(planner, BOXES, "K1", b'{"box_id": "no order"}')
    await produce(planner, ORDERS, "K1", b"not json at all")
    await produce(planner, ORDERS, "K1", order("K1", skus={"A": 1}))
    await produce(planner, BOXES, "K1", box("K1-B1", {"A": 1}, order_id="K1"))
    jobs = jobs_for(await consume(planner, LABEL_JOBS, lambda v: bool(jobs_for(v, "K1"))), "K1")
    assert [p.box_id for p in jobs[0].parcels] == ["K1-B1"]
    boxes = models(RejectedRecord, await consume(planner, BOXES_REJECTED, lambda v: len(v) >= 1))
    orders = models(RejectedRecord, await consume(planner, ORDERS_REJECTED, lambda v: len(v) >= 1))
    assert boxes[0].original() == b'{"box_id": "no order"}' and "order_id" in boxes[0].reason
    assert orders[0].original() == b"not json at all" and orders[0].reason == "not valid JSON"
    assert boxes[0].worker == "planner"


async def test_cancelled_order_rejects_its_waiting_box(planner: Settings) -> None:
    await produce(planner, BOXES, "C1", box("C1-B1", {"A": 1}, order_id="C1"))
    await produce(planner, ORDERS, "C1", order("C1", status=OrderStatus.CANCELLED))
    plans = plans_for(await consume(planner, PLANS, lambda v: bool(plans_for(v, "C1"))), "C1")
    assert [(p.box_id, p.status) for p in plans] == [("C1-B1", "rejected")]
    assert "cancelled" in plans[0].reason


async def test_each_order_state_is_in_the_changelog_partition_of_its_events(
    planner: Settings,
) -> None:
    """A batch holds events of both partitions; a restarted worker restores a partition's
    orders from the same changelog partition, so every state must be written there."""
    names = Topics(planner)
    producer = AIOKafkaProducer(bootstrap_servers=planner.kafka_bootstrap, acks="all")
    await producer.start()
    sent: dict[bytes, int] = {}
    try:
        for n in range(40):
            order_id = f"P{n:02d}"
            meta = await producer.send(
                names(ORDERS), encode(order(order_id)), key=order_id.encode()
            )
            await producer.send(
                names(BOXES),
                encode(box(f"{order_id}-B1", {"A": 2, "B": 1}, order_id=order_id)),
                key=order_id.encode(),
            )
            sent[order_id.encode()] = (await meta).partition
    finally:
        await producer.stop()
    assert set(sent.values()) == {0, 1}
    await consume(
        planner,
        LABEL_JOBS,
        lambda v: {j.order_id for j in models(LabelJob, v)} >= {k.decode() for k in sent},
    )
    changelog = f"{names.group(planner.planner_app_id)}-orders-changelog"
    consumer = AIOKafkaConsumer(
        changelog,
        bootstrap_servers=planner.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    written: dict[bytes, set[int]] = {}
    try:
        async with asyncio.timeout(30):
            while not written.keys() >= sent.keys():
                for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                    for m in messages:
                        written.setdefault(m.key, set()).add(tp.partition)
    except TimeoutError:
        pass  # the assertion below names what is missing
    finally:
        await consumer.stop()
    assert {k: written.get(k) for k in sent} == {k: {p} for k, p in sent.items()}
