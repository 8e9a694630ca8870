"""The agent: follow the station's label events, print each label once, keep the queue
while the printer is away.

Two loops share the state (``parcelflow_station.state``):

- ``follow`` reads ``GET /v1/labels/events?station=ID`` (Server-Sent Events) and, for each
  label of this station not printed nor queued yet, queues it and saves the state with the
  event's id; after a drop it reconnects with ``Last-Event-ID``, so nothing is missed.
- ``print_queue`` prints the queue in order: it fetches each label's document in the
  station's format and hands it to the printer; once the printer took it, the label is
  marked printed and the state saved. A printer away keeps the queue (tried again every
  few seconds); a label erased meanwhile (410) is dropped.

A restart prints nothing twice, except a label whose printer acknowledgement came in the
instant before the agent died (the printer has it, the state does not yet).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp

from parcelflow_station import metrics
from parcelflow_station.printers import Printer, PrinterAway
from parcelflow_station.state import Pending, State


@dataclass
class Config:
    receiver_url: str
    token: str
    station: str  # "" : every station of the token's warehouses (an agent per warehouse)
    fmt: str = "zpl"
    state_file: Path = Path("station-state.json")
    retry_s: float = 2.0  # a printer away, a dropped stream: the wait before trying again


@dataclass
class Stats:
    printed: int = 0
    printer_away: int = 0
    last_print_ms: int = 0
    agent_ms: list[float] = field(default_factory=list)  # label received -> printer took it


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str, str]]:
    """(event, id, data) of a Server-Sent Events stream; comments (heartbeats) skipped."""
    kind, ident = "message", ""
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield kind, ident, "\n".join(data)
            kind, ident, data = "message", "", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)


class Agent:
    def __init__(self, config: Config, printer: Printer) -> None:
        self.config = config
        self.printer = printer
        self.state = State.load(config.state_file)
        self.wake = asyncio.Event()
        self.stats = Stats()
        self.connected = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}"}

    async def run(self, stop: asyncio.Event) -> None:
        """Follow and print until ``stop``."""
        async with aiohttp.ClientSession() as http:
            following = asyncio.create_task(self.follow(http, stop))
            printing = asyncio.create_task(self.print_queue(http, stop))
            try:
                await stop.wait()
            finally:
                following.cancel()
                self.wake.set()  # the printing loop ends after the label it is printing
                done, _ = await asyncio.wait({printing}, timeout=30)
                if not done:
                    printing.cancel()
                await asyncio.gather(following, printing, return_exceptions=True)
                self.state.save()

    async def follow(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        url = f"{self.config.receiver_url}/v1/labels/events"
        params = {"station": self.config.station} if self.config.station else {}
        while not stop.is_set():
            headers = dict(self.headers)
            if self.state.last_event_id:
                headers["Last-Event-ID"] = self.state.last_event_id
            else:
                params["from"] = "start"  # a new station: its labels kept on the receiver
            try:
                async with http.get(url, params=params, headers=headers, timeout=None) as answer:
                    if answer.status != 200:
                        raise aiohttp.ClientResponseError(
                            answer.request_info, (), status=answer.status
                        )
                    self.connected = True
                    metrics.FOLLOWING.set(1)
                    async for kind, ident, data in sse(answer):
                        self.take(kind, ident, data)
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            self.connected = False
            metrics.FOLLOWING.set(0)
            params.pop("from", None)
            await asyncio.sleep(self.config.retry_s)

    def take(self, kind: str, ident: str, data: str) -> None:
        """One event of the stream: a label's parcels of this station, queued."""
        if kind == "label":
            event = json.loads(data)
            for parcel in event["parcels"]:
                if self.config.station and parcel.get("station_id") != self.config.station:
                    continue
                if not self.state.knows(event["job_id"], parcel["box_id"]):
                    self.state.queue.append(
                        Pending(
                            job_id=event["job_id"],
                            box_id=parcel["box_id"],
                            tracking_id=parcel["tracking_id"],
                            document=parcel["document"],
                            received_at_ms=now_ms(),
                        )
                    )
                    self.wake.set()
            metrics.QUEUED.set(len(self.state.queue))
        if ident:
            self.state.last_event_id = ident
            self.state.save()

    async def print_queue(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self.state.queue:
                self.wake.clear()
                await self.wake.wait()
                continue  # woken by a label, or by the stop
            pending = self.state.queue[0]
            try:
                await self.print_one(http, pending)
            except PrinterAway:
                self.stats.printer_away += 1
                metrics.PRINTER_AWAY.inc()
                await asyncio.sleep(self.config.retry_s)
            except (aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.sleep(self.config.retry_s)  # the receiver away

    async def print_one(self, http: aiohttp.ClientSession, pending: Pending) -> None:
        url = f"{self.config.receiver_url}{pending.document}"
        async with http.get(url, params={"format": self.config.fmt}, headers=self.headers) as got:
            if got.status == 410:  # erased with its buyer data meanwhile: nothing to print
                self.state.queue.remove(pending)
                self.state.save()
                return
            got.raise_for_status()
            document = await got.read()
        await self.printer.print(
            document, self.config.fmt, f"{pending.box_id} {pending.tracking_id}"
        )
        self.state.done(pending)
        self.state.save()
        self.stats.printed += 1
        self.stats.last_print_ms = now_ms()
        self.stats.agent_ms.append(self.stats.last_print_ms - pending.received_at_ms)
        del self.stats.agent_ms[:-1000]
        metrics.PRINTED.inc()
        metrics.QUEUED.set(len(self.state.queue))
        metrics.AGENT_SECONDS.observe(self.stats.agent_ms[-1] / 1000)

    def status(self) -> str:
        """One line: connected, queue, printed, printer away count, last print."""
        last = time.strftime("%H:%M:%S", time.localtime(self.stats.last_print_ms / 1000))
        return (
            f"station {self.config.station}: "
            f"{'following' if self.connected else 'reconnecting'}; "
            f"queue {len(self.state.queue)}; printed {self.stats.printed}"
            f"{f' (last {last})' if self.stats.printed else ''}; "
            f"printer away {self.stats.printer_away} times"
        )


async def reprint(config: Config, printer: Printer, box_id: str, warehouse: str) -> None:
    """Print a box's label again (fetched by box id), whatever the state says."""
    async with aiohttp.ClientSession() as http:
        url = f"{config.receiver_url}/v1/boxes/{quote(box_id, safe='')}/label"
        params = {"format": config.fmt} | ({"warehouse": warehouse} if warehouse else {})
        headers = {"Authorization": f"Bearer {config.token}"}
        async with http.get(url, params=params, headers=headers) as got:
            got.raise_for_status()
            document = await got.read()
    await printer.print(document, config.fmt, f"{box_id} (reprint)")
