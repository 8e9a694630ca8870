"""The embedded broker module and its ListOffsets(LATEST) correction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devstack.broker.embedded import EmbeddedBroker
from devstack.broker.offsets import (
    install_end_offsets_correction,
    uninstall_end_offsets_correction,
)
from schemas.topics import LABELS
from tests.conftest import Broker
from workers.kafka import Topics
from workers.settings import Settings
from workers.topics import ensure_topics


def test_embedded_broker_starts_listens_and_stops_by_pid() -> None:
    broker = EmbeddedBroker().start()
    proc = broker.proc
    assert proc is not None and proc.poll() is None
    broker.stop()
    assert proc.poll() is not None
    broker.stop()  # twice is harmless


async def test_end_offsets_are_the_true_log_end(
    broker: Broker, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await ensure_topics(settings)
    topic = Topics(settings)(LABELS)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=20)
    await producer.start()
    for _ in range(3):  # three multi-record batches: Tansu's LATEST answer falls short
        await asyncio.gather(*[await producer.send(topic, b"x", partition=0) for _ in range(5)])
    await producer.stop()
    tp, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def end_offsets() -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            return dict(await consumer.end_offsets([tp, empty]))
        finally:
            await consumer.stop()

    if not broker.embedded:
        assert await end_offsets() == {tp: 15, empty: 0}
        pytest.skip("the correction is only for the embedded broker")
    install_end_offsets_correction({"bootstrap_servers": broker.bootstrap})
    try:
        assert await end_offsets() == {tp: 15, empty: 0}
    finally:
        uninstall_end_offsets_correction()
