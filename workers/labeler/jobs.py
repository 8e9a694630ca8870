"""One label job from start to end: the label call with its retries, the document store,
and the records it writes. The consumer loop around it is in ``worker.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from schemas.alert import Alert
from schemas.codec import encode
from schemas.common import now_ms
from schemas.label import LabelDocument, LabelFailure, LabelJob, LabelResult
from schemas.topics import ALERTS, LABEL_ATTEMPTS, LABEL_FAILURES, LABELS
from workers.errors import ApiError
from workers.kafka import Topics, publish
from workers.labeler import decide
from workers.labeler.codes import AMBIGUOUS, CREDENTIALS, FailureCode, http_code
from workers.labeler.decide import Action
from workers.labeler.ledger import Ledger
from workers.labeler.limiter import Gradient, Slots
from workers.labeler.retry import RetryPolicy
from workers.labeler.shipium.client import ShipiumClient
from workers.labeler.shipium.response import LabelResponse
from workers.labels import claims
from workers.labels.store import (
    CONTENT_TYPES,
    LabelStore,
    manifest_name,
    open_store,
    put_document,
)
from workers.retry import backoff_delay
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
WRITE_RETRIES = Counter(
    "parcelflow_labeler_write_retries",
    "Writes (labels, failures, attempts, alerts) retried because the broker did not ack.",
)
BOX_REFUSED = Counter(
    "parcelflow_labeler_box_id_refused",
    "Label jobs refused because another order holds one of their box ids in its warehouse.",
)
STORE_ATTEMPTS = 3
Response = TypeVar("Response")


class Fatal(Exception):
    """The labeler cannot go on (the broker refuses its writes): the process exits
    non-zero and the unfinished job, never committed, is read again after a restart."""


class JobRunner:
    """Runs label jobs to their end; at most ``max_in_flight`` label calls at once."""

    def __init__(
        self,
        settings: LabelerSettings,
        producer: AIOKafkaProducer,
        shipium: ShipiumClient,
        max_in_flight: int,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.shipium = shipium
        names = Topics(settings)
        self.labels_topic = names(LABELS)
        self.failures_topic = names(LABEL_FAILURES)
        self.attempts_topic = names(LABEL_ATTEMPTS)
        self.alerts_topic = names(ALERTS)
        self.ledger = Ledger(settings, self.labels_topic, self.attempts_topic, self.failures_topic)
        self.policy = RetryPolicy.from_settings(settings)
        self.credentials_rejected = False
        if settings.labeler_adaptive:
            floor = min(settings.labeler_min_in_flight, max_in_flight)
            start = min(max(settings.labeler_initial_in_flight, floor), max_in_flight)
            self.limiter = Gradient(min_limit=floor, max_limit=max_in_flight, limit=start)
        else:  # a fixed bound: the limit never moves
            self.limiter = Gradient(
                min_limit=max_in_flight, max_limit=max_in_flight, limit=max_in_flight
            )
        self.call_slots = Slots(self.limiter)
        LIMIT.set(self.limiter.current)
        self.documents: LabelStore = open_store(settings)

    async def limit_moved(self) -> None:
        """The limit was set from outside (a warm start): export it, wake waiting calls."""
        LIMIT.set(self.limiter.current)
        BASELINE.set(self.limiter.long_s)
        await self.call_slots.limit_changed()

    # --- writing records -----------------------------------------------------------------

    async def publish(self, topic: str, key: str, model: BaseModel) -> None:
        await self.reliably(topic, lambda: publish(self.producer, topic, key, model))

    async def reliably(self, topic: str, write: Callable[[], Awaitable[None]]) -> None:
        """Write, retrying while the broker is away, for up to ``labeler_publish_timeout_s``;
        past that the labeler cannot go on (Fatal). A refusal that no retry can change (a
        record too large) is raised as it is: the job ends with the reason."""
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
                    raise Fatal(f"cannot write to {topic}: {type(exc).__name__}") from exc
                WRITE_RETRIES.inc()
                log.warning("write_retry", topic=topic, error=type(exc).__name__, attempt=attempt)
                await asyncio.sleep(backoff_delay(attempt, base_s=0.5, max_s=5.0))
            else:
                return

    # --- one job -----------------------------------------------------------------------

    async def call_with_retries(
        self, job: LabelJob, call: Callable[[LabelJob], Awaitable[Response]], timed: bool = True
    ) -> tuple[Response, int, int] | LabelFailure:
        """``call`` until it answers or the retry policy gives up. ``timed``: its latency
        is the provider's label latency, which the limiter learns from (a lookup is far
        faster than a create: counted, it would teach a baseline no create can reach, and
        every create would then look queued)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.call_slots.slot() as generation:
                    started = time.monotonic()
                    try:
                        response = await call(job)
                    except ApiError as err:
                        await self.observe(None, err, generation)
                        raise
                    latency = time.monotonic() - started if timed else None
                    await self.observe(latency, None, generation)
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
                return response, attempt, int((time.monotonic() - started) * 1000)

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
            await self.call_slots.limit_changed()

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
            await self.publish(self.alerts_topic, "shipium", alert)
        await asyncio.sleep(self.settings.labeler_auth_retry_s)

    async def store(
        self, job: LabelJob, response: LabelResponse
    ) -> list[list[LabelDocument]] | LabelFailure:
        """Each parcel's documents (every format) in the label store, or the failure that
        ends the job (tried a few times first: a disk may be full, a bucket away)."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                stored = []
                for parcel, package in zip(job.parcels, response.packages, strict=True):
                    documents = []
                    for fmt, data in package.documents.items():
                        if fmt not in CONTENT_TYPES or not data:
                            continue
                        put = await put_document(
                            self.documents, job.job_id, parcel.box_id, fmt, data
                        )
                        documents.append(
                            LabelDocument(format=fmt, uri=put.uri, sha256=put.sha256, size=put.size)
                        )
                    stored.append(documents)
            except Exception as exc:  # noqa: BLE001 (a disk or an object store: any error)
                log.warning(
                    "label_store_retry",
                    job_id=job.job_id,
                    order_id=job.order_id,
                    error=f"{type(exc).__name__}: {str(exc)[:300]}",
                )
                if attempt == STORE_ATTEMPTS:
                    message = f"label made, document not stored: {type(exc).__name__}: {exc}"
                    return decide.failure(
                        job, FailureCode.STORE_FAILED, message, True, attempt, now_ms()
                    )
                await asyncio.sleep(backoff_delay(attempt, base_s=0.2, max_s=2.0))
            else:
                return stored
        raise AssertionError("unreachable")  # pragma: no cover

    async def index(self, result: LabelResult) -> None:
        """The label record by job, for the fetch API (a box finds its job by its claim).
        Best effort: labels.v1 holds the truth; a failure here is logged, the label still
        counts."""
        try:
            await self.documents.put(
                manifest_name(result.job_id), encode(result), "application/json"
            )
        except Exception as exc:  # noqa: BLE001 (see above)
            log.warning("label_index_failed", job_id=result.job_id, error=type(exc).__name__)

    async def claim_boxes(self, job: LabelJob) -> LabelFailure | None:
        """Claim every box of the job for its order (``workers/labels/claims.py``); the
        failure that ends the job when another order holds one of its box ids."""
        at = now_ms()
        reuse_after_ms = int(self.settings.box_id_reuse_after_s * 1000)
        for parcel in job.parcels:
            wanted = claims.Claim(
                warehouse_id=parcel.warehouse_id,
                box_id=parcel.box_id,
                order_id=job.order_id,
                job_id=job.job_id,
                claimed_at_ms=at,
            )
            try:
                held = await claims.claim(self.documents, wanted, reuse_after_ms)
            except Exception as exc:  # noqa: BLE001 (a disk or an object store: any error)
                message = f"box claim not written: {type(exc).__name__}: {str(exc)[:200]}"
                return decide.failure(job, FailureCode.STORE_FAILED, message, True, 0, at)
            if held is not None:
                BOX_REFUSED.inc()
                message = (
                    f"box id {parcel.box_id} is held in warehouse {parcel.warehouse_id or '-'} "
                    f"by order {held.order_id} (job {held.job_id}): close the box under "
                    "another id, or replay once the box id may be reused "
                    "(PARCELFLOW_BOX_ID_REUSE_AFTER_S)"
                )
                return decide.failure(job, FailureCode.BOX_ID_IN_USE, message, False, 0, at)
        return None

    async def label(
        self, job: LabelJob, outcome: tuple[LabelResponse, int, int] | LabelFailure
    ) -> str:
        """Store and publish a label call's outcome; returns how the job ended."""
        if isinstance(outcome, LabelFailure):
            await self.publish(self.failures_topic, job.order_id, outcome)
            log.warning(
                "label_failed",
                job_id=job.job_id,
                order_id=job.order_id,
                code=outcome.error_code,
                attempts=outcome.attempts,
            )
            return "failed"
        response, attempts, call_ms = outcome
        documents = await self.store(job, response)
        if isinstance(documents, LabelFailure):
            await self.publish(self.failures_topic, job.order_id, documents)
            return "failed"
        result = decide.result(job, response, documents, attempts, call_ms, now_ms())
        await self.index(result)
        await self.publish(self.labels_topic, job.order_id, result)
        self.ledger.add(result)
        log.info(
            "labeled",
            job_id=job.job_id,
            order_id=job.order_id,
            parcels=len(result.parcels),
            call_ms=result.call_ms,
        )
        return "labeled"

    async def handle_job(self, job: LabelJob) -> str:
        """Run one job to its end; returns how it ended."""
        action = decide.decide(job, self.ledger)
        if action is Action.RECORD_CANCEL:
            self.ledger.cancelled.add(job.job_id)
            labeled = self.ledger.get(job.job_id) is not None
            cancelled = decide.cancellation(job, labeled, now_ms())
            await self.publish(self.failures_topic, job.order_id, cancelled)
            return "cancelled"
        if action is Action.DROP:
            log.info("label_job_dropped_cancelled", job_id=job.job_id, order_id=job.order_id)
            return "dropped"
        if action is Action.REPUBLISH:
            done = self.ledger.get(job.job_id)
            assert done is not None  # noqa: S101 (decided on it)
            await self.publish(self.labels_topic, job.order_id, done)  # same event id
            return "labeled"
        # a job a dead process started was routed then: only its boxes are claimed again
        routing = (
            None
            if action is Action.RECOVER
            else decide.routing_failure(job, self.settings, now_ms())
        )
        refused = routing or await self.claim_boxes(job)
        if refused is not None:
            await self.publish(self.failures_topic, job.order_id, refused)
            log.warning(
                "label_job_refused",
                job_id=job.job_id,
                order_id=job.order_id,
                code=refused.error_code,
            )
            return "failed"
        if action is Action.RECOVER:
            # A process that died may have made this label: look before making another.
            found = await self.call_with_retries(job, self.shipium.find_label, timed=False)
            if not isinstance(found, LabelFailure) and found[0] is not None:
                log.info("label_recovered", job_id=job.job_id, order_id=job.order_id)
                return await self.label(job, (found[0], 1, found[2]))
        await self.publish(self.attempts_topic, job.order_id, decide.attempt(job, now_ms()))
        self.ledger.attempted.add(job.job_id)
        return await self.label(job, await self.call_with_retries(job, self.creating()))

    def creating(self) -> Callable[[LabelJob], Awaitable[LabelResponse]]:
        """A create call for one job that, after an answer that leaves the outcome unknown
        (a timeout, a dropped connection, 502/503/504), looks the shipment up by its
        partnerShipmentId before it creates again: a label made but not answered is taken,
        not made twice."""
        unsure = False

        async def create(job: LabelJob) -> LabelResponse:
            nonlocal unsure
            if unsure:
                found = await self.shipium.find_label(job)
                if found is not None:
                    log.info(
                        "label_found_after_unclear_answer", job_id=job.job_id, order_id=job.order_id
                    )
                    return found
            try:
                return await self.shipium.create_label(job)
            except ApiError as err:
                unsure = unsure or err.code in AMBIGUOUS
                raise

        return create
