"""The labeler's loop: bounded label calls in flight, backlog left in Kafka.

Each job runs as its own task; at most ``labeler_max_in_flight`` of them are in a label
call at once (a semaphore around the call). A few more may be writing their attempt or
result records meanwhile; when that bounded number of jobs is held, every assigned
partition is paused, so the consumer stops fetching and the backlog stays in Kafka;
below the low-water mark they resume. ``getmany`` keeps being called while paused, and
heartbeats run in aiokafka's background task, so slow calls never trigger a rebalance.
Offsets are committed per partition only for the contiguous prefix of jobs whose result
(label or failure) the broker acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeAlias, TypeVar

import aiohttp
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import Counter, start_http_server

from schemas.alert import Alert
from schemas.codec import decode
from schemas.common import now_ms
from schemas.label import LabelAttempt, LabelFailure, LabelJob, LabelResult, ParcelLabel
from schemas.topics import (
    ALERTS,
    LABEL_ATTEMPTS,
    LABEL_FAILURES,
    LABEL_JOBS,
    LABEL_JOBS_REJECTED,
    LABELS,
)
from workers.broker.offsets import install_end_offsets_correction
from workers.errors import ApiError
from workers.kafka import Topics, dead_letter, ensure_topics, make_consumer, make_producer, publish
from workers.labeler.documents import store_document
from workers.labeler.flow import OffsetTracker
from workers.labeler.ledger import Ledger
from workers.labeler.shipium.client import ShipiumClient
from workers.labeler.shipium.response import LabelResponse
from workers.logs import dump_tasks
from workers.loop import stop_on_signals
from workers.retry import backoff_delay
from workers.settings import Settings

log = structlog.get_logger(__name__)

Message: TypeAlias = ConsumerRecord  # ConsumerRecord[bytes, bytes]; aiokafka is untyped
Response = TypeVar("Response")
CREDENTIAL_ERRORS = frozenset({"unauthorized", "forbidden"})
VOID_IN_SELLER_CENTER = (
    "labels for TikTok Shop cannot be voided through Shipium: void it in TikTok Seller Center"
)


class Labeler:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        shipium: ShipiumClient,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.shipium = shipium
        names = Topics(settings)
        self.labels_topic = names(LABELS)
        self.failures_topic = names(LABEL_FAILURES)
        self.rejected_topic = names(LABEL_JOBS_REJECTED)
        self.alerts_topic = names(ALERTS)
        self.tracker = OffsetTracker()
        self.tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self.attempts_topic = names(LABEL_ATTEMPTS)
        self.ledger = Ledger(
            settings.kafka_bootstrap, self.labels_topic, self.attempts_topic, self.failures_topic
        )
        self.credentials_rejected = False
        self.ledger_ready = asyncio.Event()  # cleared while an assignment's ledger loads
        self.max_in_flight = settings.labeler_max_in_flight
        # Label calls in flight are bounded by this semaphore. Jobs held in memory (a call,
        # or writing its attempt or result record, or waiting for a call slot) are bounded
        # by max_jobs: the consumer pauses there, so writes overlap other jobs' calls.
        self.call_slots = asyncio.Semaphore(self.max_in_flight)
        self.max_jobs = self.max_in_flight + max(4, self.max_in_flight // 4)
        self.low_water = min(
            self.max_jobs - 1, int(self.max_jobs * settings.labeler_resume_fraction)
        )
        self.room = asyncio.Event()  # set whenever a job finishes
        self.order_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # --- one job -----------------------------------------------------------------------

    async def call_with_retries(
        self, job: LabelJob, call: Callable[[LabelJob], Awaitable[Response]]
    ) -> tuple[Response, int, int] | LabelFailure:
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                async with self.call_slots:
                    response = await call(job)
            except ApiError as err:
                if err.code in CREDENTIAL_ERRORS:
                    attempt -= 1  # not the job's fault: it does not use up its attempts
                    await self.credentials_refused(err)
                    continue
                too_old = now_ms() - job.created_at_ms > self.settings.labeler_max_age_s * 1000
                if not err.retriable or too_old or attempt >= self.settings.labeler_max_attempts:
                    return self.failure(job, err.code, err.message, err.retriable, attempt)
                delay = backoff_delay(
                    attempt,
                    base_s=self.settings.labeler_backoff_base_s,
                    max_s=self.settings.labeler_backoff_max_s,
                    retry_after_s=err.retry_after_s,
                )
                log.warning(
                    "label_retry",
                    job_id=job.job_id,
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

    async def credentials_refused(self, err: ApiError) -> None:
        """Stop taking jobs (flow control pauses every partition), alert once, retry later."""
        if not self.credentials_rejected:
            self.credentials_rejected = True
            log.error("shipium_credentials_rejected", code=err.code, status=err.status)
            alert = Alert(
                event_id=f"alert-shipium-credentials-{now_ms()}",
                kind="shipium_credentials_rejected",
                message=f"Shipium answered {err.status}: check PARCELFLOW_SHIPIUM_API_KEY; "
                "label jobs wait in Kafka and resume by themselves once it is accepted",
                at_ms=now_ms(),
            )
            await publish(self.producer, self.alerts_topic, "shipium", alert)
        await asyncio.sleep(self.settings.labeler_auth_retry_s)

    def failure(
        self, job: LabelJob, code: str, message: str, retriable: bool, attempts: int
    ) -> LabelFailure:
        return LabelFailure(
            event_id=f"failure-{job.job_id}",
            job_id=job.job_id,
            order_id=job.order_id,
            error_code=code,
            message=message,
            retriable=retriable,
            attempts=attempts,
            job=job,
            failed_at_ms=now_ms(),
        )

    def result(
        self, job: LabelJob, response: LabelResponse, attempts: int, call_ms: int
    ) -> LabelResult:
        parcels = []
        for parcel, package in zip(job.parcels, response.packages, strict=True):
            path, digest = "", ""
            if package.document:
                path, digest = store_document(
                    self.settings.label_dir,
                    job.job_id,
                    parcel.box_id,
                    package.document,
                    package.document_format,
                )
            parcels.append(
                ParcelLabel(
                    box_id=parcel.box_id,
                    tracking_id=package.tracking_id,
                    document_path=path,
                    document_sha256=digest,
                )
            )
        labeled_at = now_ms()
        return LabelResult(
            event_id=f"label-{job.job_id}",
            job_id=job.job_id,
            order_id=job.order_id,
            carrier=response.carrier,
            service=response.service,
            shipment_id=response.shipment_id,
            parcels=parcels,
            attempts=attempts,
            latency_ms=max(0, labeled_at - job.created_at_ms),
            call_ms=call_ms,
            labeled_at_ms=labeled_at,
        )

    async def handle_job(self, job: LabelJob) -> None:
        if job.kind == "cancel":
            self.ledger.cancelled.add(job.job_id)
            if self.ledger.get(job.job_id) is not None:
                failure = self.failure(job, "void_required", VOID_IN_SELLER_CENTER, False, 0)
            else:
                failure = self.failure(
                    job, "cancelled", "order cancelled before its label was made", False, 0
                )
            await publish(self.producer, self.failures_topic, job.order_id, failure)
            return
        if job.job_id in self.ledger.cancelled:
            log.info("label_job_dropped_cancelled", job_id=job.job_id)
            return
        done = self.ledger.get(job.job_id)
        if done is not None:
            await publish(self.producer, self.labels_topic, job.order_id, done)  # same event id
            return
        if job.job_id in self.ledger.attempted:
            # A process that died may have made this label: look before making another.
            found = await self.call_with_retries(job, self.shipium.find_label)
            if not isinstance(found, LabelFailure) and found[0] is not None:
                recovered = self.result(job, found[0], 1, found[2])
                await publish(self.producer, self.labels_topic, job.order_id, recovered)
                self.ledger.add(recovered)
                log.info("label_recovered", job_id=job.job_id, order_id=job.order_id)
                return
        attempt = LabelAttempt(
            event_id=f"attempt-{job.job_id}",
            job_id=job.job_id,
            order_id=job.order_id,
            started_at_ms=now_ms(),
        )
        await publish(self.producer, self.attempts_topic, job.order_id, attempt)
        self.ledger.attempted.add(job.job_id)
        outcome = await self.call_with_retries(job, self.shipium.create_label)
        if isinstance(outcome, LabelFailure):
            await publish(self.producer, self.failures_topic, job.order_id, outcome)
            log.warning(
                "label_failed",
                job_id=job.job_id,
                code=outcome.error_code,
                attempts=outcome.attempts,
            )
            return
        result = self.result(job, *outcome)
        await publish(self.producer, self.labels_topic, job.order_id, result)
        self.ledger.add(result)
        log.info(
            "labeled",
            job_id=job.job_id,
            order_id=job.order_id,
            parcels=len(result.parcels),
            call_ms=result.call_ms,
        )

    @contextlib.asynccontextmanager
    async def order_turn(self, order_id: str) -> AsyncIterator[None]:
        """Jobs of one order run one after the other, in offset order (locks are FIFO)."""
        lock, users = self.order_locks.get(order_id, (asyncio.Lock(), 0))
        self.order_locks[order_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.order_locks[order_id]
            if users == 1:
                del self.order_locks[order_id]
            else:
                self.order_locks[order_id] = (lock, users - 1)

    async def process(self, message: Message) -> None:
        tp = TopicPartition(message.topic, message.partition)
        job = decode(LabelJob, message.value)
        try:
            if isinstance(job, str):
                await dead_letter(self.producer, self.rejected_topic, message, job, "labeler")
            else:
                await self.ledger_ready.wait()
                try:
                    async with self.order_turn(job.order_id):
                        await self.handle_job(job)
                except (ValueError, KeyError) as exc:
                    await dead_letter(
                        self.producer,
                        self.rejected_topic,
                        message,
                        f"labeler error: {type(exc).__name__}: {exc}",
                        "labeler",
                    )
        except asyncio.CancelledError:
            raise  # revoked: not finished, not committed, redelivered elsewhere
        except Exception:
            log.exception(
                "label_job_crashed",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            return  # not finished: the partition's commit point stays before it
        self.tracker.finish(tp, message.offset)
        self.room.set()

    # --- the loop ------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Read from the consumer, never kept apart: a rebalance changes it under us."""
        return bool(self.consumer.paused())

    def flow_control(self) -> None:
        in_flight = self.tracker.in_flight
        if in_flight >= self.max_jobs or self.credentials_rejected:
            unpaused = self.consumer.assignment() - self.consumer.paused()
            if unpaused:
                self.consumer.pause(*unpaused)
        elif in_flight <= self.low_water and self.paused:
            self.consumer.resume(*self.consumer.paused())

    async def commit(self) -> None:
        offsets = self.tracker.committable()
        if offsets:
            await self.consumer.commit(offsets)

    def start(self, message: Message) -> None:
        tp = TopicPartition(message.topic, message.partition)
        self.tracker.start(tp, message.offset)
        task = asyncio.create_task(self.process(message))
        bucket = self.tasks.setdefault(tp, set())
        bucket.add(task)
        task.add_done_callback(bucket.discard)

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        await self.commit()
        for tp in revoked:
            for task in self.tasks.pop(tp, set()):
                task.cancel()
        self.tracker.forget(revoked)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.flow_control()
            room = self.max_jobs - self.tracker.in_flight
            # While paused, getmany returns soon with nothing; calling it keeps the
            # consumer polling (max_poll_interval) while heartbeats run in the background.
            # (Not timeout_ms=0: with it aiokafka 0.14 stopped fetching after a resume.)
            batches = await self.consumer.getmany(
                timeout_ms=10 if self.paused else 100, max_records=max(1, room)
            )
            for messages in batches.values():
                for message in messages:
                    self.start(message)
            await self.commit()
            if self.paused:
                self.room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.room.wait(), 0.5)
        await self.drain()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """On shutdown: let running calls finish briefly, commit what finished."""
        pending = [t for bucket in self.tasks.values() for t in bucket]
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout_s)
            for task in still:
                task.cancel()
        await self.commit()


def dump_state(labeler: Labeler | None) -> None:
    """SIGUSR1: every task's stack and the labeler's flow-control state, for debugging."""
    dump_tasks()
    if labeler is not None:
        log.warning(
            "labeler_state",
            in_flight=labeler.tracker.in_flight,
            consumer_paused=sorted(str(tp) for tp in labeler.consumer.paused()),
            assignment=sorted(str(tp) for tp in labeler.consumer.assignment()),
            tasks=sum(len(b) for b in labeler.tasks.values()),
            progress={
                str(tp): {"started": p.started[:20], "finished": sorted(p.finished)[:20]}
                for tp, p in labeler.tracker.partitions.items()
            },
        )


ASSIGNMENTS = Counter(
    "parcelflow_labeler_partition_assignments",
    "Partition assignments this labeler received: one per start and one per rebalance.",
)


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.labeler: Labeler | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.labeler is not None:
            await self.labeler.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        ASSIGNMENTS.inc()
        if self.labeler is not None:
            self.labeler.ledger_ready.clear()
            try:
                await self.labeler.ledger.load({tp.partition for tp in assigned})
            finally:
                self.labeler.ledger_ready.set()
        log.info(
            "partitions_assigned",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or Ctrl-C)."""
    await ensure_topics(settings)
    names = Topics(settings)
    listener = Rebalance()
    if stop is None:
        stop = stop_on_signals()
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR1, lambda: dump_state(listener.labeler)
        )
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    consumer = make_consumer(
        settings,
        names.group("parcelflow-labeler"),
        max_partition_fetch_bytes=settings.labeler_fetch_bytes,
        fetch_max_bytes=settings.labeler_fetch_bytes * 4,
    )
    consumer.subscribe([names(LABEL_JOBS)], listener=listener)
    producer = make_producer(settings)
    connector = aiohttp.TCPConnector(limit=settings.labeler_max_in_flight)
    if settings.kafka_embedded:
        install_end_offsets_correction(settings.kafka_bootstrap)
    async with aiohttp.ClientSession(connector=connector) as http:
        labeler = Labeler(settings, consumer, producer, ShipiumClient(http, settings))
        listener.labeler = labeler
        try:
            await producer.start()
            await consumer.start()
            log.info("labeler_ready", topic=names(LABEL_JOBS), max_in_flight=labeler.max_in_flight)
            await labeler.run(stop)
        finally:
            await consumer.stop()
            await producer.stop()
