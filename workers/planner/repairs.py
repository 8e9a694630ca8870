"""The auditor's repair requests: the records they name, read by the planner itself.

A request (``schemas.repair.RepairRequest``, on ``planner.repairs.v1``, co-partitioned
with the join's inputs) names an order's latest order event and its boxes by offset in
the request's own partition number. The join agent reads the request like its other
inputs, so the worker that owns the order's partition handles it, in order with the
order's events; the ``Fetcher`` reads the named records (a reader in no group, assigned
to that one partition) and the join takes them again, as it took them the first time.
The auditor never writes an order or a box: a request can only point at records that
are already there, under the request's own order id.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.repair import RepairRequest
from workers.kafka_auth import client_options
from workers.settings import KafkaSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Fetched:
    """A record read back for a repair, with the attributes of a Faust message the join
    reads (Faust gives timestamps in seconds)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


class Fetcher:
    """Reads given offsets of given topics; started at its first use, stopped by ``stop``."""

    def __init__(self, settings: KafkaSettings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.consumer: AIOKafkaConsumer | None = None

    async def _started(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=50,
            )
            await consumer.start()
            self.consumer = consumer
        return self.consumer

    async def stop(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()

    async def read(self, wanted: list[tuple[str, int, int]]) -> list[Fetched]:
        """The records at these (topic, partition, offset), in the order asked; one gone
        (past retention) is left out."""
        consumer = await self._started()
        consumer.assign(list({TopicPartition(t, p) for t, p, _ in wanted}))
        found = []
        for topic, partition, offset in wanted:
            tp = TopicPartition(topic, partition)
            consumer.seek(tp, offset)
            record = await asyncio.wait_for(consumer.getone(tp), self.timeout_s)
            if record.offset != offset:  # gone: the reader moved on to the next one
                log.warning("repair_record_gone", topic=topic, partition=partition, offset=offset)
                continue
            found.append(
                Fetched(
                    topic,
                    partition,
                    offset,
                    record.key,
                    record.value,
                    (record.timestamp or 0) / 1000,
                )
            )
        return found


def named_records(
    request: RepairRequest, orders_topic: str, boxes_topic: str
) -> list[tuple[str, int, int]]:
    """The (topic, partition, offset) a request names: its order event, then its boxes."""
    wanted = []
    if request.order_offset is not None:
        wanted.append((orders_topic, request.partition, request.order_offset))
    wanted += [(boxes_topic, request.partition, offset) for offset in request.box_offsets]
    return wanted
