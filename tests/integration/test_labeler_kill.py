"""The labeler when things go wrong mid-run: SIGKILL and restart, a rebalance during slow
calls. Every job ends with exactly one label and the label API sees no second call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.broker.embedded import free_port
from schemas.label import LabelResult
from schemas.topics import LABEL_JOBS, LABELS
from tests.integration.kafka_helpers import consume, models, produce, provisioned
from tests.integration.processes import settings_env
from tests.integration.sim import get_json, simulator_process
from tests.unit.factories import job
from workers.labeler.worker import run
from workers.settings import Settings

pytestmark = pytest.mark.slow


async def start_labeler(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "labeler"],
        env=settings_env(settings),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    handle.close()
    async with asyncio.timeout(30):
        while b"labeler_ready" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
    return proc


async def test_sigkill_mid_run_then_restart_labels_every_job_exactly_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        sim_port=port,
        sim_label_latency_median_s=0.4,
        sim_label_latency_sigma=0.3,
        shipium_base_url=f"http://127.0.0.1:{port}",
        labeler_max_in_flight=16,
    )
    async with simulator_process(settings, tmp_path / "simulator.log") as url:
        await provisioned(settings)
        jobs = [job(f"K{n:03d}", parcels=1 + n % 2) for n in range(120)]
        for j in jobs:
            await produce(settings, LABEL_JOBS, j.order_id, j)

        first = await start_labeler(settings, tmp_path / "labeler-1.log")
        try:
            await consume(settings, LABELS, lambda v: len(v) >= 30, timeout_s=60)
            in_flight = (await get_json(f"{url}/_sim/stats"))["shipium"]["in_flight"]
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        killed_at = (await get_json(f"{url}/_sim/stats"))["shipium"]["labels"]

        second = await start_labeler(settings, tmp_path / "labeler-2.log")
        try:
            values = await consume(
                settings,
                LABELS,
                lambda v: len({m.job_id for m in models(LabelResult, v)}) >= 120,
                timeout_s=90,
            )
        finally:
            second.send_signal(signal.SIGUSR1)
            await asyncio.sleep(1)
            second.terminate()
            second.wait(15)
        labels = models(LabelResult, values)
        assert {lb.job_id for lb in labels} == {j.job_id for j in jobs}
        by_job: dict[str, set[str]] = {}
        for lb in labels:
            by_job.setdefault(lb.job_id, set()).add(lb.shipment_id)
        assert all(len(ids) == 1 for ids in by_job.values()), "one shipment per job"
        stats = (await get_json(f"{url}/_sim/stats"))["shipium"]
        assert stats["duplicate_partner_shipment_ids"] == 0
        assert stats["labels"] == 120
        assert in_flight > 0, "the kill landed while calls were in flight"
        assert 30 <= killed_at < 120


async def test_a_rebalance_during_slow_calls_loses_nothing_and_calls_nothing_twice(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        sim_port=port,
        sim_label_latency_median_s=1.5,
        sim_label_latency_sigma=0.0,
        sim_label_tail_probability=0.0,
        shipium_base_url=f"http://127.0.0.1:{port}",
        labeler_max_in_flight=8,
    )
    async with simulator_process(settings, tmp_path / "simulator.log") as url:
        await provisioned(settings)
        jobs = [job(f"R{n:03d}") for n in range(40)]
        for j in jobs:
            await produce(settings, LABEL_JOBS, j.order_id, j)
        stops = [asyncio.Event(), asyncio.Event()]
        first = asyncio.create_task(run(settings, stops[0]))
        second: asyncio.Task[None] | None = None
        try:
            await consume(settings, LABELS, lambda v: len(v) >= 4, timeout_s=60)
            second = asyncio.create_task(run(settings, stops[1]))  # joins: a rebalance
            values = await consume(
                settings,
                LABELS,
                lambda v: len({m.job_id for m in models(LabelResult, v)}) >= 40,
                timeout_s=120,
            )
        finally:
            for stop in stops:
                stop.set()
            await asyncio.wait_for(asyncio.gather(first, *([second] if second else [])), 30)
        stats = (await get_json(f"{url}/_sim/stats"))["shipium"]
    assert {lb.job_id for lb in models(LabelResult, values)} == {j.job_id for j in jobs}
    assert stats["duplicate_partner_shipment_ids"] == 0
    assert stats["labels"] == 40
