"""Operator commands: list and replay failed label jobs; refuse to void a label."""

from __future__ import annotations

from schemas.codec import decode, encode
from schemas.label import LabelFailure
from schemas.topics import LABEL_FAILURES, LABEL_JOBS
from workers.kafka import Topics, make_producer, read_to_end
from workers.labeler.codes import DECISIONS
from workers.plugins import adapt_kafka_clients
from workers.settings import KafkaSettings

VOID_REFUSAL = (
    "Labels for TikTok Shop shipments cannot be voided through Shipium or parcelflow: "
    "void the label in TikTok Seller Center."
)


async def failures(settings: KafkaSettings) -> list[LabelFailure]:
    """The latest failure of each job, in the order they failed."""
    adapt_kafka_clients(settings)
    latest: dict[str, LabelFailure] = {}
    for record in await read_to_end(settings, Topics(settings)(LABEL_FAILURES)):
        failure = decode(LabelFailure, record.value)
        if isinstance(failure, LabelFailure):
            latest[failure.job_id] = failure
    return sorted(latest.values(), key=lambda f: f.failed_at_ms)


async def replay(settings: KafkaSettings, job_ids: set[str] | None) -> list[LabelFailure]:
    """Publish the jobs of these failures (all replayable ones if None) to label-jobs.v1."""
    chosen = [
        f
        for f in await failures(settings)
        if f.error_code not in DECISIONS and (job_ids is None or f.job_id in job_ids)
    ]
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = Topics(settings)(LABEL_JOBS)
        for failure in chosen:
            await producer.send_and_wait(
                topic, encode(failure.job), key=failure.job.order_id.encode()
            )
    finally:
        await producer.stop()
    return chosen
