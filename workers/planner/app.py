"""The planner's Faust app: one agent over orders and boxes, one table of join state.

One agent reads both co-partitioned topics at concurrency 1, so every event of an order
is handled in order by the worker that owns the order's partition, and the table is
written by that agent only. Events come in batches (``take_events``): each order's state
is read and written once per batch, not once per event, and the batch's plans and jobs
are acknowledged by the broker before Faust acks the batch's events. Values stay raw
bytes (orjson and pydantic do the work); a handler error dead-letters the event and the
stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
import structlog
from faust.stores.memory import Store as MemoryStore
from faust.types import EventT

from schemas.box import BoxClosed
from schemas.codec import decode, encode
from schemas.common import now_ms
from schemas.order import Order
from schemas.topics import BOXES, BOXES_REJECTED, LABEL_JOBS, ORDERS, ORDERS_REJECTED, PLANS
from workers.broker.offsets import install_end_offsets_correction
from workers.kafka import MAX_REQUEST_BYTES, Topics, b64, ensure_topics, rejected_record
from workers.loop import collect_garbage_less_often, new_event_loop
from workers.planner.join import OrderState, Step, on_event, restore
from workers.planner.skips import SkipWatch
from workers.settings import Settings

log = structlog.get_logger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


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


def faust_brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings) -> faust.App:
    names = Topics(settings)
    app = faust.App(
        names.group(settings.planner_app_id),
        broker=faust_brokers(settings.kafka_bootstrap),
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
        producer_linger=0.002,
        producer_max_request_size=MAX_REQUEST_BYTES,
        # No standby copies of other workers' table partitions (Faust's default is 1).
        # With them, in 5 of 15 kill-test runs, orders of the restarted worker's
        # partitions stalled until the auditor republished them; in one of those runs
        # the fresh process began restoring a changelog partition at its highwater
        # ("Reading Starts At 511"). Without standbys: 0 of 12. Why standbys cause
        # this is not pinned down. A new owner reads the whole changelog partition, as
        # it must anyway with the memory store.
        table_standby_replicas=0,
    )
    orders_topic = names(ORDERS)
    source = app.topic(orders_topic, names(BOXES), **RAW)
    plans_topic = names(PLANS)
    jobs_topic = names(LABEL_JOBS)
    rejected = {names(ORDERS): names(ORDERS_REJECTED), names(BOXES): names(BOXES_REJECTED)}
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
    changelog = table.changelog_topic.get_topic_name()

    class Batch:
        """One batch's order states, read once from the table and written once back."""

        def __init__(self) -> None:
            self.states: dict[bytes, OrderState] = {}
            self.partitions: dict[bytes, int] = {}
            self.sends: list[Awaitable[Any]] = []
            self.clock = now_ms()

        def step(self, topic: str, partition: int, value: bytes | None) -> Step | str:
            """The step for one event, or why it was rejected."""
            event = decode(Order, value) if topic == orders_topic else decode(BoxClosed, value)
            if isinstance(event, str):
                return event
            key = event.order_id.encode()
            state = self.states.get(key)
            if state is None:
                state = restore(event.order_id, table.get(key))
            step = on_event(state, event, self.clock)
            self.states[key] = step.state
            if step.state is not state:
                self.partitions[key] = partition
            return step

        async def send(
            self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
        ) -> None:
            self.sends.append(
                await app.producer.send(
                    topic, key, value, partition=partition, timestamp=None, headers=None
                )
            )

        async def publish(self, step: Step) -> None:
            for plan in step.plans:
                await self.send(plans_topic, plan.order_id.encode(), encode(plan))
            for job in step.jobs:
                await self.send(jobs_topic, job.order_id.encode(), encode(job))

        async def dead_letter(self, event: EventT[bytes], reason: str) -> None:
            message = event.message
            record = rejected_record(
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=event.value,
                reason=reason,
                worker="planner",
            )
            await self.send(rejected[message.topic], message.key, encode(record))
            log.warning(
                "dead_lettered",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                reason=reason,
                key=b64(message.key),
            )

        async def finish(self) -> None:
            """Write the changed states, then wait until the broker has every record."""
            for key, partition in self.partitions.items():
                value = self.states[key].model_dump_json().encode()
                table.remember(key, value, partition)
                await self.send(changelog, key, value, partition)
            await asyncio.gather(*self.sends)

    watch = SkipWatch()

    @app.on_partitions_revoked.connect
    async def forget_offsets(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        watch.forget()

    async def join_batch(events: Sequence[EventT[bytes]]) -> None:
        batch = Batch()
        for event in events:
            message = event.message
            skipped = watch.see(message.topic, message.partition, message.offset)
            if skipped is not None:
                log.warning(
                    "offsets_skipped",
                    topic=message.topic,
                    partition=message.partition,
                    first=skipped[0],
                    last=skipped[1],
                    hint="the consumer never delivered them; the auditor republishes them",
                )
            try:
                outcome = batch.step(message.topic, message.partition, event.value)
            except Exception as exc:  # noqa: BLE001 (one bad event must not stop the join)
                outcome = f"planner error: {type(exc).__name__}: {exc}"
            if isinstance(outcome, str):
                await batch.dead_letter(event, outcome)
            else:
                await batch.publish(outcome)
        await batch.finish()

    @app.agent(source, concurrency=1)
    async def join(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, faust.Stream)  # noqa: S101 (take_events is not on StreamT)
        # take_events turns the stream's own acks off while it runs and back on when it
        # ends (a stop or a crash); events the stream still drains after that would be
        # acked without being joined. Off from the start, they stay unacked and are read
        # again after a restart. (Read in Faust's code; not seen to fail.)
        stream.enable_acks = False
        batches = stream.take_events(
            settings.planner_batch_size, within=settings.planner_batch_wait_s
        )
        async for events in batches:
            # take_events acks a batch in a ``finally``, so also when the agent is
            # cancelled mid-batch (a stop), and the consumer commits on stop. One more
            # reference per message, given back only once the batch is done, keeps an
            # unfinished batch uncommitted: it is read again. (Read in Faust's code.)
            for event in events:
                event.message.incref()
            await join_batch(events)
            for event in events:
                event.ack()

    @app.task  # type: ignore[untyped-decorator]
    async def quiet_root_logger() -> None:
        """mode's worker sets the root logger to DEBUG and filters in its handlers, so
        every library debug call builds a record (about 5 per event): raise the root."""
        level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
        logging.getLogger().setLevel(level)

    return app


def run(settings: Settings) -> None:
    """Run one planner worker until SIGTERM or Ctrl-C."""
    asyncio.run(ensure_topics(settings))
    if settings.kafka_embedded:
        install_end_offsets_correction(settings.kafka_bootstrap)
    settings.planner_data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    collect_garbage_less_often()
    worker = faust.Worker(
        app, loglevel=settings.log_level.upper(), quiet=True, loop=new_event_loop()
    )
    worker.execute_from_commandline()
