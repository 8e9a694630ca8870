"""Reading and writing topics in tests; every wait is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from schemas.codec import encode
from schemas.topics import TopicSpec
from workers.kafka import Topics
from workers.settings import Settings
from workers.topics import ensure_topics

M = TypeVar("M", bound=BaseModel)


_PROVISIONED: set[tuple[str, str]] = set()


async def provisioned(settings: Settings) -> None:
    """The namespace's topics, made as the registry wants them before a test writes: a
    write to a missing topic would have the broker make it with its own partition count,
    and the workers rightly refuse to start on that."""
    key = (settings.kafka_bootstrap, settings.topic_namespace)
    if key not in _PROVISIONED:
        await ensure_topics(settings)
        _PROVISIONED.add(key)


async def produce(
    settings: Settings, spec: TopicSpec, key: str, value: bytes | BaseModel
) -> tuple[int, int]:
    """Write one record; where it went: (partition, offset)."""
    await provisioned(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        raw = value if isinstance(value, bytes) else encode(value)
        sent = await producer.send_and_wait(Topics(settings)(spec), raw, key=key.encode())
        return sent.partition, sent.offset
    finally:
        await producer.stop()


async def consume(
    settings: Settings,
    spec: TopicSpec,
    until: Callable[[list[bytes]], bool],
    timeout_s: float = 30.0,
) -> list[bytes]:
    """Values of ``spec`` from the start, until ``until(values)`` holds or the time is up."""
    consumer = AIOKafkaConsumer(
        Topics(settings)(spec),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not until(values):
                batches = await consumer.getmany(timeout_ms=200)
                for messages in batches.values():
                    values.extend(m.value for m in messages)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return values


def models(model: type[M], values: list[bytes]) -> list[M]:
    return [model.model_validate_json(v) for v in values]
