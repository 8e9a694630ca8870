"""Label calls with their retries, under the concurrency limit the limiter sets.

The limiter learns from each call (its latency, or the provider saying it is over its
capacity); a call waits for a slot under the current limit. Shipium refusing the API key
stops every call (the consumer pauses, one alert) until the key works again, without
using up any job's attempts. After an answer that leaves the outcome unknown, a create
looks the shipment up before creating again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter, Gauge

from schemas.alert import Alert
from schemas.common import Address, now_ms
from schemas.label import LabelJob
from workers.errors import ApiError, http_code
from workers.labeler import decide
from workers.labeler.codes import AMBIGUOUS, CREDENTIALS, FailureCode
from workers.labeler.limiter import Gradient, Slots
from workers.labeler.outcomes import Answered, Called, Response
from workers.labeler.provider import LabelProvider, LabelResponse
from workers.labeler.retry import RetryPolicy
from workers.labeler.writer import Writer
from workers.settings import LabelerSettings

log = structlog.get_logger(__name__)
# Answers that say the provider is over its capacity: the limiter cuts on them.
OVERLOAD = frozenset({FailureCode.RATE_LIMITED, FailureCode.TIMEOUT, http_code(503)})
LIMIT = Gauge("parcelflow_labeler_concurrency_limit", "Label calls allowed in flight now.")
GRADIENT = Gauge(
    "parcelflow_labeler_latency_gradient",
    "Long-run latency over the last window's, clipped to [0.5, 1] (1: no queueing seen).",
)
BASELINE = Gauge(
    "parcelflow_labeler_baseline_seconds",
    "The label call latency without a queue, as the limiter measured it (0: not yet).",
)
CUTS = Counter("parcelflow_labeler_limit_cuts", "Times the limit was cut for 429, 503 or timeouts.")


def make_limiter(settings: LabelerSettings, max_in_flight: int) -> Gradient:
    """Adaptive between the floor and ``max_in_flight``, or fixed at ``max_in_flight``."""
    if not settings.labeler_adaptive:
        return Gradient(min_limit=max_in_flight, max_limit=max_in_flight, limit=max_in_flight)
    floor = min(settings.labeler_min_in_flight, max_in_flight)
    start = min(max(settings.labeler_initial_in_flight, floor), max_in_flight)
    return Gradient(min_limit=floor, max_limit=max_in_flight, limit=start)


class Caller:
    def __init__(self, settings: LabelerSettings, writer: Writer, max_in_flight: int) -> None:
        self.settings = settings
        self.writer = writer
        self.policy = RetryPolicy.from_settings(settings)
        self.limiter = make_limiter(settings, max_in_flight)
        self.slots = Slots(self.limiter)
        self.credentials_rejected = False
        LIMIT.set(self.limiter.current)

    async def limit_moved(self) -> None:
        """The limit was set from outside (a warm start): export it, wake waiting calls."""
        LIMIT.set(self.limiter.current)
        BASELINE.set(self.limiter.long_s)
        await self.slots.limit_changed()

    async def with_retries(
        self, job: LabelJob, call: Callable[[LabelJob], Awaitable[Response]], timed: bool = True
    ) -> Called[Response]:
        """``call`` until it answers or the retry policy gives up. ``timed``: its latency
        is the provider's label latency, which the limiter learns from (a lookup is far
        faster than a create: counted, it would teach a baseline no create can reach, and
        every create would then look queued)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response, call_ms = await self.once(job, call, timed)
            except ApiError as err:
                if err.code in CREDENTIALS:
                    attempt -= 1  # not the job's fault: it does not use up its attempts
                    await self.credentials_refused(err)
                    continue
                delay = self.policy.delay(attempt, err, now_ms() - job.created_at_ms)
                if delay is None:
                    return decide.failure(
                        job, err.code, err.message, err.retriable, attempt, now_ms()
                    )
                log.warning(
                    "label_retry",
                    job_id=job.job_id,
                    order_id=job.order_id,
                    code=err.code,
                    attempt=attempt,
                    delay_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
            else:
                if self.credentials_rejected:
                    self.credentials_rejected = False
                    log.warning("shipium_credentials_accepted_again")
                return Answered(response, attempt, call_ms)

    async def once(
        self, job: LabelJob, call: Callable[[LabelJob], Awaitable[Response]], timed: bool
    ) -> tuple[Response, int]:
        """One call in a slot, the limiter told how it went; its answer and milliseconds."""
        async with self.slots.slot() as generation:
            started = time.monotonic()
            try:
                response = await call(job)
            except ApiError as err:
                await self.observe(None, err, generation)
                raise
            latency = time.monotonic() - started
            await self.observe(latency if timed else None, None, generation)
            return response, int(latency * 1000)

    async def observe(self, latency_s: float | None, err: ApiError | None, generation: int) -> None:
        """Tell the limiter how a call went (and under which limit it started); export
        what it decided."""
        overload = err is not None and err.code in OVERLOAD
        retry_after = err.retry_after_s if err is not None else None
        if self.limiter.ended(time.monotonic(), latency_s, overload, retry_after, generation):
            LIMIT.set(self.limiter.current)
            GRADIENT.set(self.limiter.gradient)
            BASELINE.set(self.limiter.long_s)
            if overload:
                CUTS.inc()
            await self.slots.limit_changed()

    async def credentials_refused(self, err: ApiError) -> None:
        """Stop taking jobs (flow control pauses every partition), alert once, retry later."""
        if not self.credentials_rejected:
            self.credentials_rejected = True
            log.error("shipium_credentials_rejected", code=err.code, status=err.status)
            at = now_ms()
            alert = Alert(
                event_id=f"alert-shipium-credentials-{at}",
                kind="shipium_credentials_rejected",
                message=f"Shipium answered {err.status}: check PARCELFLOW_SHIPIUM_API_KEY; "
                "label jobs wait in Kafka and resume by themselves once it is accepted",
                at_ms=at,
            )
            await self.writer.publish(self.writer.alerts, "shipium", alert)
        await asyncio.sleep(self.settings.labeler_auth_retry_s)


def creating(
    provider: LabelProvider, recipient: Address | None
) -> Callable[[LabelJob], Awaitable[LabelResponse]]:
    """A create call for one job that, after an answer that leaves the outcome unknown
    (a timeout, a dropped connection, 502/503/504), looks the shipment up by its
    partnerShipmentId before it creates again: a label made but not answered is taken,
    not made twice."""
    unsure = False

    async def create(job: LabelJob) -> LabelResponse:
        nonlocal unsure
        if unsure and not provider.looks_before_create:
            found = await provider.find_label(job)
            if found is not None:
                log.info(
                    "label_found_after_unclear_answer", job_id=job.job_id, order_id=job.order_id
                )
                return found
        try:
            return await provider.create_label(job, recipient)
        except ApiError as err:
            unsure = unsure or err.code in AMBIGUOUS
            raise

    return create
