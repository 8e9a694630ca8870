"""The few ways parcelflow talks to Kafka: topics, producers, consumers, dead letters."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import BaseModel

from schemas.codec import decode, encode
from schemas.common import now_ms
from schemas.rejected import RejectedRecord
from schemas.topics import TopicSpec
from workers.kafka_auth import client_options
from workers.settings import KafkaSettings

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

# Room in a record for the key, headers and batch framing beside the value.
RECORD_OVERHEAD_BYTES = 4 * 1024
# Longest key a dead letter keeps as it was (longer ones are keyed by their sha256), and the
# longest reason it carries.
MAX_KEY_BYTES = 1024
MAX_REASON_CHARS = 2000


class Topics:
    """Full topic names for this process's namespace."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.namespace = settings.topic_namespace

    def __call__(self, spec: TopicSpec) -> str:
        return spec.full_name(self.namespace)

    def group(self, name: str) -> str:
        return f"{self.namespace}{name}"


def make_producer(settings: KafkaSettings, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        **client_options(settings),
        "acks": "all",
        "linger_ms": settings.kafka_linger_ms,
        "max_request_size": settings.kafka_max_message_bytes,
        "request_timeout_ms": int(settings.kafka_request_timeout_s * 1000),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_reader(settings: KafkaSettings, *topics: str) -> AIOKafkaConsumer:
    """A consumer of ``topics`` from their beginning, in no group: it commits nothing and
    moves no group's offsets (dashboards, the demo's watcher, tools)."""
    return AIOKafkaConsumer(
        *topics,
        **client_options(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


def make_consumer(
    settings: KafkaSettings, group: str, *topics: str, **overrides: object
) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        **client_options(settings),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": int(settings.kafka_session_timeout_s * 1000),
        "heartbeat_interval_ms": 1_000,
        "max_poll_interval_ms": int(settings.kafka_max_poll_interval_s * 1000),
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def publish(producer: AIOKafkaProducer, topic: str, key: str, model: BaseModel) -> None:
    """Send one event and wait until the broker acked it."""
    await producer.send_and_wait(topic, encode(model), key=key.encode())


def b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def max_value_bytes(settings: KafkaSettings) -> int:
    """Largest value a worker may write: the producer's limit less room for key and framing."""
    return settings.kafka_max_message_bytes - RECORD_OVERHEAD_BYTES


def value_problem(value: bytes | None, limit: int) -> str | None:
    """Why a value read from Kafka is refused before it is decoded, or None."""
    if value is not None and len(value) > limit:
        return f"value of {len(value)} bytes is over the {limit}-byte input limit"
    return None


def key_problem(key: bytes | None, expected: str, what: str = "order id") -> str | None:
    """Why a record's key is not the id it must be keyed by (its partition), or None."""
    if key is None:
        return f"null key: records must be keyed by their {what}"
    if key != expected.encode():
        shown = key[:80].decode("utf-8", "replace")
        return f"key {shown!r} is not the record's {what} {expected[:80]!r}"
    return None


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The original key, or its sha256 when it is too long to be a key again."""
    if key is None or len(key) <= MAX_KEY_BYTES:
        return key
    return hashlib.sha256(key).hexdigest().encode()


def rejected_record(
    *,
    source_topic: str,
    value: bytes | None,
    reason: str,
    worker: str,
    max_bytes: int,
    key: bytes | None = None,
    partition: int = -1,
    offset: int = -1,
) -> RejectedRecord:
    """A dead letter whose encoding is at most ``max_bytes``, whatever it is given.

    The value is kept whole while its base64 fits; past that, a prefix is kept with the
    size and sha256 of the whole, and the source partition and offset say where it is.
    """
    inline = max(0, (max_bytes - 16 * 1024 - 6 * MAX_REASON_CHARS) * 3 // 4)
    raw = value or b""
    kept = raw if len(raw) <= inline else raw[:inline]
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return RejectedRecord(
        source_topic=source_topic[:256],
        partition=partition,
        offset=offset,
        key_b64=b64(None if key is None else key[:MAX_KEY_BYTES]),
        value_b64=b64(kept) or "",
        value_size=-1 if value is None else len(value),
        value_sha256="" if value is None else hashlib.sha256(value).hexdigest(),
        truncated=len(kept) < len(raw) or (key is not None and len(key) > MAX_KEY_BYTES),
        reason=reason,
        worker=worker,
        rejected_at_ms=now_ms(),
    )


def dead_letter_of(message: Any, reason: str, worker: str, max_bytes: int) -> RejectedRecord:
    """The dead letter of a record read from Kafka (aiokafka's or Faust's message)."""
    return rejected_record(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        reason=reason,
        worker=worker,
        max_bytes=max_bytes,
    )


def log_dead_letter(message: Any, record: RejectedRecord, to: str) -> None:
    log.warning(
        "dead_lettered",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        order_id=message.key[:128].decode(errors="replace") if message.key else None,
        reason=record.reason[:300],
        to=to,
    )


async def dead_letter(
    producer: AIOKafkaProducer,
    topic: str,
    message: ConsumerRecord[bytes, bytes],
    reason: str,
    worker: str,
    max_bytes: int,
) -> None:
    """Keep a message a worker cannot handle, with its original bytes and the reason."""
    record = dead_letter_of(message, reason, worker, max_bytes)
    await producer.send_and_wait(topic, encode(record), key=dead_letter_key(message.key))
    log_dead_letter(message, record, topic)


def order_id_of(event: Any) -> str:
    """The id every topic is keyed by, but the webhooks' (by shop id)."""
    return str(event.order_id)


@dataclass(frozen=True)
class Refused:
    """Why a worker does not take a record: it is dead-lettered with this reason."""

    reason: str


def read_record(
    model: type[M],
    message: Any,
    max_bytes: int,
    id_of: Callable[[M], str] = order_id_of,
    what: str = "order id",
) -> M | Refused:
    """The model a record holds, or why it is refused: too large, not a valid ``model``,
    or keyed by anything but its id (``id_of``), which decides its partition."""
    problem = value_problem(message.value, max_bytes)
    if problem is not None:
        return Refused(problem)
    decoded = decode(model, message.value)
    if isinstance(decoded, str):
        return Refused(decoded)
    wrong_key = key_problem(message.key, id_of(decoded), what)
    return decoded if wrong_key is None else Refused(wrong_key)


async def read_to_end(
    settings: KafkaSettings, topic: str, partitions: set[int] | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` (or of these partitions) from the start to the current end.

    Partitions the topic does not have are skipped with an error log line. On the embedded
    broker, adapt the Kafka clients first (workers.plugins.adapt_kafka_clients).
    """
    reader = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, group_id=None)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await reader.start()
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


def writer_name(role: str) -> str:
    """Who writes a record: the role, the host and the process (a replica's identity)."""
    return f"{role}@{os.uname().nodename}:{os.getpid()}"[:128]


def groupless_consumer(settings: KafkaSettings, idle_wait_ms: int = 500) -> AIOKafkaConsumer:
    """A consumer of no group that commits nothing: for ``start_on_all``. ``idle_wait_ms``:
    how long a fetch waits for records that are not there (fewer requests on a quiet topic)."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=idle_wait_ms,
    )


async def start_on_all(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Start a consumer without a group on every partition of ``topic`` (a table that
    every replica reads whole); the partitions."""
    await consumer.start()
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer.topics()  # refresh metadata once
        partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    return tps


async def behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """True while the consumer has not read up to ``ends`` on some partition."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def started(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
    """Start the consumer (its group join can take seconds), unless ``stop`` comes first."""
    starting = asyncio.create_task(consumer.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
    await asyncio.gather(starting, stopping, return_exceptions=True)
    return starting.done() and not starting.cancelled() and starting.exception() is None
