"""Labeler replicas share what they learned of the label provider (labeler.limits.v1): a
replica that starts begins at its share of the group's limit, not at the floor, and the
replicas already running take their new share on the rebalance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.adaptive import limit_of
from devstack.broker.embedded import free_port
from schemas.codec import encode
from schemas.topics import LABEL_JOBS
from tests.integration.kafka_helpers import provisioned
from tests.integration.processes import worker_process
from tests.integration.sim import start_simulator
from tests.unit.factories import job
from workers.kafka import Topics, make_producer
from workers.settings import Settings

pytestmark = pytest.mark.slow

CAPACITY = 24  # calls the simulated provider takes at once before its latency grows


async def fill(settings: Settings, count: int) -> None:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        topic = Topics(settings)(LABEL_JOBS)
        sent = [
            await producer.send(topic, encode(job(f"W{n}")), key=f"W{n}".encode())
            for n in range(count)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def shared(log: Path) -> list[dict[str, Any]]:
    """The labeler_limit_shared lines of a log."""
    lines = log.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if b'"labeler_limit_shared"' in line]


async def test_a_new_replica_starts_at_its_share_of_the_groups_limit(
    make_settings: Callable[..., Settings], serve: Any, tmp_path: Path
) -> None:
    base = make_settings(
        sim_label_latency_median_s=0.5,
        sim_label_latency_sigma=0.0,
        sim_label_tail_probability=0,
        sim_label_capacity=CAPACITY,
    )
    url, sim = await start_simulator(serve, base)
    settings = make_settings(
        shipium_base_url=url,
        labeler_max_in_flight=64,
        labeler_limit_report_s=1.0,
        labeler_backoff_base_s=0.05,
    )
    await provisioned(settings)
    await fill(settings, 4000)  # a backlog that outlasts the test
    ports = [free_port(), free_port()]
    with ExitStack() as running:

        def start(n: int) -> Any:
            return running.enter_context(
                worker_process(
                    "labeler",
                    settings.model_copy(update={"ops_port": ports[n]}),
                    tmp_path / f"labeler-{n}.log",
                    b"labeler_ready",
                )
            )

        await asyncio.to_thread(start, 0)  # from a thread: the simulator answers meanwhile
        metrics = [f"http://127.0.0.1:{port}/metrics" for port in ports]
        deadline = time.monotonic() + 60
        learned = 0.0
        while learned < CAPACITY * 0.6 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            learned = await asyncio.to_thread(limit_of, metrics[0]) or 0.0
        assert learned >= CAPACITY * 0.6, f"the first replica did not find the capacity: {learned}"
        await asyncio.sleep(2.5)  # at least two reports of it
        await asyncio.to_thread(start, 1)
        deadline = time.monotonic() + 30
        while not (shared(tmp_path / "labeler-1.log") and shared(tmp_path / "labeler-0.log")):
            assert time.monotonic() < deadline, "no share was taken on the rebalance"
            await asyncio.sleep(0.2)
        first = await asyncio.to_thread(limit_of, metrics[0])
        second = await asyncio.to_thread(limit_of, metrics[1])
    new, old = shared(tmp_path / "labeler-1.log")[0], shared(tmp_path / "labeler-0.log")[0]
    print(f"\nlearned {learned:g}; new replica {new}; old replica {old}; now {first}, {second}")
    # the group's limit as the first replica reported it, split by partitions held
    # (at least 0.4: a report may follow a cut by half, the answer to a 429 at the capacity)
    assert new["reports"] == 1 and new["group_capacity"] >= CAPACITY * 0.4
    held = [int(r["partitions"].split("/")[0]) for r in (new, old)]
    assert sum(held) == settings.topic_partitions
    assert new["limit"] >= int(new["group_capacity"] * held[0] / settings.topic_partitions)
    assert new["limit"] > 4, "a cold replica would measure at 4 calls first"
    # the first replica gave up what its partitions no longer need
    assert old["limit"] <= old["group_capacity"] * held[1] / settings.topic_partitions + 1
    assert sim.shipium.duplicates == 0
