"""The planner's Faust app: one agent over orders and boxes, one table of join state.

One agent reads both co-partitioned topics at concurrency 1, so every event of an order
is handled in order by the worker that owns the order's partition, and the table is
written by that agent only. Values stay raw bytes (orjson and pydantic do the work);
a handler error dead-letters the event and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import structlog

from schemas.box import BoxClosed
from schemas.codec import decode, encode
from schemas.common import now_ms
from schemas.order import Order
from schemas.topics import BOXES, BOXES_REJECTED, LABEL_JOBS, ORDERS, ORDERS_REJECTED, PLANS
from workers.broker.offsets import install_end_offsets_correction
from workers.kafka import Topics, b64, ensure_topics, rejected_record
from workers.loop import new_event_loop
from workers.planner.join import OrderState, Step, on_box, on_order
from workers.settings import Settings

log = structlog.get_logger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


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
    )
    orders_topic = names(ORDERS)
    source = app.topic(orders_topic, names(BOXES), **RAW)
    plans = app.topic(names(PLANS), **RAW)
    jobs = app.topic(names(LABEL_JOBS), **RAW)
    rejected = {
        names(ORDERS): app.topic(names(ORDERS_REJECTED), **RAW),
        names(BOXES): app.topic(names(BOXES_REJECTED), **RAW),
    }
    table = app.Table(
        "orders",
        default=None,
        partitions=settings.topic_partitions,
        key_type=bytes,
        value_type=bytes,
    )

    async def publish(step: Step) -> None:
        for plan in step.plans:
            await plans.send(key=plan.order_id.encode(), value=encode(plan))
        for job in step.jobs:
            await jobs.send(key=job.order_id.encode(), value=encode(job))

    def handle(topic: str, value: bytes | None) -> Step | str:
        """The step for one event, or why it was rejected."""
        event = decode(Order, value) if topic == orders_topic else decode(BoxClosed, value)
        if isinstance(event, str):
            return event
        key = event.order_id.encode()
        stored = table.get(key)
        state = (
            OrderState.model_validate_json(stored)
            if stored is not None
            else OrderState(order_id=event.order_id)
        )
        clock = now_ms()
        if isinstance(event, Order):
            step = on_order(state, event, clock)
        else:
            step = on_box(state, event, clock)
        if step.state is not state:
            table[key] = step.state.model_dump_json().encode()
        return step

    @app.agent(source, concurrency=1)
    async def join(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                outcome = handle(message.topic, event.value)
                if isinstance(outcome, str):
                    reason = outcome
                else:
                    await publish(outcome)
                    continue
            except Exception as exc:  # noqa: BLE001 (one bad event must not stop the join)
                reason = f"planner error: {type(exc).__name__}: {exc}"
            record = rejected_record(
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=event.value,
                reason=reason,
                worker="planner",
            )
            await rejected[message.topic].send(key=message.key, value=encode(record))
            log.warning(
                "dead_lettered",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                reason=reason,
                key=b64(message.key),
            )

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
    worker = faust.Worker(
        app, loglevel=settings.log_level.upper(), quiet=True, loop=new_event_loop()
    )
    worker.execute_from_commandline()
