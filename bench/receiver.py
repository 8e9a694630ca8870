"""Receiver benchmark: signed webhooks/s with durable writes, against a bare aiohttp handler.

    make bench-receiver            (or: .venv/bin/python -m bench.receiver --help)

Two servers, each its own process, get the same load: ``--requests`` signed TikTok
webhooks over ``--connections`` concurrent keep-alive connections from this process.

- baseline: a bare aiohttp handler that reads the body and answers 200;
- receiver: ``parcelflow receiver`` (signature check, validation, freshness, dedupe, and
  a write to the embedded broker with acks=all before each 200).

It prints webhooks/s and p50/p99 latency of each, and the ratio receiver / baseline
(goal >= 0.5). Both share this 2-core machine with the load generator and, for the
receiver, the broker: the ratio is the number to compare across runs, not the absolutes.
Everything started is stopped, by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp
import orjson
import psutil
from aiohttp import web

from bench import sealing
from devstack.broker.embedded import EmbeddedBroker, free_port
from devstack.broker.offsets import high_watermarks
from devstack.stack import terminate as stop
from schemas.topics import WEBHOOKS
from workers.kafka import Topics
from workers.loop import new_event_loop
from workers.settings import Settings
from workers.tiktok.signing import webhook_signature

APP_KEY = "bench-app"
APP_SECRET = "bench-secret-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds by process

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def line(self) -> str:
        q = statistics.quantiles(self.latencies, n=100)
        cpu = ", ".join(f"{name} {s / self.seconds:.0%}" for name, s in self.cpu_s.items())
        return (
            f"{self.name:<9} {self.rate:8.0f} webhooks/s   p50 {q[49] * 1000:6.1f} ms   "
            f"p99 {q[98] * 1000:6.1f} ms   ({self.requests} in {self.seconds:.1f} s; "
            f"CPU {cpu})"
        )


def webhooks(count: int, run: str) -> list[tuple[bytes, str]]:
    """Signed bodies, made before the clock starts (signing is the sender's cost)."""
    now = int(time.time())
    out = []
    for n in range(count):
        body = orjson.dumps(
            {
                "type": 1,
                "tts_notification_id": f"{run}-{n}",
                "shop_id": f"shop-{n % 8}",
                "timestamp": now,
                "data": {
                    "order_id": f"{run}{n:09d}",
                    "order_status": "AWAITING_SHIPMENT",
                    "is_on_hold_order": False,
                    "update_time": now,
                },
            }
        )
        out.append((body, webhook_signature(APP_KEY, APP_SECRET, body)))
    return out


async def load(url: str, bodies: list[tuple[bytes, str]], connections: int) -> Result:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(bodies)

    async def client(http: aiohttp.ClientSession) -> None:
        for body, signature in queue:
            started = time.perf_counter()
            async with http.post(url, data=body, headers={"Authorization": signature}) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(connections)))
        seconds = time.perf_counter() - started
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected answers {statuses} from {url}")
    return Result("", len(bodies), seconds, latencies)


def serve_bare(port: int) -> None:
    """The baseline: read the body, answer 200. Nothing else."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/webhooks/tiktok", handler)
    app.router.add_get("/healthz", handler)
    loop = new_event_loop()  # the same loop as the receiver, for a fair baseline
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


def start(command: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{command} exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{command} not ready:\n{log.read_text()[-2000:]}")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    times = {name: psutil.Process(pid).cpu_times() for name, pid in pids.items()}
    return {name: t.user + t.system for name, t in times.items()}


async def measure(
    name: str,
    proc_args: list[str],
    env: dict[str, str],
    port: int,
    args: argparse.Namespace,
    log: Path,
    broker_pid: int | None = None,
) -> Result:
    proc = start(proc_args, env, log, port)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/tiktok"
        await load(url, webhooks(args.warmup, f"warm-{uuid.uuid4().hex[:6]}"), args.connections)
        bodies = webhooks(args.requests, f"run-{uuid.uuid4().hex[:6]}")
        pids = {"server": proc.pid, "load": os.getpid()}
        if broker_pid is not None:
            pids["broker"] = broker_pid
        before = cpu_seconds(pids)
        result = await load(url, bodies, args.connections)
        used = {k: v - before[k] for k, v in cpu_seconds(pids).items()}
        return Result(name, result.requests, result.seconds, result.latencies, used)
    finally:
        stop(proc)


async def main(args: argparse.Namespace) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    with TemporaryDirectory(prefix="pf-bench-") as tmp_dir, EmbeddedBroker() as broker:
        tmp = Path(tmp_dir)
        bare_port = free_port()
        bare = await measure(
            "baseline",
            [sys.executable, "-m", "bench.receiver", "--serve-bare", str(bare_port)],
            base_env,
            bare_port,
            args,
            tmp / "bare.log",
        )
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            kafka_embedded=True,
            topic_namespace=f"bench{uuid.uuid4().hex[:6]}.",
            receiver_port=free_port(),
            tiktok_app_key=APP_KEY,
            tiktok_app_secret=APP_SECRET,
            log_level=args.log_level,
            **sealing.SETTINGS,
        )
        receiver = await measure(
            "receiver",
            [
                sys.executable,
                *os.environ.get("BENCH_PROFILE", "").split(),
                "-m",
                "workers.cli",
                "receiver",
            ],
            base_env | settings.as_env(),
            settings.receiver_port,
            args,
            tmp / "receiver.log",
            broker_pid=broker.proc.pid if broker.proc else None,
        )
        stored = await count_stored(settings)
    print(f"{args.requests} signed webhooks, {args.connections} connections, 2-core machine")
    print(bare.line())
    print(receiver.line())
    print(f"stored in {Topics(settings)(WEBHOOKS)}: {stored} (warm-up included)")
    print(f"ratio receiver/baseline: {receiver.rate / bare.rate:.2f} (goal >= 0.5)")
    if bare.cpu_s["load"] / bare.seconds > 0.95:
        print(
            "note: the baseline is bound by the load generator (one Python process at 100% "
            "CPU), so the bare handler's true rate, and the gap to it, are larger"
        )


async def count_stored(settings: Settings) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        topic = Topics(settings)(WEBHOOKS)
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        client = {"bootstrap_servers": settings.kafka_bootstrap}
        ends = await high_watermarks(client, await consumer.end_offsets(partitions))
        return sum(ends.values())
    finally:
        await consumer.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--log-level", default="info", help="receiver log level")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve_bare:
        serve_bare(arguments.serve_bare)
    else:
        asyncio.run(main(arguments))
