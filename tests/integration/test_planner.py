"""The Faust planner as a real worker process on a real broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from schemas.label import LabelJob
from schemas.order import OrderStatus
from schemas.plan import ParcelPlan
from schemas.rejected import RejectedRecord
from schemas.topics import BOXES, BOXES_REJECTED, LABEL_JOBS, ORDERS, ORDERS_REJECTED, PLANS
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.processes import worker_process
from tests.unit.factories import box, order
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
