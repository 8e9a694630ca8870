"""The auditor on a real broker: repairs a box the planner missed and an order whose job
never came, expires orphan boxes, ignores what is older than its lookback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from schemas.alert import Alert
from schemas.codec import encode
from schemas.common import now_ms
from schemas.plan import ParcelPlan
from schemas.rejected import RejectedRecord
from schemas.repair import RepairRequest
from schemas.topics import ALERTS, BOXES, BOXES_REJECTED, LABEL_JOBS, ORDERS, PLANS, REPAIRS
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.processes import in_process
from tests.unit.factories import box, order
from workers.auditor.worker import run
from workers.kafka import Topics
from workers.planner.join import OrderState, on_box, on_order
from workers.settings import Settings


async def test_repairs_a_missed_box_and_expires_a_box_without_order(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        auditor_repair_after_s=0.5, planner_box_wait_s=1.5, auditor_interval_s=0.1
    )
    # no planner runs: the box of a complete order stands for a box the planner missed
    missed = box("B1", {"A": 2, "B": 1}, order_id="O1")
    orphan = box("B7", {"A": 1}, order_id="O-unknown")
    partition, order_at = await produce(settings, ORDERS, "O1", order("O1"))
    _, box_at = await produce(settings, BOXES, "O1", missed)
    await produce(settings, BOXES, "O-unknown", orphan)
    # older than the lookback (7 days): not read, so not expired
    ancient = box("B8", {"A": 1}, order_id="O-ancient")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    ten_days_ago = now_ms() - 10 * 86_400_000
    await producer.send_and_wait(
        Topics(settings)(BOXES), encode(ancient), key=b"O-ancient", timestamp_ms=ten_days_ago
    )
    await producer.stop()
    async with in_process(run, settings):
        # the planner is asked to join the order and its box again, named by offset
        requests = models(RepairRequest, await consume(settings, REPAIRS, lambda v: len(v) >= 1))
        first = requests[0]
        assert (first.order_id, first.partition) == ("O1", partition)
        assert (first.order_offset, first.box_offsets) == (order_at, [box_at])
        assert first.boxes == ["B1"] and first.job_missing  # no planner runs here
        # the auditor wrote no order and no box
        assert len(await consume(settings, ORDERS, lambda v: False, timeout_s=0.5)) == 1
        assert len(await consume(settings, BOXES, lambda v: False, timeout_s=0.5)) == 3
        rejected = models(
            RejectedRecord, await consume(settings, BOXES_REJECTED, lambda v: len(v) >= 1)
        )
        assert rejected[0].original() == encode(orphan)
        assert rejected[0].reason.startswith("order never arrived")
        alerts = models(Alert, await consume(settings, ALERTS, lambda v: len(v) >= 1))
        assert [(a.kind, a.order_id) for a in alerts] == [("order_never_arrived", "O-unknown")]
        # the plan appears, the job does not: the order is still repaired
        plan = ParcelPlan(event_id="plan-O1-B1", order_id="O1", box_id="B1", status="planned")
        await produce(settings, PLANS, "O1", plan)
        await asyncio.sleep(1.0)
        before = len(await consume(settings, REPAIRS, lambda v: False, timeout_s=0.5))
        later = await consume(settings, REPAIRS, lambda v: len(v) > before, timeout_s=5)
        last = models(RepairRequest, later)[-1]
        assert last.job_missing and last.boxes == []
        # the job appears: repairs stop
        state = on_order(OrderState(order_id="O1"), order("O1"), 0).state
        await produce(settings, LABEL_JOBS, "O1", on_box(state, missed, 0).jobs[0])
        await asyncio.sleep(1.0)
        before = len(await consume(settings, REPAIRS, lambda v: False, timeout_s=0.5))
        await asyncio.sleep(1.5)
        after = len(await consume(settings, REPAIRS, lambda v: False, timeout_s=0.5))
        assert after == before
    rejected = await consume(settings, BOXES_REJECTED, lambda v: False, timeout_s=0.5)
    assert len(rejected) == 1  # expired once
