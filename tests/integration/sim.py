"""Start the simulator in-process for a test, with the test's fake credentials."""

from __future__ import annotations

from typing import Any

from workers.settings import Settings
from workers.simulator.app import Simulator, create_app


async def start_simulator(serve: Any, settings: Settings) -> tuple[str, Simulator]:
    sim = Simulator.from_settings(settings)
    url: str = await serve(create_app(sim))
    return url, sim
