"""Replays an operator asked for on the dashboard (``label-replays.v1``): the labeler
checks each against its own failure records and sends the failed job again.

The dashboard may only ask: it names a job, and the job that runs again is the one the
labeler recorded as failed (a replayable failure of that order), never a job the request
carries. So the dashboard's Kafka principal writes no topic a worker acts on blindly.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaProducer

from schemas.codec import decode, encode
from schemas.label import LabelFailure
from schemas.replay import ReplayRequest
from schemas.topics import LABEL_JOBS, REPLAYS
from workers.kafka import Topics, make_consumer, started
from workers.labeler.codes import DECISIONS
from workers.labeler.operations import failures
from workers.settings import LabelerSettings

log = structlog.get_logger(__name__)


def replayable(request: ReplayRequest, known: dict[str, LabelFailure]) -> LabelFailure | None:
    """The failure a request may replay: recorded, of the order it names, not a decision."""
    failure = known.get(request.job_id)
    if failure is None or failure.order_id != request.order_id:
        return None
    return None if failure.error_code in DECISIONS else failure


async def serve_replays(
    settings: LabelerSettings, producer: AIOKafkaProducer, stop: asyncio.Event
) -> None:
    """Take replay requests (one consumer group for every labeler replica) until ``stop``."""
    names = Topics(settings)
    consumer = make_consumer(settings, names.group("parcelflow-labeler-replays"))
    consumer.subscribe([names(REPLAYS)])
    try:
        if not await started(consumer, stop):
            return
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            requests = [
                r
                for messages in batches.values()
                for m in messages
                if isinstance(r := decode(ReplayRequest, m.value), ReplayRequest)
            ]
            if requests:
                known = {f.job_id: f for f in await failures(settings)}
                for request in requests:
                    failure = replayable(request, known)
                    if failure is None:
                        log.warning(
                            "replay_refused",
                            job_id=request.job_id,
                            order_id=request.order_id,
                            principal=request.principal,
                            reason="no replayable failure of that job and order",
                        )
                        continue
                    await producer.send_and_wait(
                        names(LABEL_JOBS), encode(failure.job), key=failure.order_id.encode()
                    )
                    log.info(
                        "failure_replayed",
                        job_id=failure.job_id,
                        order_id=failure.order_id,
                        principal=request.principal,
                    )
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
