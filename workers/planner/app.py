"""The planner's Faust app: one agent over orders and boxes, one table of join state.

One agent reads the co-partitioned topics (orders, boxes, and the auditor's repair
requests, ``workers.planner.repairs``) at concurrency 1, so every event of an order
is handled in order by the worker that owns the order's partition, and the table is
written by that agent only. Events come in batches (``take_events``): each order's state
is read and written once per batch, not once per event, and the batch's plans and jobs
are acknowledged by the broker before Faust acks the batch's events. Values stay raw
bytes (orjson and pydantic do the work).

No record stops the join: an event that is too large, badly keyed, invalid, or whose
plans, job or state would not fit a Kafka record is dead-lettered with its reason and the
order's state stays as it was. What the planner cannot survive (the broker refusing its
writes) ends the process with a non-zero code, within ``planner_stop_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
import structlog
from faust.stores.memory import Store as MemoryStore
from faust.types import TP, EventT
from prometheus_client import Counter, Gauge, Histogram

from schemas.box import BoxClosed
from schemas.codec import encode
from schemas.common import now_ms
from schemas.order import Order
from schemas.repair import RepairRequest
from schemas.topics import (
    BOXES,
    BOXES_REJECTED,
    LABEL_JOBS,
    ORDERS,
    ORDERS_REJECTED,
    PLANS,
    REPAIRS,
)
from workers import logs
from workers.errors import problem_of
from workers.kafka import (
    Refused,
    Topics,
    dead_letter_key,
    dead_letter_of,
    log_dead_letter,
    max_value_bytes,
    read_record,
)
from workers.kafka_auth import faust_credentials
from workers.loop import collect_garbage_less_often, new_event_loop
from workers.planner.delivery import deliver_every_offset, wait_at_most
from workers.planner.join import (
    READ_ALL,
    Inputs,
    OrderState,
    Step,
    TooLarge,
    encode_step,
    on_event,
    release_due,
    republish,
    restore,
    resume,
)
from workers.planner.repairs import Fetcher, named_records
from workers.planner.retention import (
    FORGOTTEN,
    TOMBSTONED,
    Erased,
    Finished,
    follow_erasures,
    without_recipient,
)
from workers.planner.skips import SkipWatch
from workers.plugins import adapt_kafka_clients
from workers.runtime import Runtime, ops_server
from workers.settings import PlannerSettings
from workers.topics import ensure_topics

log = structlog.get_logger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
OnFatal = Callable[[BaseException], None]  # told when the join cannot go on


EVENTS = Counter("parcelflow_planner_events", "Order and box events joined (or rejected).")
PLANS_MADE = Counter("parcelflow_planner_plans", "Parcel plans published (planned or rejected).")
JOBS_MADE = Counter("parcelflow_planner_jobs", "Label jobs published.")
REJECTED = Counter(
    "parcelflow_planner_rejected",
    "Events dead-lettered, by reason: invalid, too_large, error.",
    ["reason"],
)
BATCH_EVENTS = Histogram(
    "parcelflow_planner_batch_events",
    "Events per batch the join takes at once.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
)
BATCH_SECONDS = Histogram(
    "parcelflow_planner_batch_seconds",
    "Time to join one batch and have the broker ack its records.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
IN_FLIGHT = Gauge(
    "parcelflow_planner_batches_in_flight",
    "Batches joined whose records the broker has not acknowledged yet (at most "
    "PARCELFLOW_PLANNER_BATCHES_IN_FLIGHT: always at it, the broker is the bottleneck).",
)
HELD = Gauge(
    "parcelflow_planner_orders_held",
    "Complete orders this planner holds until a time (TikTok's buyer remorse window).",
)
RELEASES = Counter(
    "parcelflow_planner_hold_releases",
    "Release events written for held orders whose hold had ended.",
)
BARRIERS = Counter(
    "parcelflow_planner_barriers",
    "Orders complete while their orders partition was read only up to before their newest "
    "box: released once it is read past it, or 10 s later as it stands.",
)
REPAIRED = Counter(
    "parcelflow_planner_repairs",
    "The auditor's repair requests, by how they were served: from_state (the state held "
    "every record named: republished), read_back (records read by offset and joined "
    "again), not_read_yet (the join had not reached them: joined when it does).",
    ["source"],
)
SKIPPED = Counter(
    "parcelflow_planner_offsets_skipped",
    "Offsets of orders.v1 and warehouse.boxes.v1 never delivered to the join.",
)


class PlannerApp(faust.App):
    """Faust's app whose consumer delivers every offset (``workers.planner.delivery``) and
    waits on a fetch no longer than our setting."""

    fetch_max_wait_ms = 500

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        deliver_every_offset(consumer)
        wait_at_most(consumer, self.fetch_max_wait_ms)
        return consumer


class JoinTable(faust.Table[bytes, bytes]):
    """Faust table whose changelog records the planner sends itself.

    Faust's own write (``table[key] = value``) queues the changelog record in a buffer
    that nobody awaits, and at a stop its last flush comes before the agents stop: a
    batch's events could be committed while its states never reach the changelog, and a
    restarted worker would lack those orders (read in Faust's stop sequence).
    ``remember`` only sets the value in memory; the planner sends the changelog record,
    to the partition of the event that changed the key, with the batch's plans and jobs,
    and acks the batch once the broker has them all.
    """

    def remember(self, key: bytes, value: bytes, partition: int) -> None:
        store = self.data
        store[key] = value
        if isinstance(store, MemoryStore):  # which keys a rebalance drops, as Faust does
            store._key_partition[key] = partition

    def forget(self, key: bytes) -> None:
        """Drop ``key`` from memory (the caller writes its tombstone to the changelog)."""
        store = self.data
        if isinstance(store, MemoryStore):
            store.data.pop(key, None)
            store._key_partition.pop(key, None)
        else:
            store.pop(key, None)

    def partition_of(self, key: bytes) -> int | None:
        store = self.data
        return store._key_partition.get(key) if isinstance(store, MemoryStore) else None

    def stored(self) -> list[tuple[bytes, bytes]]:
        """Every (key, state) this worker holds now."""
        store = self.data
        if isinstance(store, MemoryStore):
            return list(store.data.items())
        return list(self.items())


class Holds:
    """The held orders of this worker with a time set (key -> (until ms, partition)), so
    that the clock reads a few states, not the whole table. Kept by every batch that
    writes a state, and rebuilt from the table after each rebalance's recovery."""

    MARK = b'"hold":{'  # in a state's JSON: a hold is set (checked before parsing)

    def __init__(self) -> None:
        self.until: dict[bytes, tuple[int, int]] = {}
        self.sent: dict[bytes, int] = {}  # key -> when its release was last written
        # held at a barrier: key -> (partition, its newest box's timestamp, wait ends at)
        self.barriers: dict[bytes, tuple[int, int, int]] = {}

    def note(self, key: bytes, state: OrderState, partition: int) -> None:
        hold = state.hold
        if hold is not None and hold.until_ms and not state.released:
            self.until[key] = (hold.until_ms, partition)
        else:
            self.forget(key)
        if hold is not None and hold.barrier and not state.released:
            if key not in self.barriers:
                BARRIERS.inc()
            self.barriers[key] = (partition, state.latest_box_ms, hold.until_ms)
        else:
            self.barriers.pop(key, None)
        HELD.set(len(self.until) - len(self.barriers))

    def forget(self, key: bytes) -> None:
        self.until.pop(key, None)
        self.sent.pop(key, None)
        self.barriers.pop(key, None)

    def rebuild(self, table: JoinTable) -> None:
        self.until.clear()
        self.sent.clear()
        self.barriers.clear()
        for key, value in table.stored():
            partition = table.partition_of(key)
            if value and self.MARK in value and partition is not None:
                self.note(key, OrderState.model_validate_json(value), partition)
        HELD.set(len(self.until) - len(self.barriers))

    def due(self, now: int, resend_after_ms: int) -> list[tuple[bytes, int]]:
        """Held keys whose hold has ended and whose release was not written lately."""
        return [
            (key, partition)
            for key, (until, partition) in self.until.items()
            if until <= now and now - self.sent.get(key, -resend_after_ms) >= resend_after_ms
        ]


class Planner:
    """What every batch needs: the app, its table, topic names and the size limits."""

    def __init__(self, app: faust.App, table: JoinTable, settings: PlannerSettings) -> None:
        self.settings = settings
        names = Topics(settings)
        self.app = app
        self.table = table
        self.orders_topic = names(ORDERS)
        self.boxes_topic = names(BOXES)
        self.repairs_topic = names(REPAIRS)
        self.fetcher = Fetcher(settings)
        self.plans_topic = names(PLANS)
        self.jobs_topic = names(LABEL_JOBS)
        self.rejected = {
            names(ORDERS): names(ORDERS_REJECTED),
            names(BOXES): names(BOXES_REJECTED),
            names(REPAIRS): names(ORDERS_REJECTED),  # a request the planner cannot take
        }
        self.changelog = table.changelog_topic.get_topic_name()
        self.max_input = settings.max_input_bytes
        self.max_output = max_value_bytes(settings)
        self.watch = SkipWatch()
        self.holds = Holds()
        self.finished = Finished()
        self.erased = Erased()
        self.orders_read: dict[int, int] = {}  # orders partition -> next offset the join reads
        self.orders_time: dict[int, int] = {}  # orders partition -> newest timestamp read, ms

    def inputs(self, message: Any, advance: bool = True) -> Inputs:
        """Where the join's reading stands at this event: its timestamp, and the time up
        to which its orders partition is read (all of it, as far as the consumer's last
        fetch knew). A record read back for a repair (``advance`` false) moves nothing."""
        partition = message.partition
        event_ms = round((message.timestamp or 0) * 1000)  # Faust gives seconds
        if advance and message.topic == self.orders_topic:
            self.orders_read[partition] = message.offset + 1
            self.orders_time[partition] = max(self.orders_time.get(partition, 0), event_ms)
        if self.orders_read_all(partition):
            return Inputs(event_ms, READ_ALL)
        return Inputs(event_ms, self.orders_time.get(partition, 0))

    def orders_read_all(self, partition: int) -> bool:
        """Whether the join has read every record of this orders partition that the
        consumer's last fetch knew of (its high watermark)."""
        highwater = self.app.consumer.highwater(TP(self.orders_topic, partition))
        return highwater is not None and self.orders_read.get(partition, 0) >= highwater

    def orders_read_past(self, partition: int, ms: int) -> bool:
        return self.orders_time.get(partition, 0) > ms or self.orders_read_all(partition)


class Rejected(Exception):
    """An event the join cannot take; its message is the dead letter's reason."""


class ErasedOrder(Exception):
    """An event of an order (or shop) whose buyer data was erased: not joined, not kept."""


class Batch:
    """One batch's order states, read once from the table and written once back."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.states: dict[bytes, OrderState] = {}
        self.partitions: dict[bytes, int] = {}
        self.encoded: dict[bytes, bytes] = {}  # each changed state, as it will be written
        self.sends: list[Awaitable[Any]] = []
        self.clock = now_ms()

    def step(self, message: Any, advance: bool = True) -> list[tuple[str, bytes]]:
        """The records one event makes (topic, value), keyed by its order id; raises
        Rejected (or TooLarge) with the reason. ``advance``: see ``Planner.inputs``."""
        p = self.planner
        event = (
            read_record(Order, message, p.max_input)
            if message.topic == p.orders_topic
            else read_record(BoxClosed, message, p.max_input)
        )
        if isinstance(event, Refused):
            raise Rejected(event.reason)
        key = message.key
        state = self.states.get(key)
        if state is None:
            state = restore(event.order_id, p.table.get(key))
        owner = event if isinstance(event, Order) else state.order
        shop = owner.shop_id if owner is not None else ""
        if p.erased.covers(event.order_id, shop, self.clock):
            raise ErasedOrder(event.order_id)
        step = on_event(state, event, self.clock, p.inputs(message, advance))
        if step.refusal:
            raise Rejected(step.refusal)
        return self.apply(key, message.partition, state, step)

    async def repair(self, message: Any) -> list[tuple[str, bytes]]:
        """The records an auditor's repair request makes: the order and box records it
        names (``workers.planner.repairs``), read and joined again."""
        p = self.planner
        request = read_record(RepairRequest, message, p.max_input)
        if isinstance(request, Refused):
            raise Rejected(request.reason)
        if request.partition != message.partition:
            raise Rejected(
                f"partition: the request names partition {request.partition} "
                f"but is in partition {message.partition}"
            )
        key = message.key
        state = self.states.get(key)
        if state is None:
            state = restore(request.order_id, p.table.get(key))
        held = {box.box_id for box in state.boxes.values()}
        if (
            state.order is not None
            and set(request.boxes) <= held
            and (state.job is not None or not request.job_missing)
        ):  # the join has every record named: what it made, again (same ids)
            REPAIRED.labels("from_state").inc()
            log.info("order_repaired", order_id=request.order_id, source="state")
            return self.apply(key, message.partition, state, republish(state))
        # records past what the join has read of their partition since it was assigned
        # are joined when it reaches them, in order; the others are read back
        wanted = [
            (topic, partition, offset)
            for topic, partition, offset in named_records(request, p.orders_topic, p.boxes_topic)
            if offset <= p.watch.highest.get((topic, partition), offset)
        ]
        made: list[tuple[str, bytes]] = []
        for record in await p.fetcher.read(wanted) if wanted else []:
            if record.key != message.key:
                log.warning(
                    "repair_record_refused",
                    order_id=request.order_id,
                    topic=record.topic,
                    offset=record.offset,
                    reason="keyed by another order",
                )
                continue
            try:
                made += self.step(record, advance=False)
            except (Rejected, TooLarge) as exc:  # dead-lettered when first read
                log.warning(
                    "repair_record_refused",
                    order_id=request.order_id,
                    topic=record.topic,
                    offset=record.offset,
                    reason=str(exc)[:300],
                )
        REPAIRED.labels("read_back" if wanted else "not_read_yet").inc()
        log.info(
            "order_repaired",
            order_id=request.order_id,
            source="read_back" if wanted else "not_read_yet",
            boxes_without_plan=request.boxes,
            job_missing=request.job_missing,
            records=len(wanted),
            made=len(made),
        )
        return made

    def resume_barriers(self) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
        """Orders held at a barrier whose orders partition is now read past their newest
        box: resumed (``join.resume``), with the records that makes."""
        p = self.planner
        made = []
        for key, (partition, box_ms, until_ms) in list(p.holds.barriers.items()):
            if not p.orders_read_past(partition, box_ms) and self.clock < until_ms:
                continue
            state = self.states.get(key)
            if state is None:
                stored = p.table.get(key)
                if stored is None:  # the partition went to another worker
                    p.holds.forget(key)
                    continue
                state = OrderState.model_validate_json(stored)
            try:
                made.append((key, self.apply(key, partition, state, resume(state, self.clock))))
            except TooLarge as exc:  # as at the event that made it complete: nothing
                log.warning("planner_resume_too_large", order_id=state.order_id, error=str(exc))
                p.holds.forget(key)
        return made

    def apply(
        self, key: bytes, partition: int, state: OrderState, step: Step
    ) -> list[tuple[str, bytes]]:
        """Keep a step's state for the batch's write, and its records (topic, value)."""
        p = self.planner
        encoded = encode_step(state, step, p.max_output)
        self.states[key] = encoded.step.state
        for job in encoded.step.jobs:
            log.info(
                "label_job",
                order_id=job.order_id,
                job_id=job.job_id,
                box_ids=[parcel.box_id for parcel in job.parcels],
            )
        if encoded.state is not None:
            self.partitions[key] = partition
            self.encoded[key] = encoded.state
            p.holds.note(key, encoded.step.state, partition)
            p.finished.note(key, encoded.step.state)
        return [(p.plans_topic, plan) for plan in encoded.plans] + [
            (p.jobs_topic, job) for job in encoded.jobs
        ]

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        producer = self.planner.app.producer
        headers = RELEASE_HEADERS if topic == self.planner.orders_topic else None
        self.sends.append(
            await producer.send(
                topic, key, value, partition=partition, timestamp=None, headers=headers
            )
        )

    async def dead_letter(self, event: EventT[bytes], reason: str) -> None:
        message = event.message
        record = dead_letter_of(message, reason, "planner", self.planner.max_output)
        topic = self.planner.rejected[message.topic]
        await self.send(topic, dead_letter_key(message.key), encode(record))
        log_dead_letter(message, record, topic)

    async def finish(self) -> asyncio.Future[Any]:
        """Write the changed states; the future is done when the broker has every record
        of the batch (or failed with the broker's refusal)."""
        p = self.planner
        for key, partition in self.partitions.items():
            value = self.encoded[key]
            p.table.remember(key, value, partition)
            await self.send(p.changelog, key, value, partition)
        return asyncio.gather(*self.sends)


async def join_batch(planner: Planner, events: Sequence[EventT[bytes]]) -> asyncio.Future[Any]:
    """Join one batch and hand its records to the producer; the next batch may be joined
    at once (the states are in the table). The future is done when the broker has every
    record of this batch."""
    batch = Batch(planner)
    made = dict.fromkeys((planner.plans_topic, planner.jobs_topic), 0)
    for event in events:
        message = event.message
        planner.watch.see(message.topic, message.partition, message.offset, batch.clock)
        try:
            if message.topic == planner.repairs_topic:
                records = await batch.repair(message)
            else:
                records = batch.step(message)
        except ErasedOrder as erased:
            REJECTED.labels("erased").inc()
            log.info("event_of_erased_order_dropped", order_id=str(erased)[:128])
            continue
        except (Rejected, TooLarge) as rejected:
            REJECTED.labels("too_large" if isinstance(rejected, TooLarge) else "invalid").inc()
            await batch.dead_letter(event, str(rejected))
            continue
        except Exception as exc:
            REJECTED.labels("error").inc()
            await batch.dead_letter(event, f"planner error: {problem_of(exc)}")
            log.exception("planner_error", order_id=str(event.message.key or b"")[:128])
            continue
        for topic, value in records:
            made[topic] += 1
            await batch.send(topic, message.key, value)
    for key, records in batch.resume_barriers():
        for topic, value in records:
            made[topic] += 1
            await batch.send(topic, key, value)
    written = await batch.finish()
    EVENTS.inc(len(events))
    PLANS_MADE.inc(made[planner.plans_topic])
    JOBS_MADE.inc(made[planner.jobs_topic])
    BATCH_EVENTS.observe(len(events))
    for topic, partition, first, last in planner.watch.overdue(batch.clock):
        SKIPPED.inc(last - first + 1)
        log.warning(
            "offsets_skipped",
            topic=topic,
            partition=partition,
            first=first,
            last=last,
            hint="never delivered to the join; the auditor asks for what they held again",
        )
    return written


async def release_ended_holds(planner: Planner) -> int:
    """Write a release event to the orders topic for each held order whose hold has ended
    (``join.release_due``); the join then releases it, in order with the order's other
    events. A release not joined within a while (a rebalance took the partition) is
    written again; a repeat is absorbed by the join."""
    clock = now_ms()
    written = 0
    for key, partition in planner.holds.due(clock, resend_after_ms=30_000):
        stored = planner.table.get(key)
        if stored is None:  # the partition went to another worker, which has its own index
            planner.holds.forget(key)
            continue
        state = OrderState.model_validate_json(stored)
        release = release_due(state, clock)
        if release is None:
            planner.holds.note(key, state, partition)
            continue
        await planner.app.producer.send(
            planner.orders_topic,
            key,
            encode(release),
            partition=partition,
            timestamp=None,
            headers=RELEASE_HEADERS,
        )
        planner.holds.sent[key] = clock
        written += 1
        log.info(
            "order_hold_ended", order_id=state.order_id, until_ms=state.hold and state.hold.until_ms
        )
    RELEASES.inc(written)
    return written


async def tidy_states(planner: Planner) -> tuple[int, int]:
    """Apply erasures and ``workers.planner.retention`` to the states this worker holds:
    (recipients forgotten, states tombstoned)."""
    settings, table, clock = planner.settings, planner.table, now_ms()
    erased = planner.erased
    new = erased.unapplied(clock)
    by_erasure = erased.matching(table, new) if new else []
    forget, drop = planner.finished.due(
        clock,
        int(settings.planner_forget_recipient_s * 1000),
        int(settings.planner_state_retention_s * 1000),
    )
    producer = planner.app.producer
    gone = 0
    for keys, why in ((by_erasure, "erasure"), (drop, "retention")):
        for key in keys:
            partition = table.partition_of(key)
            table.forget(key)
            planner.holds.forget(key)
            planner.finished.done.pop(key, None)
            if partition is not None:
                await producer.send(
                    planner.changelog, key, None, partition=partition, timestamp=None, headers=None
                )
                TOMBSTONED.labels(why).inc()
                gone += 1
    forgotten = 0
    for key in forget:
        stored, partition = table.get(key), table.partition_of(key)
        if stored is None or partition is None:
            planner.finished.done.pop(key, None)
            continue
        state = without_recipient(OrderState.model_validate_json(stored))
        value = state.model_dump_json().encode()
        table.remember(key, value, partition)
        await producer.send(
            planner.changelog, key, value, partition=partition, timestamp=None, headers=None
        )
        planner.finished.note(key, state)
        forgotten += 1
    FORGOTTEN.inc(forgotten)
    if forgotten or gone:
        log.info("planner_states_tidied", recipients_forgotten=forgotten, tombstoned=gone)
    return forgotten, gone


# on the release events the planner writes to the orders topic (for whoever reads them)
RELEASE_HEADERS = [("parcelflow-release", b"1")]


def faust_brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def new_app(settings: PlannerSettings) -> PlannerApp:
    """The planner's Faust app, configured, without its agent and table (the benchmark's
    Faust floor is this app with a counting agent)."""
    names = Topics(settings)
    app = PlannerApp(
        names.group(settings.planner_app_id),
        broker=faust_brokers(settings.kafka_bootstrap),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(settings.planner_data_dir),
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        table_cleanup_interval=3600,
        stream_buffer_maxsize=16384,
        broker_max_poll_records=5000,
        producer_linger=settings.kafka_linger_ms / 1000,
        producer_max_request_size=settings.kafka_max_message_bytes,
        producer_request_timeout=settings.kafka_request_timeout_s,
        # No standby table replicas: with them a restarted worker was seen to restore a
        # partition from its highwater and stall (README, "How the join decides").
        table_standby_replicas=0,
        topic_disable_leader=True,  # no leader topic: one topic less to provision
    )
    app.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    return app


def create_app(settings: PlannerSettings, fatal: OnFatal | None = None) -> faust.App:
    """The planner's app. ``fatal`` is called when the join cannot go on (the process
    must then exit non-zero); by default it only logs."""
    names = Topics(settings)
    app = new_app(settings)

    source = app.topic(names(ORDERS), names(BOXES), names(REPAIRS), **RAW)
    table = JoinTable(
        app,
        name="orders",
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        key_type=bytes,
        value_type=bytes,
    )
    app.tables.add(table)
    planner = Planner(app, table, settings)

    @app.on_partitions_revoked.connect
    async def forget_offsets(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        planner.watch.forget()
        planner.orders_read.clear()
        planner.orders_time.clear()

    @app.agent(source, concurrency=1)
    async def join(stream: faust.StreamT[bytes]) -> None:
        await join_stream(planner, stream, fatal)

    @table.on_recover
    async def index_holds() -> None:
        planner.holds.rebuild(table)
        planner.finished.rebuild(table)
        planner.erased.applied.clear()  # a recovered state may be erased: all again

    @app.timer(settings.planner_tidy_every_s)  # type: ignore[untyped-decorator]
    async def tidy() -> None:
        await tidy_states(planner)

    @app.task  # type: ignore[untyped-decorator]
    async def erasures() -> None:
        """Follow buyer.erasures.v1 (until Faust cancels its tasks at the stop)."""
        await follow_erasures(settings, planner.erased, asyncio.Event())

    @app.timer(settings.planner_hold_check_s)  # type: ignore[untyped-decorator]
    async def release_holds() -> None:
        await release_ended_holds(planner)

    @app.task  # type: ignore[untyped-decorator]
    async def serve_ops() -> None:
        """/healthz, /readyz (the join's consumer has partitions) and /metrics."""
        runtime = Runtime(settings, "planner", asyncio.Event())
        runtime.wants_consumer("the join's consumer", app.consumer)
        try:
            async with ops_server(runtime):
                await runtime.stop.wait()  # until Faust cancels its tasks at the stop
        finally:
            await planner.fetcher.stop()

    @app.task  # type: ignore[untyped-decorator]
    async def quiet_root_logger() -> None:
        """mode's worker sets the root logger to DEBUG and filters in its handlers, so
        every library debug call builds a record (about 5 per event): raise the root."""
        level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
        logging.getLogger().setLevel(level)

    return app


class InFlight:
    """The batches joined whose records the broker has not acknowledged yet, oldest first.

    A batch's events are acked (and so committed) once its records are acknowledged and
    every earlier batch's are: in order, never past a batch still being written. Once a
    write fails (the broker refused it, or the producer stopped first) nothing more is
    acked: those events and every later one stay uncommitted, to be joined again by
    whoever owns their partitions next. A refusal is told to ``on_failure`` at once, also
    while the stream is idle.
    """

    def __init__(self, depth: int, on_failure: OnFatal) -> None:
        self.depth = depth
        self.on_failure = on_failure
        self.batches: deque[tuple[Sequence[EventT[bytes]], asyncio.Future[Any], float]] = deque()
        self.failure: BaseException | None = None

    def add(
        self, events: Sequence[EventT[bytes]], written: asyncio.Future[Any], started: float
    ) -> None:
        self.batches.append((events, written, started))
        IN_FLIGHT.set(len(self.batches))
        written.add_done_callback(self.settle)

    def settle(self, _: object = None) -> None:
        """Ack every batch at the head whose records the broker has."""
        while self.batches and self.failure is None and self.batches[0][1].done():
            events, written, started = self.batches.popleft()
            if written.cancelled():  # the producer stopped under it: a stop, not a failure
                self.failure = asyncio.CancelledError()
                return
            if (refused := written.exception()) is not None:
                self.failure = refused
                self.on_failure(refused)
                return
            BATCH_SECONDS.observe(time.perf_counter() - started)
            IN_FLIGHT.set(len(self.batches))
            for event in events:
                event.ack()

    async def room(self) -> None:
        """Wait until fewer than ``depth`` batches are in flight; raise the failure that
        stopped the acking, if one did."""
        while self.failure is None and len(self.batches) >= self.depth:
            await asyncio.wait({self.batches[0][1]})
            self.settle()
        if self.failure is not None:
            raise self.failure


async def join_stream(
    planner: Planner, stream: faust.StreamT[bytes], fatal: OnFatal | None
) -> None:
    """The join agent: batches of events, each acked once the broker has its records."""
    assert isinstance(stream, faust.Stream)  # noqa: S101 (take_events is not on StreamT)
    settings = planner.settings
    told: list[BaseException] = []

    def fail(exc: BaseException) -> None:
        if not told:
            told.append(exc)
            log.critical("planner_join_failed", error=f"{type(exc).__name__}: {exc}")
            if fatal is not None:
                fatal(exc)

    # take_events turns the stream's own acks off while it runs and back on when it
    # ends; events drained after that would be acked unjoined. Off from the start.
    stream.enable_acks = False
    batches = stream.take_events(settings.planner_batch_size, within=settings.planner_batch_wait_s)
    in_flight = InFlight(settings.planner_batches_in_flight, fail)
    try:
        async for events in batches:
            # take_events acks a batch in a ``finally``, also when cancelled mid-batch:
            # one more reference per message, given back once the broker has the batch's
            # records (``InFlight``), keeps an unfinished batch uncommitted.
            for event in events:
                event.message.incref()
            started = time.perf_counter()
            in_flight.add(events, await join_batch(planner, events), started)
            await in_flight.room()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        fail(exc)
        raise


class PlannerWorker(faust.Worker):
    """Faust's worker, with a deadline on every stop and a non-zero exit on failure."""

    def __init__(self, *args: Any, stop_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_timeout_s = stop_timeout_s
        self.exit_code = 0
        self.deadline: threading.Timer | None = None

    def arm_deadline(self) -> None:
        """However the stop goes (a stalled consumer, a broker away), the process ends."""
        if self.deadline is None:
            code = self.exit_code or 1
            self.deadline = threading.Timer(self.stop_timeout_s, os._exit, args=(code,))
            self.deadline.daemon = True
            self.deadline.start()

    def _schedule_shutdown(self, signum: signal.Signals) -> None:
        self.arm_deadline()
        super()._schedule_shutdown(signum)

    def fail(self, exc: BaseException) -> None:
        """The join cannot go on: stop, and exit non-zero so a supervisor restarts us."""
        self.exit_code = 1
        self.arm_deadline()
        self.loop.call_soon_threadsafe(self._schedule_shutdown, signal.SIGTERM)


def run(settings: PlannerSettings) -> None:
    """Run one planner worker until SIGTERM or Ctrl-C; exit non-zero if the join fails."""
    asyncio.run(ensure_topics(settings))
    adapt_kafka_clients(settings)
    settings.planner_data_dir.mkdir(parents=True, exist_ok=True)
    worker: PlannerWorker | None = None

    def fatal(exc: BaseException) -> None:
        if worker is not None:
            worker.fail(exc)

    app = create_app(settings, fatal)
    collect_garbage_less_often()
    worker = PlannerWorker(
        app,
        loglevel=settings.log_level.upper(),
        logging_config=logs.stdlib_config(settings.log_level.upper()),
        quiet=True,
        loop=new_event_loop(),
        stop_timeout_s=settings.planner_stop_timeout_s,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        sys.exit(worker.exit_code or exit_.code)
