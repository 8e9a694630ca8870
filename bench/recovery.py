"""Planner recovery: what a scale-up and a restart cost, in seconds per thousand open orders.

    .venv/bin/python -m bench.recovery            (--orders 2000,10000,40000)

For each count, that many open orders (whose boxes have not closed: each is one state in
the planner's table and one record in its changelog) wait on orders.v1, and one planner
worker joins them. Then:

- scale-up: a second planner starts and is given half the partitions, whose table state
  it restores from the changelog before it joins anything;
- restart: both stop and one new planner starts, restoring every partition (a restart, a
  deploy, or the last replica of a scale-down).

Each prints the seconds from the process's start to its "Worker ready" and the seconds its
log puts between "Restoring state from changelog topics" and "Recovery complete", and the
latter per thousand open orders it restored. The table store is the planner's (memory):
every start restores from the changelog. Everything started is stopped, by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
from aiokafka import AIOKafkaConsumer

from bench.planner import events, fill
from devstack.broker.embedded import EmbeddedBroker, free_port
from devstack.stack import terminate
from schemas.order import Order
from workers.settings import Settings
from workers.topics import changelog_topic, ensure_topics

RESTORING = b"Restoring state from changelog topics"
RESTORED = b"Recovery complete"
READY = b"Worker ready"


def start_planner(settings: Settings, tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    env |= settings.as_env() | {
        "PARCELFLOW_LOG_LEVEL": "info",  # Faust's recovery lines are at info
        "PARCELFLOW_OPS_PORT": str(free_port()),
        "PARCELFLOW_PLANNER_DATA_DIR": str(tmp / name),
    }
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "planner"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return proc, log


async def ready_after(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 600) -> float:
    """Seconds until the log says ``Worker ready`` (the last recovery of the process)."""
    started = time.monotonic()
    while READY not in await asyncio.to_thread(log.read_bytes):
        if proc.poll() is not None or time.monotonic() - started > timeout_s:
            raise SystemExit(f"the planner did not become ready: see {log}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def restore_s(log: Path) -> float:
    """Seconds the log puts between the first restore's start and its end."""
    begun = ended = None
    for line in log.read_bytes().splitlines():
        if begun is None and RESTORING in line:
            begun = stamp(line)
        elif begun is not None and RESTORED in line:
            ended = stamp(line)
            break
    return (ended - begun) if begun is not None and ended is not None else float("nan")


def stamp(line: bytes) -> float:
    return datetime.fromisoformat(orjson.loads(line)["timestamp"]).timestamp()


async def changelog_records(settings: Settings, want: int, timeout_s: float = 600) -> None:
    """Wait until the planner's changelog holds ``want`` records (its table has them)."""
    consumer = AIOKafkaConsumer(
        changelog_topic(settings),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    try:
        async with asyncio.timeout(timeout_s):
            while seen < want:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                seen += sum(len(messages) for messages in batches.values())
    finally:
        await consumer.stop()


async def one(base: Settings, orders: int, tmp: Path) -> dict[str, float]:
    settings = base.model_copy(update={"topic_namespace": f"br{uuid.uuid4().hex[:6]}."})
    await ensure_topics(settings)
    await fill(settings, [e for e in events(orders, "R") if isinstance(e, Order)])
    first = start_planner(settings, tmp, f"a{orders}")
    procs = [first[0]]
    try:
        await ready_after(*first)
        await changelog_records(settings, orders)
        second = start_planner(settings, tmp, f"b{orders}")
        procs.append(second[0])
        scale_ready = await ready_after(*second)
        scale_restore = restore_s(second[1])
        for proc in procs:
            terminate(proc)
        third = start_planner(settings, tmp, f"c{orders}")
        procs.append(third[0])
        restart_ready = await ready_after(*third)
        restart_restore = restore_s(third[1])
    finally:
        for proc in procs:
            terminate(proc)
    return {
        "scale_ready": scale_ready,
        "scale_restore": scale_restore,
        "restart_ready": restart_ready,
        "restart_restore": restart_restore,
    }


async def main(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.orders.split(",")]
    with TemporaryDirectory(prefix="pf-recovery-") as tmp_dir, EmbeddedBroker() as broker:
        base = Settings(
            kafka_bootstrap=broker.bootstrap,
            kafka_embedded=True,
            topic_partitions=4,
            kafka_fetch_max_wait_ms=20,
        )
        results = {n: await one(base, n, Path(tmp_dir)) for n in counts}
    print("planner recovery, memory table store, 4 partitions; 2-core machine")
    worst = 0.0
    for n, r in results.items():
        per_scale = r["scale_restore"] / (n / 2) * 1000  # it restored about half
        per_restart = r["restart_restore"] / n * 1000
        worst = max(worst, per_scale, per_restart)
        print(
            f"  {n:>6} open orders: scale-up 1 -> 2 ready after {r['scale_ready']:5.1f} s "
            f"(restore {r['scale_restore']:5.2f} s); restart ready after "
            f"{r['restart_ready']:5.1f} s (restore {r['restart_restore']:5.2f} s, "
            f"{per_restart:.2f} s per 1000)"
        )
    print(f"recovery: restore_s_per_1000_open_orders={worst:.2f}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", default="2000,10000,40000", help="open orders, comma separated")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except KeyboardInterrupt:
        sys.exit(130)
