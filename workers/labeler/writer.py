"""The labeler's writes (labels, failures, attempts, alerts, dead letters), each retried
while the broker is away; past ``labeler_publish_timeout_s`` the labeler cannot go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError, KafkaTimeoutError
from prometheus_client import Counter
from pydantic import BaseModel

from schemas.topics import ALERTS, LABEL_ATTEMPTS, LABEL_FAILURES, LABEL_JOBS_REJECTED, LABELS
from workers.kafka import Topics, dead_letter, max_value_bytes, publish
from workers.retry import backoff_delay
from workers.settings import LabelerSettings

log = structlog.get_logger(__name__)
WRITE_RETRIES = Counter(
    "parcelflow_labeler_write_retries",
    "Writes (labels, failures, attempts, alerts) retried because the broker did not ack.",
)


class CannotWrite(Exception):
    """The broker refused the labeler's writes for longer than it may wait: the process
    exits non-zero and the unfinished job, never committed, is read again after a
    restart."""


class Writer:
    def __init__(self, settings: LabelerSettings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        names = Topics(settings)
        self.labels = names(LABELS)
        self.failures = names(LABEL_FAILURES)
        self.attempts = names(LABEL_ATTEMPTS)
        self.alerts = names(ALERTS)
        self.rejected = names(LABEL_JOBS_REJECTED)

    async def publish(self, topic: str, key: str, model: BaseModel) -> None:
        await self.reliably(topic, lambda: publish(self.producer, topic, key, model))

    async def dead_letter(self, message: ConsumerRecord, reason: str) -> None:
        limit = max_value_bytes(self.settings)
        await self.reliably(
            self.rejected,
            lambda: dead_letter(self.producer, self.rejected, message, reason, "labeler", limit),
        )

    async def reliably(self, topic: str, write: Callable[[], Awaitable[None]]) -> None:
        """Write, retrying while the broker is away, for up to ``labeler_publish_timeout_s``;
        past that, CannotWrite. A refusal that no retry can change (a record too large) is
        raised as it is: the job ends with the reason."""
        deadline = time.monotonic() + self.settings.labeler_publish_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await write()
            except KafkaError as exc:
                if not exc.retriable and not isinstance(exc, KafkaTimeoutError):
                    raise
                if time.monotonic() >= deadline:
                    raise CannotWrite(f"cannot write to {topic}: {type(exc).__name__}") from exc
                WRITE_RETRIES.inc()
                log.warning("write_retry", topic=topic, error=type(exc).__name__, attempt=attempt)
                await asyncio.sleep(backoff_delay(attempt, base_s=0.5, max_s=5.0))
            else:
                return
