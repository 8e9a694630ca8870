"""Labeler benchmark: throughput against Little's law, and memory against the backlog.

    make bench-labeler            (or: .venv/bin/python -m bench.labeler --help)

1. Throughput: the simulator answers every label call after exactly ``--latency`` s; the
   labeler runs with ``--in-flight`` N calls at most. Little's law bounds it at
   N / latency labels per second; the ratio of measured to bound is the score (goal >= 0.9).
2. Memory: the labeler starts against a backlog of ``--small`` and then ``--large`` jobs
   already in Kafka and runs for ``--rss-seconds``; its peak RSS should not grow with the
   backlog (goal: large within 10% of small), because the backlog stays in Kafka.

Everything runs on this machine: the embedded broker, the simulator in this process, the
labeler as its own process (so its RSS is its own). Everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psutil
from aiohttp import web
from aiokafka import AIOKafkaConsumer

from bench import sealing
from devstack.broker.embedded import EmbeddedBroker
from devstack.simulator.app import Simulator, create_app
from devstack.stack import terminate as stop
from schemas.codec import encode
from schemas.common import Dimensions, Weight
from schemas.label import LabelJob, Parcel
from schemas.order import LineItem
from schemas.topics import LABEL_JOBS, LABELS
from workers.kafka import Topics, make_producer
from workers.settings import Settings
from workers.topics import ensure_topics


def make_job(n: int, run: str) -> LabelJob:
    order_id = f"{run}-{n:07d}"
    return LabelJob(
        job_id=f"job-{order_id}",
        event_id=f"job-{order_id}",
        order_id=order_id,
        shop_id="bench",
        recipient=sealing.sealed(order_id),  # opened by the labeler, as in production
        parcels=[
            Parcel(
                box_id=f"{order_id}-B1",
                items=[
                    LineItem(item_id=f"{order_id}-001", sku_id="s", seller_sku="S", product_id="p")
                ],
                weight=Weight(value=1),
                dimensions=Dimensions(length=10, width=8, height=4),
            )
        ],
        created_at_ms=int(time.time() * 1000),
    )


async def fill(settings: Settings, count: int) -> None:
    """``count`` label jobs on label-jobs.v1, their recipients sealed under the benchmarks'
    data key (published first: the labeler opens them)."""
    await sealing.publish_key(settings)
    producer = make_producer(settings, linger_ms=20)  # default 16 KiB batches, as Faust writes
    await producer.start()
    try:
        topic = Topics(settings)(LABEL_JOBS)
        run = uuid.uuid4().hex[:6]
        pending = []
        for n in range(count):
            job = make_job(n, run)
            pending.append(await producer.send(topic, encode(job), key=job.order_id.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def start_labeler(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    env |= settings.as_env() | {"PARCELFLOW_LOG_LEVEL": "warning"}
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "labeler"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


async def label_times(settings: Settings, want: int, timeout_s: float) -> list[float]:
    """Arrival time of each label on labels.v1, until ``want`` arrived."""
    consumer = AIOKafkaConsumer(
        Topics(settings)(LABELS),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    times: list[float] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(times) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            times += [now] * sum(len(m) for m in batches.values())
    finally:
        await consumer.stop()
    return times


async def throughput(base: Settings, sim: Simulator, args: argparse.Namespace, tmp: Path) -> None:
    sim.shipium.latency_median_s = args.latency
    sim.shipium.latency_sigma = 0.0
    sim.shipium.tail_probability = 0.0
    settings = base.model_copy(
        update={
            "topic_namespace": f"bt{uuid.uuid4().hex[:6]}.",
            "labeler_max_in_flight": args.in_flight,
            "labeler_adaptive": False,  # a fixed bound (bench.adaptive measures the limiter)
        }
    )
    await ensure_topics(settings)
    await fill(settings, args.jobs)
    proc = start_labeler(settings, tmp / "throughput.log")
    try:
        times = await label_times(settings, args.jobs, timeout_s=args.jobs * args.latency + 120)
    finally:
        stop(proc)
    if len(times) < args.jobs:
        raise SystemExit(f"only {len(times)} of {args.jobs} labels arrived; see {tmp}")
    # The first labels arrive one latency after the first calls started.
    elapsed = times[-1] - times[0] + args.latency
    rate = len(times) / elapsed
    bound = args.in_flight / args.latency
    print(
        f"labeler throughput: {rate:8.1f} labels/s  ({args.jobs} jobs, {args.in_flight} in flight, "
        f"{args.latency:.2f}s per call)"
    )
    print(f"Little's-law bound: {bound:8.1f} labels/s  (in flight / latency)")
    print(f"ratio:              {rate / bound:8.3f}  (goal >= 0.9)")
    print(
        f"simulator peak calls in flight: {sim.shipium.peak_in_flight}, "
        f"duplicate label calls: {sim.shipium.duplicates}"
    )


async def peak_rss(
    base: Settings, sim: Simulator, backlog: int, args: argparse.Namespace, tmp: Path
) -> int:
    sim.shipium.latency_median_s = args.latency
    sim.shipium.peak_in_flight = 0
    settings = base.model_copy(
        update={
            "topic_namespace": f"br{uuid.uuid4().hex[:6]}.",
            "labeler_max_in_flight": args.in_flight,
            "labeler_adaptive": False,  # a fixed bound (bench.adaptive measures the limiter)
        }
    )
    await ensure_topics(settings)
    await fill(settings, backlog)
    proc = start_labeler(settings, tmp / f"rss-{backlog}.log")
    peak = 0
    try:
        process = psutil.Process(proc.pid)
        deadline = time.monotonic() + args.rss_seconds
        while time.monotonic() < deadline and proc.poll() is None:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.1)
    finally:
        stop(proc)
    return peak


@contextlib.asynccontextmanager
async def bench_stack(
    prefix: str, **settings: Any
) -> AsyncIterator[tuple[Settings, Simulator, Path]]:
    """An embedded broker, a label simulator (tiny labels: measure parcelflow, not the
    simulator's drawing) and the settings that reach them, with ``settings`` on top; a
    temporary folder for the rest. Everything is stopped on the way out."""
    with TemporaryDirectory(prefix=prefix) as tmp_dir, EmbeddedBroker() as broker:
        tmp = Path(tmp_dir)
        base = Settings(
            kafka_bootstrap=broker.bootstrap,
            kafka_embedded=True,
            topic_partitions=4,
            label_dir=tmp / "labels",
            shipium_api_key="bench-key",
            tiktok_app_key="bench",
            sim_label_render=False,
            **sealing.SETTINGS,
            **settings,
        )
        sim = Simulator.from_settings(base)
        runner = web.AppRunner(create_app(sim), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = base.model_copy(
            update={"shipium_base_url": f"http://127.0.0.1:{runner.addresses[0][1]}"}
        )
        try:
            yield base, sim, tmp
        finally:
            await runner.cleanup()


async def main(args: argparse.Namespace) -> None:
    async with bench_stack("pf-bench-") as (base, sim, tmp):
        if not args.skip_throughput:
            await throughput(base, sim, args, tmp)
        if not args.skip_rss:
            small = await peak_rss(base, sim, args.small, args, tmp)
            large = await peak_rss(base, sim, args.large, args, tmp)
            print(f"peak RSS, backlog {args.small:>7}: {small / 2**20:7.1f} MiB")
            print(f"peak RSS, backlog {args.large:>7}: {large / 2**20:7.1f} MiB")
            print(f"ratio:                    {large / small:7.3f}  (goal <= 1.10)")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--latency", type=float, default=1.0, help="seconds per label call (1.0)")
    p.add_argument("--in-flight", type=int, default=64, help="labeler calls in flight (64)")
    p.add_argument("--jobs", type=int, default=1920, help="jobs for the throughput run (1920)")
    p.add_argument("--small", type=int, default=1_000, help="small backlog (1,000)")
    p.add_argument("--large", type=int, default=100_000, help="large backlog (100,000)")
    p.add_argument("--rss-seconds", type=float, default=15.0, help="how long to watch RSS (15)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-rss", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
