"""``parcelflow soak``: the devstack under steady demo traffic for a long time, watched.

Demo orders with their boxes go to the receiver at a steady ``rate`` for ``minutes``.
After a warm-up, every ``every_s`` it prints, for the labels that arrived in that
window, box -> label p50 and p99 (from the moment the order's last box was stored to
the label on labels.v1), and the embedded broker's CPU (share of one core over the
window) and resident memory.
Afterwards every order is checked as ``parcelflow chaos`` checks them (exactly one label
call, each parcel with its box's item ids). The last line is
``soak: minutes=M orders=N labels=L lost=X p99_first_ms=A p99_last_ms=B
broker_cpu_first=C broker_cpu_last=D`` (first and last window).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.broker.watch import BrokerGauge
from devstack.chaos import get_json, play, settle
from devstack.demo import Progress, take
from devstack.demo_data import DemoOrder, make_demo
from devstack.stack import Stack
from devstack.verify import Verdict, verify
from schemas.codec import decode
from schemas.label import LabelResult
from schemas.topics import LABEL_FAILURES, LABELS
from workers.kafka import Topics, make_reader
from workers.settings import Settings


@dataclass
class Window:
    """One report window: labels that arrived in it, and the broker over it."""

    ended_s: float  # seconds after the traffic started
    labels: int
    p50_ms: float
    p99_ms: float
    broker_cpu: float  # share of one core
    broker_rss_mb: float

    def __str__(self) -> str:
        return (
            f"{self.ended_s / 60:5.1f} min: {self.labels} labels, box -> label p50 "
            f"{self.p50_ms:.0f} ms p99 {self.p99_ms:.0f} ms; broker CPU {self.broker_cpu:.0%} "
            f"RSS {self.broker_rss_mb:.0f} MB"
        )


@dataclass
class SoakResult:
    minutes: float
    verdict: Verdict
    windows: list[Window] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def last_line(self) -> str:
        v, w = self.verdict, self.windows
        first, last = (w[0], w[-1]) if w else (None, None)
        return (
            f"soak: minutes={self.minutes:g} orders={v.orders} labels={v.labeled} lost={v.lost} "
            f"p99_first_ms={first.p99_ms if first else 0:.0f} "
            f"p99_last_ms={last.p99_ms if last else 0:.0f} "
            f"broker_cpu_first={first.broker_cpu if first else 0:.2f} "
            f"broker_cpu_last={last.broker_cpu if last else 0:.2f}"
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def follow(
    settings: Settings,
    progress: Progress,
    stored: dict[str, float],
    arrivals: list[tuple[float, float]],
    stop: asyncio.Event,
    ended: asyncio.Event,
) -> None:
    """Labels and failures as they arrive, until ``stop``; per label of an order whose
    boxes were all stored: (arrival, box -> label seconds). ``ended`` is set once every
    order has its label or failure."""
    names = Topics(settings)
    consumer = make_reader(settings, names(LABELS), names(LABEL_FAILURES))
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=250)
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    take(progress, message.topic, message.value, names)
                    label = decode(LabelResult, message.value)
                    if isinstance(label, LabelResult) and label.order_id in stored:
                        arrivals.append((now, now - stored[label.order_id]))
            if not progress.pending:
                ended.set()
    finally:
        await consumer.stop()


async def watch_windows(
    arrivals: list[tuple[float, float]],
    gauge: BrokerGauge,
    started: float,
    every_s: float,
    warmup_s: float,
    windows: list[Window],
    done: asyncio.Event,
    say: bool,
) -> None:
    """A window every ``every_s`` after the first ``warmup_s`` (the stack starting up and
    the label limit finding its level), until ``done``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), warmup_s)
    since = time.time()
    gauge.share()  # the broker's CPU from here on
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), every_s)
        except TimeoutError:
            pass
        now = time.time()
        latencies = [lat * 1000 for at, lat in arrivals if since <= at < now]
        window = Window(
            ended_s=now - started,
            labels=len(latencies),
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            broker_cpu=gauge.share(),
            broker_rss_mb=gauge.rss_mb(),
        )
        since = now
        if window.labels:
            windows.append(window)
            if say:
                print(f"  soak: {window}", file=sys.stderr, flush=True)


def run_soak(
    run_dir: Path,
    *,
    minutes: float,
    rate: float,
    seed: int,
    every_s: float = 300.0,
    warmup_s: float = 60.0,
    drain_s: float = 300.0,
    overrides: dict[str, str] | None = None,
    say: bool = True,
) -> SoakResult:
    seconds = minutes * 60
    orders = make_demo(
        max(1, int(seconds * rate)), seed=seed, run_id=seed % 100_000, now_s=int(time.time())
    )
    stack = Stack(run_dir, dict(overrides or {}))
    windows: list[Window] = []
    with stack.running(say=say):
        assert stack.broker is not None and stack.broker.proc is not None  # noqa: S101
        gauge = BrokerGauge(stack.broker.proc.pid)
        progress = Progress.of(orders)
        asyncio.run(
            soak(
                stack, orders, seconds, progress, gauge, (every_s, warmup_s), drain_s, windows, say
            )
        )
        settle(stack.simulator_url)
        requests = get_json(f"{stack.simulator_url}/_sim/shipium/requests")
    verdict = verify(orders, requests, progress.labels, set(progress.failures))
    return SoakResult(minutes, verdict, windows)


async def soak(
    stack: Stack,
    orders: list[DemoOrder],
    seconds: float,
    progress: Progress,
    gauge: BrokerGauge,
    every: tuple[float, float],  # report every, after a warm-up of
    drain_s: float,
    windows: list[Window],
    say: bool,
) -> None:
    """Play the traffic while the windows are reported, then wait for the last labels."""
    stored: dict[str, float] = {}
    arrivals: list[tuple[float, float]] = []
    traffic_done, drained, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
    started = time.time()
    follower = asyncio.create_task(
        follow(stack.settings, progress, stored, arrivals, drained, ended)
    )
    watcher = asyncio.create_task(
        watch_windows(arrivals, gauge, started, *every, windows, traffic_done, say)
    )
    await play(orders, stack, seconds, stored)
    traffic_done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ended.wait(), drain_s)
    drained.set()
    await asyncio.gather(watcher, follower)
