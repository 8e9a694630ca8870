"""SIGKILL the labeler mid-run: after a restart every job has exactly one label and the
label API saw no second call for any shipment."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from schemas.label import LabelResult
from schemas.topics import LABEL_JOBS, LABELS
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.processes import settings_env
from tests.unit.factories import job
from workers.broker.embedded import free_port
from workers.kafka import ensure_topics
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


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.json()


async def test_sigkill_mid_run_then_restart_labels_every_job_exactly_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(
        sim_port=port,
        sim_label_latency_median_s=0.4,
        sim_label_latency_sigma=0.3,
        shipium_base_url=url,
        labeler_max_in_flight=16,
    )
    with (tmp_path / "simulator.log").open("ab") as log:
        simulator = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "simulator"],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await run_kill_scenario(settings, url, tmp_path)
    finally:
        simulator.terminate()
        simulator.wait(10)


async def run_kill_scenario(settings: Settings, url: str, tmp_path: Path) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                await get_json(f"{url}/healthz")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    await ensure_topics(settings)
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
