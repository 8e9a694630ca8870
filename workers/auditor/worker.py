"""The auditor's loop: a plain aiokafka consumer over the planner's inputs and outputs.

It reads ``orders.v1``, ``warehouse.boxes.v1``, ``parcel-plans.v1``, ``label-jobs.v1``,
``labels.v1`` and ``label-failures.v1`` from ``auditor_lookback_s`` ago (no consumer
group: it keeps no offsets, its memory is rebuilt from the topics on start), and acts
only once it has caught up with them. What it concludes is in ``workers.auditor.audit``.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge

from schemas.alert import Alert
from schemas.box import BoxClosed
from schemas.codec import decode, encode
from schemas.common import derived_id, now_ms
from schemas.label import LabelFailure, LabelJob, LabelResult
from schemas.order import Order
from schemas.plan import ParcelPlan
from schemas.repair import RepairRequest
from schemas.topics import (
    ALERTS,
    BOXES,
    BOXES_REJECTED,
    LABEL_FAILURES,
    LABEL_JOBS,
    LABELS,
    ORDERS,
    PLANS,
)
from schemas.topics import (
    REPAIRS as REPAIRS_TOPIC,
)
from workers.auditor.audit import ORDER_NEVER_ARRIVED, Audit, Expire, Ref, Repair, Unlabeled
from workers.errors import problem_of
from workers.kafka import (
    Refused,
    Topics,
    dead_letter_key,
    make_producer,
    max_value_bytes,
    read_record,
    rejected_record,
)
from workers.kafka_auth import client_options
from workers.runtime import Runtime, worker_runtime
from workers.settings import AuditorSettings

log = structlog.get_logger(__name__)

REPAIRS = Counter(
    "parcelflow_auditor_repairs", "Repairs asked of the planner (an order and its boxes)."
)
EXPIRED = Counter("parcelflow_auditor_expired_boxes", "Boxes whose order never arrived.")
UNLABELED = Counter("parcelflow_auditor_unlabeled_jobs", "Label jobs reported as unlabeled.")
WAITING = Gauge("parcelflow_auditor_boxes_without_plan", "Boxes seen without a plan yet.")
REMEMBERED = Gauge("parcelflow_auditor_open_orders", "Orders whose state the auditor keeps.")
SKIPPED = Counter(
    "parcelflow_auditor_skipped_records",
    "Records the auditor could not take (the planner dead-letters the same), by topic.",
    ["topic"],
)


class Auditor:
    def __init__(self, settings: AuditorSettings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.names = Topics(settings)
        self.audit = Audit(
            repair_after_ms=int(settings.auditor_repair_after_s * 1000),
            box_wait_ms=int(settings.planner_box_wait_s * 1000),
            label_after_ms=int(settings.auditor_label_after_s * 1000),
            lookback_ms=int(settings.auditor_lookback_s * 1000),
            max_bytes=max_value_bytes(settings),
        )
        self.repairs = 0
        self.since_ms = now_ms() - int(settings.auditor_lookback_s * 1000)

    def observe(self, message: ConsumerRecord) -> None:
        """Take one record; one the auditor cannot take is logged, counted and skipped."""
        try:
            problem = self.take(message)
        except Exception as exc:  # noqa: BLE001 (no record in retention may stop the net)
            problem = f"auditor error: {problem_of(exc)}"
        if problem is not None:
            SKIPPED.labels(message.topic).inc()
            log.warning(
                "record_skipped",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                reason=problem[:300],
            )

    def take(self, message: ConsumerRecord) -> str | None:
        """Feed one record to the audit; why it was not taken, or None."""
        if 0 <= (message.timestamp or 0) < self.since_ms:
            return None  # older than the lookback (a broker without a time index seeks early)
        topic, value, now = message.topic, message.value, now_ms()
        n = self.names
        at = Ref(message.partition, message.offset)
        limit = self.settings.max_input_bytes
        if topic == n(ORDERS):
            order = read_record(Order, message, limit)
            if isinstance(order, Refused):
                return order.reason
            self.audit.on_order(order, now, at)
        elif topic == n(BOXES):
            box = read_record(BoxClosed, message, limit)
            if isinstance(box, Refused):
                return box.reason
            self.audit.on_box(box, message.key, value, now, at)
        elif topic == n(PLANS):
            plan = decode(ParcelPlan, value)
            if not isinstance(plan, str):
                self.audit.on_plan(plan, now)
        elif topic == n(LABEL_JOBS):
            job = decode(LabelJob, value)
            if not isinstance(job, str):
                self.audit.on_job(job, now)
        elif topic == n(LABELS):
            label = decode(LabelResult, value)
            if not isinstance(label, str):
                self.audit.on_label_result(label.job_id, now)
        elif topic == n(LABEL_FAILURES):
            failure = decode(LabelFailure, value)
            if not isinstance(failure, str):
                self.audit.on_label_result(failure.job_id, now)
        return None

    async def act(self) -> None:
        self.audit.forget_old(now_ms())
        for action in self.audit.due(now_ms()):
            if isinstance(action, Repair):
                if not await self.ask_repair(action):
                    continue
                reasons = []
                if action.boxes:
                    reasons.append("boxes should have a parcel plan by now")
                if action.job_missing:
                    reasons.append("the order was released but its label job never came")
                log.warning(
                    "repair_asked",
                    order_id=action.order_id,
                    boxes_without_plan=action.boxes,
                    job_missing=action.job_missing,
                    events=len(action.boxes_at) + (action.order is not None),
                    reason="; ".join(reasons),
                )
            elif isinstance(action, Expire):
                await self.expire(action)
            elif isinstance(action, Unlabeled):
                UNLABELED.inc()
                log.warning(
                    "job_without_label",
                    job_id=action.job_id,
                    order_id=action.order_id,
                    waited_s=action.waited_ms // 1000,
                )
        WAITING.set(len(self.audit.waiting))
        REMEMBERED.set(len(self.audit.orders))

    async def ask_repair(self, action: Repair) -> bool:
        """Ask the planner to join the order's records again; False if none is known."""
        refs = ([action.order] if action.order is not None else []) + action.boxes_at
        if not refs:
            return False
        request = RepairRequest(
            event_id=derived_id("repair", action.order_id, str(now_ms())),
            order_id=action.order_id,
            partition=refs[0].partition,
            order_offset=action.order.offset if action.order is not None else None,
            box_offsets=[ref.offset for ref in action.boxes_at],
            boxes=action.boxes,
            job_missing=action.job_missing,
            requested_at_ms=now_ms(),
        )
        await self.producer.send_and_wait(
            self.names(REPAIRS_TOPIC),
            encode(request),
            key=action.order_id.encode(),
            partition=request.partition,
        )
        self.repairs += 1
        REPAIRS.inc()
        return True

    async def expire(self, action: Expire) -> None:
        box = action.box
        waited_s = self.settings.planner_box_wait_s
        reason = f"{ORDER_NEVER_ARRIVED} (waited {waited_s:g} s)"
        record = rejected_record(
            source_topic=self.names(BOXES),
            value=box.raw,
            key=box.key,
            reason=reason,
            worker="auditor",
            max_bytes=max_value_bytes(self.settings),
        )
        alert = Alert(
            event_id=derived_id("order-never-arrived", box.box.order_id, box.box.box_id),
            kind="order_never_arrived",
            order_id=box.box.order_id,
            message=f"Box {box.box.box_id} closed at station {box.box.station_id} for order "
            f"{box.box.order_id}, which never arrived. Check the order id on the box.",
            details={"box_id": box.box.box_id, "waited_s": waited_s},
            at_ms=now_ms(),
        )
        await self.producer.send_and_wait(
            self.names(BOXES_REJECTED), encode(record), key=dead_letter_key(box.key)
        )
        await self.producer.send_and_wait(
            self.names(ALERTS), encode(alert), key=box.box.order_id.encode()
        )
        EXPIRED.inc()
        log.error("order_never_arrived", order_id=box.box.order_id, box_id=box.box.box_id)


async def seek_to_lookback(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: int
) -> None:
    """Start each partition at its first record since ``since`` (ms), or at its end."""
    found = await consumer.offsets_for_times({tp: since for tp in partitions})
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        at = found.get(tp)
        consumer.seek(tp, at.offset if at is not None else ends[tp])


async def run(settings: AuditorSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or Ctrl-C)."""
    async with worker_runtime(settings, "auditor", stop) as runtime:
        await audit(settings, runtime)


async def audit(settings: AuditorSettings, runtime: Runtime[AuditorSettings]) -> None:
    stop = runtime.stop
    names = Topics(settings)
    topics = [names(t) for t in (ORDERS, BOXES, PLANS, LABEL_JOBS, LABELS, LABEL_FAILURES)]
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    producer = make_producer(settings)
    runtime.wants_broker(producer.client)
    runtime.wants_consumer("the auditor's reader", consumer)
    auditor = Auditor(settings, producer)
    try:
        await producer.start()
        await consumer.start()
        await consumer.topics()
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await seek_to_lookback(consumer, partitions, auditor.since_ms)
        ends = await consumer.end_offsets(partitions)
        behind = {tp for tp, end in ends.items() if end > 0}
        log.info("auditor_ready", partitions=len(partitions), catching_up=len(behind))
        next_check = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for messages in batches.values():
                for message in messages:
                    auditor.observe(message)
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
            if not behind and loop.time() >= next_check:
                await auditor.act()
                next_check = loop.time() + settings.auditor_interval_s
    finally:
        await consumer.stop()
        await producer.stop()
        log.info("auditor_stopped", repairs=auditor.repairs)
