"""Reading and writing topics in tests; every wait is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from schemas.codec import encode
from schemas.common import Address
from schemas.topics import BUYER_KEYS, TopicSpec
from tests.unit.factories import TEST_KEY, TEST_KEY_ID, TEST_SHOP
from workers.buyer.kek import key_service
from workers.buyer.keys import Opener, publish_key
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
        await publish_test_key(settings)
        _PROVISIONED.add(key)


async def publish_test_key(settings: Settings) -> None:
    """The factories' data key (``tests.unit.factories.sealed``) on ``buyer.keys.v1``,
    wrapped by the settings' KEK: a labeler opens what the factories seal."""
    kek = key_service(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        topic = Topics(settings)(BUYER_KEYS)
        await publish_key(producer, topic, kek, TEST_SHOP, TEST_KEY_ID, TEST_KEY, "tests")
    finally:
        await producer.stop()
        await kek.close()


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


async def open_recipient(settings: Settings, order_id: str, sealed: str | None) -> Address:
    """A sealed recipient, opened as the labeler does (its data key from buyer.keys.v1)."""
    opener = Opener(settings, key_service(settings))
    await opener.start()
    try:
        opened = await opener.open(order_id, sealed)
    finally:
        await opener.stop()
    assert isinstance(opened, Address), opened
    return opened
