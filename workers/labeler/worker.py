"""The labeler's loop: bounded label calls in flight, backlog left in Kafka.

Each job runs as its own task; at most the limiter's current limit (``limiter.py``, at
most ``labeler_max_in_flight``) of them are in a label call at once. More may be writing
their attempt or result records meanwhile; when that bounded number of jobs is held,
every assigned partition is paused, so the consumer stops fetching and the backlog stays
in Kafka; below the low-water mark they resume. ``getmany`` keeps being called while
paused, and heartbeats run in aiokafka's background task, so slow calls never trigger a
rebalance.
Offsets are committed per partition only for the contiguous prefix of jobs whose result
(label or failure) the broker acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import TypeAlias

import aiohttp
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import Counter

from schemas.common import now_ms
from schemas.label import LabelJob
from schemas.topics import LABEL_JOBS, LABEL_JOBS_REJECTED
from workers.buyer.erase import serve_deferred, serve_erasures
from workers.buyer.kek import key_service
from workers.buyer.keys import Opener
from workers.kafka import (
    Refused,
    Topics,
    make_consumer,
    make_producer,
    read_record,
    writer_name,
)
from workers.labeler import decide
from workers.labeler.codes import FailureCode
from workers.labeler.flow import Flow, Holding, OffsetTracker
from workers.labeler.jobs import JobRunner, package_log
from workers.labeler.outcomes import Ended
from workers.labeler.provider import LabelProvider
from workers.labeler.replays import serve_replays
from workers.labeler.shares import WarmStart
from workers.labeler.shipium.client import ShipiumClient
from workers.labeler.tiktok_shipping.client import TikTokShipping
from workers.labeler.writer import CannotWrite, Writer
from workers.labels.retention import keep_sweeping
from workers.logs import dump_tasks
from workers.runtime import Runtime, worker_runtime
from workers.settings import LabelerSettings
from workers.tiktok.budget import keep_shared
from workers.tiktok.client import TikTokClient
from workers.tiktok.tokens import TokenStore, TokenTopic, defaults_of, import_missing

log = structlog.get_logger(__name__)

Message: TypeAlias = ConsumerRecord  # ConsumerRecord[bytes, bytes]; aiokafka is untyped
COMMIT_EVERY_S = 0.5
ENDED = Counter(
    "parcelflow_labeler_jobs_ended",
    "Label jobs ended, by how: labeled, failed, cancelled, dropped, rejected.",
    ["outcome"],
)


class Labeler:
    def __init__(
        self,
        settings: LabelerSettings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        jobs: JobRunner,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        names = Topics(settings)
        self.rejected_topic = names(LABEL_JOBS_REJECTED)
        self.jobs_topic = names(LABEL_JOBS)
        self.tracker = OffsetTracker()
        self.tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self.ledger_ready = asyncio.Event()  # cleared while an assignment's ledger loads
        self.fatal: BaseException | None = None
        self.failed = asyncio.Event()  # set with self.fatal: the loop stops
        self.max_in_flight = settings.labeler_max_in_flight
        # Label calls in flight are bounded by the job runner's semaphore. Jobs held in
        # memory (a call, or writing its attempt or result record, or waiting for a call
        # slot) are bounded by max_jobs: the consumer pauses there, so writes overlap other
        # jobs' calls.
        self.jobs = jobs
        self.ledger = self.jobs.ledger
        self.warm: WarmStart | None = None
        if settings.labeler_adaptive and settings.labeler_warm_start:
            limiter, moved = self.jobs.calls.limiter, self.jobs.calls.limit_moved
            self.warm = WarmStart(settings, limiter, moved, writer_name("labeler"))
        self.holding = Holding(self.max_in_flight, settings.labeler_resume_fraction)
        self.room = asyncio.Event()  # set whenever a job finishes
        self.order_locks: dict[str, tuple[asyncio.Lock, int]] = {}

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
        """Run one message to its end: a label, a failure or a dead letter. Whatever
        happens, the job ends, its offset is finished and its slot freed; only CannotWrite
        (the broker gone for good) leaves it unfinished, and stops the labeler."""
        tp = TopicPartition(message.topic, message.partition)
        try:
            outcome = await self.run_message(message)
        except asyncio.CancelledError:
            raise  # revoked: not finished, not committed, redelivered elsewhere
        except Exception as exc:  # noqa: BLE001 (CannotWrite, or a write no retry can change)
            self.stop_for(exc)  # exit non-zero rather than freeze this partition's commits
            return
        ENDED.labels(outcome).inc()
        self.tracker.finish(tp, message.offset)
        self.room.set()

    async def run_message(self, message: Message) -> Ended:
        job = self.read(message)
        if isinstance(job, Refused):
            await self.reject(message, job.reason)
            return Ended.REJECTED
        await self.ledger_ready.wait()
        try:
            async with self.order_turn(job.order_id):
                return await self.jobs.handle_job(job)
        except (asyncio.CancelledError, CannotWrite):
            raise
        except Exception as exc:  # every job ends, also on a defect
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("label_job_error", job_id=job.job_id, offset=message.offset)
            ended = decide.failure(job, FailureCode.INTERNAL_ERROR, reason, True, 1, now_ms())
            await self.jobs.writer.publish(self.jobs.writer.failures, job.order_id, ended)
            return Ended.FAILED

    def read(self, message: Message) -> LabelJob | Refused:
        """The job a record holds, or why it is refused (dead-lettered)."""
        return read_record(LabelJob, message, self.settings.max_input_bytes)

    async def reject(self, message: Message, reason: str) -> None:
        await self.jobs.writer.dead_letter(message, reason)

    def stop_for(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            log.critical("labeler_cannot_go_on", error=str(exc))
        self.failed.set()

    # --- the loop ------------------------------------------------------------------------

    @property
    def max_jobs(self) -> int:
        return self.holding.most(self.jobs.calls.limiter.current)

    @property
    def paused(self) -> bool:
        """Read from the consumer, never kept apart: a rebalance changes it under us."""
        return bool(self.consumer.paused())

    def flow_control(self) -> None:
        limit = self.jobs.calls.limiter.current
        blocked = self.jobs.calls.credentials_rejected
        flow = self.holding.decide(self.tracker.in_flight, limit, blocked, self.paused)
        if flow is Flow.PAUSE:
            unpaused = self.consumer.assignment() - self.consumer.paused()
            if unpaused:
                self.consumer.pause(*unpaused)
        elif flow is Flow.RESUME:
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
        committed_at = 0.0
        while not stop.is_set() and not self.failed.is_set():
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
            # A commit is a broker round trip: not once per fetch (that held the fetch loop
            # to a few hundred jobs a second), but every COMMIT_EVERY_S or when paused.
            if self.paused or time.monotonic() - committed_at >= COMMIT_EVERY_S:
                await self.commit()
                committed_at = time.monotonic()
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
            if self.labeler.warm is not None:
                total = self.labeler.consumer.partitions_for_topic(self.labeler.jobs_topic)
                await self.labeler.warm.assigned(len(assigned), len(total or ()))
        log.info(
            "partitions_assigned",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )


async def run(settings: LabelerSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or Ctrl-C)."""
    async with worker_runtime(settings, "labeler", stop) as runtime:
        await label(settings, runtime)


async def label(settings: LabelerSettings, runtime: Runtime[LabelerSettings]) -> None:
    names = Topics(settings)
    listener = Rebalance()
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: dump_state(listener.labeler)
    )
    consumer = make_consumer(
        settings,
        names.group("parcelflow-labeler"),
        max_partition_fetch_bytes=settings.labeler_fetch_bytes,
        fetch_max_bytes=settings.labeler_fetch_bytes * 4,
    )
    consumer.subscribe([names(LABEL_JOBS)], listener=listener)
    producer = make_producer(settings)
    runtime.wants_broker(producer.client)
    runtime.wants_consumer("the label jobs consumer", consumer)
    connector = aiohttp.TCPConnector(limit=settings.labeler_max_in_flight)
    writer = Writer(settings, producer)
    tokens: TokenTopic | None = None
    store = TokenStore()
    async with aiohttp.ClientSession(connector=connector) as http:
        providers: dict[str, LabelProvider] = {"shipium": ShipiumClient(http, settings)}
        tiktok: TikTokClient | None = None
        budget: asyncio.Task[None] | None = None
        replays: asyncio.Task[None] | None = None
        erasures: asyncio.Task[None] | None = None
        sweeping: asyncio.Task[None] | None = None
        deferred: asyncio.Task[None] | None = None
        replays_stop = asyncio.Event()
        if "tiktok" in settings.providers_in_use():
            tokens = TokenTopic(settings, store, writer_name("labeler"))
            # the labeler never refreshes a token: the enricher replica that owns the shop
            # does (a refresh token works once), and the labeler reads it from the topic
            tiktok = TikTokClient(http, settings, store, owns=lambda key: False)
            providers["tiktok"] = TikTokShipping(http, settings, tiktok, package_log(writer))
        opener = Opener(settings, key_service(settings))
        jobs = JobRunner(settings, writer, providers, settings.labeler_max_in_flight, opener)
        labeler = Labeler(settings, consumer, producer, jobs)
        listener.labeler = labeler
        try:
            await producer.start()
            await opener.start()
            if tokens is not None:
                await tokens.start(producer)
                await import_missing(store, defaults_of(settings), "settings")
            if labeler.warm is not None:
                await labeler.warm.start(producer)
            await consumer.start()
            log.info(
                "labeler_ready",
                topic=names(LABEL_JOBS),
                max_in_flight=labeler.max_in_flight,
                providers=sorted(providers),
            )
            if tiktok is not None:
                share = keep_shared(settings, tiktok, runtime.stop)
                budget = asyncio.create_task(share, name="budget")
            replays = asyncio.create_task(
                serve_replays(settings, producer, replays_stop), name="replays"
            )
            erasures = asyncio.create_task(
                serve_erasures(settings, jobs.filing.documents, producer, replays_stop),
                name="erasures",
            )
            sweeping = asyncio.create_task(
                keep_sweeping(settings, jobs.filing.documents, replays_stop), name="retention"
            )
            deferred = asyncio.create_task(
                serve_deferred(
                    settings,
                    jobs.filing.documents,
                    producer,
                    replays_stop,
                    settings.label_sweep_every_s,
                ),
                name="deferred-erasures",
            )
            await labeler.run(runtime.stop)
            if labeler.fatal is not None:
                raise SystemExit(f"labeler stopped: {labeler.fatal}")
        finally:
            if budget is not None:
                budget.cancel()
                await asyncio.gather(budget, return_exceptions=True)
            replays_stop.set()  # it ends within a fetch wait; its consumer stops meanwhile
            await consumer.stop()
            if labeler.warm is not None:
                await labeler.warm.stop()
            if tokens is not None:
                await tokens.stop()
            for task in (replays, erasures, sweeping, deferred):
                if task is not None:
                    done, _ = await asyncio.wait({task}, timeout=5)
                    if not done:
                        task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await opener.stop()
            await producer.stop()
