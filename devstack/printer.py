"""A thermal printer's raw port (9100), simulated: it keeps every job's bytes and when they
came, for the print agent's tests and ``make bench-print``. ``off`` and ``on`` make it go
away and come back (a printer unplugged, out of paper)."""

from __future__ import annotations

import asyncio
import time

from devstack.broker.embedded import free_port


class SocketPrinter:
    def __init__(self) -> None:
        self.port = free_port()
        self.jobs: list[tuple[float, bytes]] = []  # (when, bytes): one job per connection
        self.server: asyncio.Server | None = None

    async def on(self) -> None:
        async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()
            self.jobs.append((time.time(), data))
            writer.close()

        self.server = await asyncio.start_server(take, "127.0.0.1", self.port)

    async def off(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
