"""The few ways parcelflow talks to Kafka: topics, producers, consumers, dead letters."""

from __future__ import annotations

import base64
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel

from schemas.codec import encode
from schemas.common import now_ms
from schemas.rejected import RejectedRecord
from schemas.topics import ALL_TOPICS, TopicSpec
from workers.settings import Settings

log = structlog.get_logger(__name__)

TOPIC_EXISTS = 36
MAX_REQUEST_BYTES = 5 * 1024 * 1024


class Topics:
    """Full topic names for this process's namespace."""

    def __init__(self, settings: Settings) -> None:
        self.namespace = settings.topic_namespace

    def __call__(self, spec: TopicSpec) -> str:
        return spec.full_name(self.namespace)

    def group(self, name: str) -> str:
        return f"{self.namespace}{name}"


async def ensure_topics(settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> None:
    """Create every topic that does not exist yet, all with the same partition count."""
    names = Topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        new = [
            NewTopic(names(spec), settings.topic_partitions, settings.topic_replication)
            for spec in specs
        ]
        response = await admin.create_topics(new)
        for topic_error in getattr(response, "topic_errors", []):
            name, code = topic_error[0], topic_error[1]
            if code not in (0, TOPIC_EXISTS):
                raise RuntimeError(f"creating topic {name} failed with Kafka error {code}")
    finally:
        await admin.close()


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": MAX_REQUEST_BYTES,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: Settings, group: str, *topics: str, **overrides: object
) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": int(settings.kafka_session_timeout_s * 1000),
        "heartbeat_interval_ms": 1_000,
        "max_poll_interval_ms": int(settings.kafka_max_poll_interval_s * 1000),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def publish(producer: AIOKafkaProducer, topic: str, key: str, model: BaseModel) -> None:
    """Send one event and wait until the broker acked it."""
    await producer.send_and_wait(topic, encode(model), key=key.encode())


def b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def rejected_record(
    *,
    source_topic: str,
    value: bytes | None,
    reason: str,
    worker: str,
    key: bytes | None = None,
    partition: int = -1,
    offset: int = -1,
) -> RejectedRecord:
    return RejectedRecord(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key_b64=b64(key),
        value_b64=b64(value) or "",
        reason=reason,
        worker=worker,
        rejected_at_ms=now_ms(),
    )


async def dead_letter(
    producer: AIOKafkaProducer,
    topic: str,
    message: ConsumerRecord[bytes, bytes],
    reason: str,
    worker: str,
) -> None:
    """Keep a message a worker cannot handle, with its original bytes and the reason."""
    record = rejected_record(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        reason=reason,
        worker=worker,
    )
    await producer.send_and_wait(topic, encode(record), key=message.key)
    log.warning(
        "dead_lettered",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        reason=reason,
        to=topic,
    )


async def read_to_end(
    bootstrap: str, topic: str, partitions: set[int] | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` (or of these partitions) from the start to the current end.

    Partitions the topic does not have are skipped with an error log line. On the embedded
    broker, install the end-offsets correction first (workers.broker.offsets).
    """
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await reader.topics()  # fresh metadata
        existing = reader.partitions_for_topic(topic) or set()
        wanted = existing if partitions is None else partitions
        if wanted - existing:
            log.error("missing_partitions", topic=topic, missing=sorted(wanted - existing))
        tps = [TopicPartition(topic, p) for p in sorted(wanted & existing)]
        ends = await reader.end_offsets(tps) if tps else {}
        todo = {tp for tp in tps if ends[tp] > 0}
        reader.assign(sorted(todo))
        for tp in todo:
            reader.seek(tp, 0)
        while todo:
            batches = await reader.getmany(*todo, timeout_ms=500)
            for messages in batches.values():
                records.extend(messages)
            for tp in list(todo):
                if await reader.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await reader.stop()
    return records
