"""Run the planner with Faust's seek to the committed offsets started late: the window in
which faust-streaming 0.15.3 loses records (see workers/planner/delivery.py), widened
so that a test sees the race every time. In it, records fetched from aiokafka's position
fill the agent's buffer faster than the join empties it; the seek then moves back, the
resume throws the buffered records away, and without the fix their refetch is dropped.

    python -m tests.integration.slow_seek SECONDS [--without-fix]

``--without-fix`` leaves out ``deliver_every_offset``: the planner as Faust ships it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from faust.transport.consumer import Consumer

from workers import cli
from workers.planner import app


def main() -> None:
    delay_s = float(sys.argv[1])
    perform_seek = Consumer.perform_seek

    async def slow_seek(self: Any) -> None:
        await asyncio.sleep(delay_s)
        await perform_seek(self)

    Consumer.perform_seek = slow_seek  # type: ignore[method-assign]
    if "--without-fix" in sys.argv:
        app.deliver_every_offset = lambda consumer: None  # type: ignore[assignment]
    cli.main(["planner"])


if __name__ == "__main__":
    main()
