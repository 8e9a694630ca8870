"""The broker's own floor for box -> job: a bare pipeline of parcelflow's shape.

An aiohttp handler writes each posted box to a topic with acks=all and answers 202; a
raw aiokafka consumer (in a group, committing) writes one record per box to a second
topic; a reader of that topic notes each record's timestamp. Box -> job is the 202 to
that timestamp, as ``bench.latency`` measures parcelflow's. It runs on the broker and
client settings it is given (``make_producer``, ``make_consumer``), so against the same
broker and settings it says how much of parcelflow's latency is the broker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench.cpu import cpu_shares
from devstack.broker.embedded import free_port
from workers.kafka import make_consumer, make_producer, make_reader
from workers.kafka_auth import client_options
from workers.settings import Settings


async def make_topics(settings: Settings, *names: str) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        topics = [NewTopic(n, settings.topic_partitions, settings.topic_replication) for n in names]
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(topics)
    finally:
        await admin.close()


async def relay(settings: Settings, source: str, target: str, stop: asyncio.Event) -> None:
    """The raw consumer: one record to ``target`` per record of ``source``, then commit."""
    consumer = make_consumer(settings, f"bare-relay-{uuid.uuid4().hex[:8]}", source)
    producer = make_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            sends = [
                await producer.send(target, m.value, key=m.key)
                for messages in batches.values()
                for m in messages
                if m.key is not None  # not the fill records (``prefill``)
            ]
            await asyncio.gather(*sends)
            if sends:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


@dataclass
class Jobs:
    seen: dict[str, float] = field(default_factory=dict)  # box id -> job record time (ms)
    expected: set[str] = field(default_factory=set)
    complete: asyncio.Event = field(default_factory=asyncio.Event)  # every expected seen


async def read_jobs(settings: Settings, topic: str, jobs: Jobs, stop: asyncio.Event) -> None:
    reader = make_reader(settings, topic)
    await reader.start()
    try:
        while not stop.is_set():
            for messages in (await reader.getmany(timeout_ms=200)).values():
                for m in messages:
                    if m.key is not None:  # the fill records (``prefill``) have none
                        jobs.seen.setdefault(m.key.decode(), m.timestamp)
            if jobs.expected and jobs.expected <= jobs.seen.keys():
                jobs.complete.set()
    finally:
        await reader.stop()


async def serve(settings: Settings, topic: str) -> tuple[web.AppRunner, str]:
    """The handler: each body to ``topic`` (acks=all), keyed by the X-Box header; 202."""
    producer = make_producer(settings)
    await producer.start()

    async def box(request: web.Request) -> web.Response:
        await producer.send_and_wait(
            topic, await request.read(), key=request.headers["X-Box"].encode()
        )
        return web.Response(status=202)

    async def close(app: web.Application) -> None:
        await producer.stop()

    app = web.Application()
    app.router.add_post("/boxes", box)
    app.on_cleanup.append(close)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/boxes"


async def prefill(settings: Settings, records: int, *topics: str) -> None:
    """``records`` records in every partition of ``topics``, each a record batch of its
    own (one send at a time per partition): topics as old as a busy pipeline's, since the
    embedded broker's fetch cost grows with the batches of a partition."""
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:

        async def fill(topic: str, partition: int) -> None:
            for _ in range(records):
                await producer.send_and_wait(topic, b"{}", partition=partition)

        await asyncio.gather(
            *(fill(t, p) for t in topics for p in range(settings.topic_partitions))
        )
    finally:
        await producer.stop()


async def bare_latencies(
    settings: Settings,
    rate: float,
    seconds: float,
    warmup_s: float,
    body: bytes,
    grown: int = 0,
    cpu: tuple[dict[str, int], dict[str, float]] | None = None,
) -> list[float]:
    """Box -> job milliseconds of the boxes posted after ``warmup_s``, at ``rate`` a second
    for ``warmup_s + seconds``; on topics holding ``grown`` batches per partition first.
    ``cpu``: (name -> pid, out) to be told each process's share of a core while measured."""
    run = uuid.uuid4().hex[:8]
    boxes, jobs = f"bare.boxes.{run}", f"bare.jobs.{run}"
    await make_topics(settings, boxes, jobs)
    if grown:
        await prefill(settings, grown, boxes, jobs)
    stop, found = asyncio.Event(), Jobs()
    answered: dict[str, float] = {}
    workers = [
        asyncio.create_task(relay(settings, boxes, jobs, stop)),
        asyncio.create_task(read_jobs(settings, jobs, found, stop)),
    ]
    runner, url = await serve(settings, boxes)
    try:
        await asyncio.sleep(3)  # the relay joins its group
        sampler = asyncio.create_task(cpu_shares(*cpu, after_s=warmup_s)) if cpu else None
        answered = await post_boxes(url, rate, warmup_s + seconds, body)
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        found.expected = set(answered)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(found.complete.wait(), 30)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await runner.cleanup()
    first = min(answered.values(), default=0.0) + warmup_s * 1000
    seen = found.seen
    return [max(0.0, seen[b] - at) for b, at in answered.items() if at >= first and b in seen]


async def post_boxes(url: str, rate: float, seconds: float, body: bytes) -> dict[str, float]:
    """POST ``rate`` boxes a second for ``seconds``; box id -> when the 202 came (ms)."""
    answered: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:

        async def one(box_id: str) -> None:
            async with http.post(url, data=body, headers={"X-Box": box_id}) as response:
                response.raise_for_status()
            answered[box_id] = time.time() * 1000

        tasks = []
        started = time.monotonic()
        for n in range(int(rate * seconds)):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(f"B{n:07d}")))
        await asyncio.gather(*tasks)
    return answered
