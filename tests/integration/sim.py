"""The simulator for tests: in-process (state readable) or as its own process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from devstack.simulator.app import Simulator, create_app
from tests.integration.processes import settings_env
from workers.settings import Settings


async def start_simulator(serve: Any, settings: Settings) -> tuple[str, Simulator]:
    sim = Simulator.from_settings(settings)
    url: str = await serve(create_app(sim))
    return url, sim


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.json()


@asynccontextmanager
async def simulator_process(settings: Settings, log: Path) -> AsyncIterator[str]:
    """``parcelflow simulator`` on ``settings.sim_port``; yields its URL; stopped by pid."""
    url = f"http://127.0.0.1:{settings.sim_port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "simulator"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    await get_json(f"{url}/healthz")
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
