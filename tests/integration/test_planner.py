"""The Faust planner as a real worker process on a real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schemas.buyer import Erasure
from schemas.codec import decode, encode
from schemas.common import now_ms
from schemas.label import LabelJob
from schemas.order import Order, OrderStatus
from schemas.plan import ParcelPlan
from schemas.rejected import RejectedRecord
from schemas.repair import RepairRequest
from schemas.topics import (
    BOXES,
    BOXES_REJECTED,
    ERASURES,
    LABEL_JOBS,
    ORDERS,
    ORDERS_REJECTED,
    PLANS,
    REPAIRS,
)
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.processes import worker_process
from tests.unit.factories import box, opened, order, sealed
from workers.kafka import Topics, read_to_end
from workers.planner.join import OrderState
from workers.settings import Settings

pytestmark = pytest.mark.slow


def planner_settings(broker: object, data_dir: Path) -> Settings:
    """A planner's settings on the test broker, in a namespace of its own."""
    from tests.conftest import FAKE_SECRETS

    return Settings(
        kafka_bootstrap=broker.bootstrap,  # type: ignore[attr-defined]
        kafka_embedded=broker.embedded,  # type: ignore[attr-defined]
        topic_namespace=f"p{uuid.uuid4().hex[:10]}.",
        topic_partitions=2,
        planner_data_dir=data_dir,
        **FAKE_SECRETS,
    )


@pytest.fixture(scope="module")
def planner(broker: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One planner worker for the module; tests use distinct order ids."""
    root = tmp_path_factory.mktemp("planner")
    settings = planner_settings(broker, root / "data")
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


def held_order(order_id: str, ship_after_s: int, **more: object) -> Order:
    return order(order_id, skus={"A": 1}).model_copy(update={"ship_after": ship_after_s, **more})


async def test_an_old_flow_order_is_held_then_released_on_time(planner: Settings) -> None:
    """TikTok's old flow: no label within the buyer's remorse window (ship_after)."""
    ship_after = int(time.time()) + 4
    await produce(planner, ORDERS, "H1", held_order("H1", ship_after))
    await produce(planner, BOXES, "H1", box("H1-B1", {"A": 1}, order_id="H1"))
    plans = plans_for(await consume(planner, PLANS, lambda v: bool(plans_for(v, "H1"))), "H1")
    assert [(p.status, p.release_at_ms) for p in plans] == [("held", ship_after * 1000)]
    assert jobs_for(await consume(planner, LABEL_JOBS, lambda v: False, timeout_s=1), "H1") == []
    jobs = jobs_for(await consume(planner, LABEL_JOBS, lambda v: bool(jobs_for(v, "H1"))), "H1")
    assert len(jobs) == 1 and jobs[0].created_at_ms >= ship_after * 1000
    # the release went through the orders topic, named as such
    values = await consume(planner, ORDERS, lambda v: False, timeout_s=1)
    releases = [o for o in map(lambda v: decode(Order, v), values) if isinstance(o, Order)]
    assert [o.cause for o in releases if o.order_id == "H1"][1].startswith("planner: hold ended")


async def test_a_cancellation_during_the_hold_means_no_job(planner: Settings) -> None:
    ship_after = int(time.time()) + 3
    await produce(planner, ORDERS, "H2", held_order("H2", ship_after))
    await produce(planner, BOXES, "H2", box("H2-B1", {"A": 1}, order_id="H2"))
    await consume(planner, PLANS, lambda v: bool(plans_for(v, "H2")))
    await produce(planner, ORDERS, "H2", order("H2", status=OrderStatus.CANCELLED, update_time=200))
    plans = plans_for(await consume(planner, PLANS, lambda v: len(plans_for(v, "H2")) >= 2), "H2")
    assert [p.status for p in plans] == ["held", "rejected"]
    await asyncio.sleep(ship_after - time.time() + 2)  # past the hold: still nothing
    assert jobs_for(await consume(planner, LABEL_JOBS, lambda v: False, timeout_s=1), "H2") == []


async def test_a_held_order_is_released_by_the_next_planner_after_a_restart(
    broker: object, tmp_path: Path
) -> None:
    """The hold lives in the join's table: a restarted planner (or whichever worker owns
    the partition after a rebalance) restores it and releases it on time."""
    settings = planner_settings(broker, tmp_path / "data")
    log = tmp_path / "planner.log"
    ship_after = int(time.time()) + 12
    with worker_process("planner", settings, log, b"Worker]: Ready"):
        await produce(settings, ORDERS, "H3", held_order("H3", ship_after))
        await produce(settings, BOXES, "H3", box("H3-B1", {"A": 1}, order_id="H3"))
        await consume(settings, PLANS, lambda v: bool(plans_for(v, "H3")))
    assert jobs_for(await consume(settings, LABEL_JOBS, lambda v: False, timeout_s=1), "H3") == []
    with worker_process("planner", settings, log, b"Worker]: Ready"):
        values = await consume(
            settings, LABEL_JOBS, lambda v: bool(jobs_for(v, "H3")), timeout_s=40
        )
        jobs = jobs_for(values, "H3")
    assert len(jobs) == 1 and jobs[0].created_at_ms >= ship_after * 1000


async def test_an_address_change_read_late_still_reaches_the_label_job(
    broker: object, tmp_path: Path
) -> None:
    """The orders topic held back behind the boxes topic: the order's partition carries
    thousands of other orders between its first version and its address change, so the
    planner reads the box that completes the order long before the change. The job must
    still carry the new address (the planner waits for its orders input: a barrier)."""
    from aiokafka import AIOKafkaProducer

    from workers.topics import ensure_topics

    settings = planner_settings(broker, tmp_path / "data")
    await ensure_topics(settings)
    names = Topics(settings)
    first = order("R1", skus={"A": 1})
    moved = first.model_copy(
        update={
            "event_id": "ev-R1-moved",
            "update_time": first.update_time + 10,
            "recipient": sealed("R1", city="Boise"),
        }
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        await producer.send_and_wait(names(ORDERS), encode(first), key=b"R1", partition=0)
        filler = [order(f"F{n}", skus={"A": 1}) for n in range(4000)]
        for f in filler:
            await producer.send(names(ORDERS), encode(f), key=f.order_id.encode(), partition=0)
        await producer.send_and_wait(names(ORDERS), encode(moved), key=b"R1", partition=0)
        await asyncio.sleep(0.05)  # the box closes after the address changed
        last = box("R1-B1", {"A": 1}, order_id="R1")
        await producer.send_and_wait(names(BOXES), encode(last), key=b"R1", partition=0)
    finally:
        await producer.stop()
    with worker_process("planner", settings, tmp_path / "planner.log", b"Worker]: Ready"):
        values = await consume(
            settings, LABEL_JOBS, lambda v: bool(jobs_for(v, "R1")), timeout_s=90
        )
    [job] = jobs_for(values, "R1")
    assert opened("R1", job.recipient).city == "Boise"


async def test_a_box_id_squatted_by_another_warehouse_changes_nothing(planner: Settings) -> None:
    """A station of warehouse A closes box SQ for warehouse B's order: refused visibly, and
    B's own box SQ is planned and labeled."""
    the_order = order("SQ1", skus={"A": 1}).model_copy(update={"warehouse_id": "WH-B"})
    squat = box("SQ", {"A": 1}, order_id="SQ1").model_copy(
        update={"warehouse_id": "WH-A", "event_id": "ev-squat"}
    )
    real = box("SQ", {"A": 1}, order_id="SQ1").model_copy(update={"warehouse_id": "WH-B"})
    await produce(planner, BOXES, "SQ1", squat)
    await produce(planner, ORDERS, "SQ1", the_order)
    await produce(planner, BOXES, "SQ1", real)
    jobs = jobs_for(await consume(planner, LABEL_JOBS, lambda v: bool(jobs_for(v, "SQ1"))), "SQ1")
    assert [[(p.box_id, p.warehouse_id) for p in j.parcels] for j in jobs] == [[("SQ", "WH-B")]]
    plans = plans_for(await consume(planner, PLANS, lambda v: len(plans_for(v, "SQ1")) >= 2), "SQ1")
    assert sorted((p.warehouse_id, p.status) for p in plans) == [
        ("WH-A", "rejected"),
        ("WH-B", "planned"),
    ]


async def test_a_repair_request_is_read_back_by_offset_and_joined_again(
    planner: Settings,
) -> None:
    """The auditor names records by offset; the planner reads them itself and joins them
    again (an intact state: the same plan and job, same ids). A request naming another
    order's records joins nothing; one in the wrong partition is dead-lettered."""
    the_order = order("RP1", skus={"A": 1})
    partition, order_offset = await produce(planner, ORDERS, "RP1", the_order)
    _, box_offset = await produce(planner, BOXES, "RP1", box("RP1-B1", {"A": 1}, order_id="RP1"))
    [job] = jobs_for(await consume(planner, LABEL_JOBS, lambda v: bool(jobs_for(v, "RP1"))), "RP1")
    request = RepairRequest(
        event_id="repair-RP1",
        order_id="RP1",
        partition=partition,
        order_offset=order_offset,
        box_offsets=[box_offset],
        boxes=["RP1-B1"],
        requested_at_ms=now_ms(),
    )
    await produce(planner, REPAIRS, "RP1", request)
    jobs = jobs_for(
        await consume(planner, LABEL_JOBS, lambda v: len(jobs_for(v, "RP1")) >= 2), "RP1"
    )
    # the same job and plan again: the labeler's ledger labels a job id once
    assert all(again == job for again in jobs)
    plans = plans_for(await consume(planner, PLANS, lambda v: len(plans_for(v, "RP1")) >= 2), "RP1")
    assert all(again == plans[0] for again in plans)
    await asyncio.sleep(1)
    jobs_made = len(jobs_for(await consume(planner, LABEL_JOBS, lambda v: False, 1), "RP1"))
    plans_made = len(plans_for(await consume(planner, PLANS, lambda v: False, 1), "RP1"))

    # another order of the same partition names RP1's records: nothing is joined
    other = next(
        f"RQ{n}"
        for n in range(100)
        if DefaultPartitioner()(f"RQ{n}".encode(), [0, 1], [0, 1]) == partition
    )
    hostile = request.model_copy(update={"event_id": "repair-hostile", "order_id": other})
    await produce(planner, REPAIRS, other, hostile)
    wrong = hostile.model_copy(update={"event_id": "repair-wrong", "partition": 1 - partition})
    await produce(planner, REPAIRS, other, wrong)  # after the hostile one, in its partition
    rejected = models(
        RejectedRecord,
        await consume(
            planner,
            ORDERS_REJECTED,
            lambda v: any(b"repair-wrong" in r.original() for r in models(RejectedRecord, v)),
        ),
    )
    [dead] = [r for r in rejected if b"repair-wrong" in r.original()]
    assert dead.reason.startswith("partition: the request names partition")
    values = await consume(planner, LABEL_JOBS, lambda v: False, timeout_s=1)
    assert len(jobs_for(values, "RP1")) == jobs_made and not jobs_for(values, other)
    assert len(plans_for(await consume(planner, PLANS, lambda v: False, 1), "RP1")) == plans_made


async def test_a_finished_state_forgets_its_recipient_and_an_erasure_tombstones_it(
    broker: object, tmp_path: Path
) -> None:
    """Kept only while needed: a few seconds after its job, the order's state in the
    changelog holds no recipient, not even sealed; an erasure of its shop tombstones it,
    and a later box of the erased order is not joined."""
    settings = planner_settings(broker, tmp_path / "data").model_copy(
        update={"planner_forget_recipient_s": 1.0, "planner_tidy_every_s": 0.5}
    )
    changelog = f"{settings.topic_namespace}{settings.planner_app_id}-orders-changelog"
    with worker_process("planner", settings, tmp_path / "planner.log", b"Worker]: Ready"):
        await produce(settings, ORDERS, "E1", order("E1", skus={"A": 1}))
        await produce(settings, BOXES, "E1", box("E1-B1", {"A": 1}, order_id="E1"))
        [job] = jobs_for(
            await consume(settings, LABEL_JOBS, lambda v: bool(jobs_for(v, "E1"))), "E1"
        )
        assert job.recipient is not None  # the job carries it, sealed

        async def latest() -> tuple[int, bytes | None]:
            records = [r for r in await read_to_end(settings, changelog) if r.key == b"E1"]
            return len(records), records[-1].value if records else None

        deadline = time.monotonic() + 30
        while b'"recipient":"pf1.' in ((await latest())[1] or b'"recipient":"pf1.'):
            assert time.monotonic() < deadline, "the state still keeps the recipient"
            await asyncio.sleep(0.5)
        state = OrderState.model_validate_json((await latest())[1] or b"")
        assert state.job is not None and state.order is not None
        assert (state.job.recipient, state.order.recipient) == (None, None)
        assert state.job.job_id == job.job_id  # the rest is kept

        erasure = Erasure(
            event_id="erase-shop-1",
            request_id="erase-shop-1",
            scope="shop",
            shop_id="shop-1",
            principal="test",
            at_ms=now_ms(),
        )
        await produce(settings, ERASURES, "shop-1", erasure)
        deadline = time.monotonic() + 30
        while (await latest())[1] is not None:
            assert time.monotonic() < deadline, "the erased order's state was not tombstoned"
            await asyncio.sleep(0.5)
        await produce(settings, BOXES, "E1", box("E1-B2", {"A": 1}, order_id="E1"))
        await produce(
            settings,
            ORDERS,
            "E2",
            order("E2", skus={"A": 1}).model_copy(update={"shop_id": "shop-2"}),
        )
        await produce(settings, BOXES, "E2", box("E2-B1", {"A": 1}, order_id="E2"))
        await consume(settings, LABEL_JOBS, lambda v: bool(jobs_for(v, "E2")))
    plans = plans_for(await consume(settings, PLANS, lambda v: False, timeout_s=1), "E1")
    assert [p.box_id for p in plans] == ["E1-B1"]  # nothing for the box after the erasure
