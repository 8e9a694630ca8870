"""Operator commands: list and replay failed label jobs, list held orders; refuse to void
a label."""

from __future__ import annotations

from schemas.codec import decode, encode
from schemas.label import LabelFailure
from schemas.plan import ParcelPlan
from schemas.topics import LABEL_FAILURES, LABEL_JOBS, PLANS
from workers.auth import in_warehouses
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


async def held(settings: KafkaSettings) -> list[ParcelPlan]:
    """Orders held now (one held plan each, the latest), soonest release first: complete
    orders waiting for TikTok's buyer remorse window or a cancel request's answer."""
    adapt_kafka_clients(settings)
    plans = []
    for record in await read_to_end(settings, Topics(settings)(PLANS)):
        plan = decode(ParcelPlan, record.value)
        if isinstance(plan, ParcelPlan):
            plans.append(plan)
    return still_held(plans)


def still_held(plans: list[ParcelPlan]) -> list[ParcelPlan]:
    """The held plan of each order whose later plans do not say it was planned or rejected."""
    latest: dict[str, ParcelPlan] = {}
    for plan in plans:
        if plan.status == "held":
            latest[plan.order_id] = plan
        else:
            latest.pop(plan.order_id, None)
    return sorted(latest.values(), key=lambda p: (p.release_at_ms or 2**53, p.order_id))


async def replay(
    settings: KafkaSettings, job_ids: set[str] | None, warehouses: frozenset[str] | None = None
) -> list[LabelFailure]:
    """Publish the jobs of these failures (all replayable ones if None) to label-jobs.v1;
    with ``warehouses``, only the failures of jobs of those warehouses."""
    chosen = [
        f
        for f in await failures(settings)
        if f.error_code not in DECISIONS
        and (job_ids is None or f.job_id in job_ids)
        and (warehouses is None or in_warehouses(f.job, warehouses))
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
