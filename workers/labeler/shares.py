"""What the labeler replicas learned of the label provider, shared through
``labeler.limits.v1``, so that a replica that starts (a restart, a deploy, a scale-up)
begins near the capacity its group found instead of at the floor.

Every replica reports its adaptive limit and the call latency it measured without a queue
every ``labeler_limit_report_s``, and once more (``leaving``) when it stops. On every
assignment of label-jobs partitions (its start, and each rebalance) a replica sets its
limit to the group's capacity times its share of the partitions. The group's capacity is
the sum of the latest limits of the replicas that reported within three periods (they
run now) or, when none did (the whole group restarted), of those that reported within
``labeler_warm_window_s``. When one of them ran at its ceiling the provider may take more
than that sum, so no replica's limit is cut for the share. The limiter goes on probing
from there as always.

Between assignments, after each report, the replicas even out: each moves halfway to its
share of the running replicas' summed limit (by partitions held), which leaves the sum
where the limiters found it, and probes for more at 1/sqrt(replicas) of its own pace, so
that together they probe as fast as one replica alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.codec import decode, encode
from schemas.common import now_ms
from schemas.limits import LimitReport
from schemas.topics import LIMITS
from workers.kafka import Topics, behind, groupless_consumer, start_on_all
from workers.labeler.limiter import Gradient
from workers.settings import LabelerSettings

log = structlog.get_logger(__name__)
FRESH_PERIODS = 3  # a replica that reported within this many periods runs now
EVEN_OUT = 0.5  # how far a replica moves toward its even share each period


@dataclass(frozen=True)
class Learned:
    capacity: float  # calls in flight the group's replicas ran together
    baseline_s: float  # the latency they measured without a queue
    replicas: int  # how many reports it adds up
    # a replica ran at its ceiling: the provider may take more than ``capacity``
    at_least: bool = False


def running(reports: dict[str, LimitReport], now: int, fresh_ms: int) -> list[LimitReport]:
    """The latest reports of the replicas that run now (pure; times in ms)."""
    return [r for r in reports.values() if now - r.at_ms <= fresh_ms and not r.leaving]


def even_share(group: list[LimitReport], mine: int) -> float | None:
    """This replica's share of the running replicas' summed limit, by partitions held;
    None alone (nothing to even out)."""
    held = sum(r.partitions for r in group)
    if len(group) < 2 or not held or not mine:
        return None
    return sum(r.limit for r in group) * mine / held


def learned(
    reports: dict[str, LimitReport], now: int, fresh_ms: int, window_ms: int
) -> Learned | None:
    """The group's capacity from each replica's latest report (pure; times in ms)."""
    counted = running(reports, now, fresh_ms)
    counted = counted or [r for r in reports.values() if now - r.at_ms <= window_ms]
    counted = [r for r in counted if r.limit > 0]
    if not counted:
        return None
    baselines = [r.baseline_s for r in counted if r.baseline_s > 0]
    return Learned(
        capacity=sum(r.limit for r in counted),
        baseline_s=statistics.median(baselines) if baselines else 0.0,
        replicas=len(counted),
        at_least=any(r.ceiling and r.limit >= r.ceiling - 0.5 for r in counted),
    )


class LimitTopic:
    """Reads the recent reports of ``labeler.limits.v1`` and follows it; writes this
    replica's. Reports are advice: a broker that fails a read or a write costs a warm
    start, never a label."""

    def __init__(self, settings: LabelerSettings, writer: str) -> None:
        self.settings = settings
        self.writer = writer
        self.topic = Topics(settings)(LIMITS)
        self.reports: dict[str, LimitReport] = {}
        self.consumer = groupless_consumer(settings)
        self.producer: AIOKafkaProducer | None = None
        self.follower: asyncio.Task[None] | None = None

    async def start(self, producer: AIOKafkaProducer) -> None:
        """Read the reports of the last warm window, then follow new ones."""
        self.producer = producer
        tps = await start_on_all(self.consumer, self.topic)
        since = now_ms() - int(self.settings.labeler_warm_window_s * 1000)
        found = await self.consumer.offsets_for_times({tp: since for tp in tps})
        ends = await self.consumer.end_offsets(tps)
        for tp in tps:
            at = found.get(tp)
            self.consumer.seek(tp, at.offset if at is not None else ends[tp])
        while await behind(self.consumer, ends):
            self.take(await self.consumer.getmany(timeout_ms=500))
        self.follower = asyncio.create_task(self.follow(), name="limits")

    async def follow(self) -> None:
        while True:
            self.take(await self.consumer.getmany(timeout_ms=1_000))

    def take(self, batches: dict[TopicPartition, list[object]]) -> None:
        for messages in batches.values():
            for message in messages:
                report = decode(LimitReport, message.value)  # type: ignore[attr-defined]
                if isinstance(report, LimitReport):
                    self.reports[report.writer] = report

    @property
    def fresh_ms(self) -> int:
        return int(FRESH_PERIODS * self.settings.labeler_limit_report_s * 1000)

    def learned(self) -> Learned | None:
        window_ms = int(self.settings.labeler_warm_window_s * 1000)
        return learned(self.reports, now_ms(), self.fresh_ms, window_ms)

    def running(self) -> list[LimitReport]:
        return running(self.reports, now_ms(), self.fresh_ms)

    async def report(self, limiter: Gradient, partitions: int, leaving: bool = False) -> None:
        if self.producer is None:
            return
        report = LimitReport(
            writer=self.writer,
            limit=limiter.limit,
            ceiling=limiter.max_limit,
            baseline_s=limiter.long_s,
            partitions=partitions,
            leaving=leaving,
            at_ms=now_ms(),
        )
        try:
            await self.producer.send_and_wait(self.topic, encode(report), key=self.writer.encode())
        except KafkaError as exc:
            log.warning("labeler_limit_report_failed", error=type(exc).__name__)
        else:
            self.reports[self.writer] = report

    async def stop(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await self.follower
        await self.consumer.stop()


class WarmStart:
    """A replica's side of the sharing: its limiter warmed on every assignment, its limit
    reported every period and when it stops."""

    def __init__(
        self,
        settings: LabelerSettings,
        limiter: Gradient,
        moved: Callable[[], Awaitable[None]],
        writer: str,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.moved = moved  # the limit changed: tell the call slots and the metrics
        self.topic = LimitTopic(settings, writer)
        self.partitions = 0  # label-jobs partitions held now
        self.reporter: asyncio.Task[None] | None = None

    async def start(self, producer: AIOKafkaProducer) -> None:
        try:
            await self.topic.start(producer)
        except KafkaError as exc:  # advice only: start cold
            log.warning("labeler_limits_unreadable", error=type(exc).__name__)
        self.reporter = asyncio.create_task(self.report_every(), name="limit-reports")

    async def assigned(self, mine: int, total: int) -> None:
        """Take this replica's share of what the group learned."""
        self.partitions = mine
        group = self.topic.learned()
        if not total:
            return
        if group is None:  # nothing learned yet: the initial limit is for the group
            if self.limiter.measuring and mine < total:
                self.limiter.nudge(self.settings.labeler_initial_in_flight * mine / total)
                await self.moved()
            return
        share = group.capacity * mine / total
        if group.at_least:  # the group found no limit below its ceilings: do not cut
            share = max(share, self.limiter.limit)
        self.limiter.warm(share, group.baseline_s, time.monotonic())
        await self.moved()
        log.info(
            "labeler_limit_shared",
            limit=self.limiter.current,
            group_capacity=round(group.capacity, 1),
            at_least=group.at_least,
            reports=group.replicas,
            partitions=f"{mine}/{total}",
        )

    async def report_every(self) -> None:
        while True:
            await asyncio.sleep(self.settings.labeler_limit_report_s)
            if not self.limiter.measuring and self.partitions:
                await self.report()
                await self.even_out()

    async def even_out(self) -> None:
        """Probe as one of the replicas running now (together as fast as one alone), and
        move halfway to this replica's share of their summed limit: a replica that cut
        deep once (its calls were the ones refused) does not stay starved while the others
        hold the capacity, and the sum, which the limiters found, stays."""
        group = self.topic.running()
        self.limiter.probe_share = 1 / math.sqrt(max(1, len(group)))
        share = even_share(group, self.partitions)
        limit = self.limiter.limit
        # a small step is not worth it: each change of limit starts the window anew
        if share is not None and abs(share - limit) >= max(1.0, 0.1 * limit):
            self.limiter.nudge(limit + EVEN_OUT * (share - limit))
            await self.moved()

    async def report(self, leaving: bool = False) -> None:
        await self.topic.report(self.limiter, self.partitions, leaving=leaving)

    async def stop(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reporter
        if not self.limiter.measuring and self.partitions:
            await self.report(leaving=True)
        await self.topic.stop()
