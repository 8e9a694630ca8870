"""The devstack watches its embedded broker instead of letting it stall silently.

The embedded broker's fetch costs CPU in proportion to the record batches a partition
holds, and past some tens of thousands of batches a fetch can come back empty (see the
embedded broker in docs/architecture.md). Every ``every_s`` this watch reads:

- the broker's CPU (share of one core) and resident memory, from /proc;
- how late records reach a reader: a groupless reader tails ``warehouse.boxes.v1`` (the
  busiest topic) from its end, and each record's age is now less its producer timestamp.

It serves them as Prometheus metrics (``parcelflow_devstack_broker_*``) on its own port,
and when the records arrive later than ``devstack_broker_alert_age_s``, or the CPU stays
above ``devstack_broker_alert_cpu``, for three readings in a row, it writes an alert to
``alerts.v1`` (the dashboard shows it) and a line to the terminal, saying what to do.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from schemas.alert import Alert
from schemas.common import now_ms
from schemas.topics import ALERTS, BOXES
from workers.kafka import Topics, make_producer, publish
from workers.kafka_auth import client_options
from workers.settings import Settings

log = structlog.get_logger(__name__)
TICKS = os.sysconf("SC_CLK_TCK")
STREAK = 3  # readings in a row over a threshold before the alert
REALERT_S = 300.0
ADVICE = (
    "the embedded broker slows as its log grows (every fetch lists every record batch of "
    "its partition): restart the devstack (Ctrl-C, then make up) to begin with an empty "
    "log, or run the compose stack with Apache Kafka for long sessions (docs/production.md)"
)


class BrokerGauge:
    """CPU and memory of one process, from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last = (time.monotonic(), self.cpu_s())

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def share(self) -> float:
        """Share of one core since the last call."""
        now, cpu = time.monotonic(), self.cpu_s()
        (then, before), self.last = self.last, (now, cpu)
        return (cpu - before) / (now - then) if now > then else 0.0


@dataclass
class Reading:
    cpu: float  # share of one core
    rss_mb: float
    records: int  # records the reader received in the interval
    age_p50_s: float
    age_max_s: float

    def slow(self, max_age_s: float, max_cpu: float) -> bool:
        return self.age_max_s > max_age_s or self.cpu > max_cpu

    def __str__(self) -> str:
        return (
            f"CPU {self.cpu:.0%}, RSS {self.rss_mb:.0f} MB, records {self.age_p50_s * 1000:.0f} "
            f"ms late at the median, {self.age_max_s * 1000:.0f} ms at most"
        )


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.cpu = Gauge(
            "parcelflow_devstack_broker_cpu_share", "Broker CPU, share of a core.", registry=r
        )
        self.rss = Gauge(
            "parcelflow_devstack_broker_rss_bytes", "Broker resident memory.", registry=r
        )
        self.age = Gauge(
            "parcelflow_devstack_broker_record_age_seconds",
            "How late records of warehouse.boxes.v1 reach a reader (median, max) over the "
            "last reading.",
            ["quantile"],
            registry=r,
        )
        self.alerts = Gauge(
            "parcelflow_devstack_broker_slow",
            "1 while the broker has been slow for three readings in a row.",
            registry=r,
        )

    def show(self, reading: Reading, slow: bool) -> None:
        self.cpu.set(reading.cpu)
        self.rss.set(reading.rss_mb * 1024 * 1024)
        self.age.labels("0.5").set(reading.age_p50_s)
        self.age.labels("1").set(reading.age_max_s)
        self.alerts.set(1 if slow else 0)


class BrokerWatch:
    """A thread with its own event loop, from ``start()`` to ``stop()``."""

    def __init__(
        self, settings: Settings, pid: int, port: int, every_s: float = 10.0, say: bool = True
    ) -> None:
        self.settings = settings
        self.gauge = BrokerGauge(pid)
        self.port = port
        self.every_s = every_s
        self.say = say
        self.metrics = Metrics()
        self.readings: list[Reading] = []
        self.alerted_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: tuple[Any, threading.Thread] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> BrokerWatch:
        self._server = start_http_server(self.port, "127.0.0.1", registry=self.metrics.registry)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="broker-watch", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._server is not None:
            httpd, thread = self._server
            httpd.shutdown()
            httpd.server_close()  # its listening socket, or it is left to the GC
            thread.join(timeout=5)
            self._server = None

    async def run(self) -> None:
        names = Topics(self.settings)
        reader = AIOKafkaConsumer(
            names(BOXES),
            **client_options(self.settings),
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
        )
        producer = make_producer(self.settings)
        try:
            await reader.start()
            await producer.start()
            while not self._stop.is_set():
                reading = await self.read(reader)
                await self.judge(reading, producer, names(ALERTS))
        except Exception as exc:  # noqa: BLE001 (the watch must never take the stack down)
            log.warning("broker_watch_stopped", error=f"{type(exc).__name__}: {exc}")
        finally:
            await close(reader, producer)

    async def read(self, reader: AIOKafkaConsumer) -> Reading:
        """One reading: the records that arrived over ``every_s``, and the broker."""
        ages: list[float] = []
        until = time.monotonic() + self.every_s
        while time.monotonic() < until and not self._stop.is_set():
            batches = await reader.getmany(timeout_ms=500)
            now = time.time() * 1000
            ages += [(now - m.timestamp) / 1000 for ms in batches.values() for m in ms]
        ages.sort()
        return Reading(
            cpu=self.gauge.share(),
            rss_mb=self.gauge.rss_mb(),
            records=len(ages),
            age_p50_s=ages[len(ages) // 2] if ages else 0.0,
            age_max_s=ages[-1] if ages else 0.0,
        )

    async def judge(self, reading: Reading, producer: AIOKafkaProducer, topic: str) -> None:
        if not self.alert_due(reading, time.monotonic()):
            return
        message = f"embedded broker slow ({reading}): {ADVICE}"
        if self.say:
            print(f"parcelflow: {message}", file=sys.stderr, flush=True)
        at = now_ms()
        alert = Alert(
            event_id=f"alert-broker-slow-{at}",
            kind="embedded_broker_slow",
            message=message,
            at_ms=at,
        )
        try:  # a broker too slow to take it is what the terminal line said already
            await asyncio.wait_for(publish(producer, topic, "devstack", alert), self.every_s)
        except (TimeoutError, KafkaError) as exc:
            log.warning("broker_watch_alert_not_written", error=type(exc).__name__)

    def alert_due(self, reading: Reading, now: float) -> bool:
        """Keep the reading; True when the last three were slow and no alert was given in
        the last REALERT_S."""
        self.readings = [*self.readings[-(STREAK - 1) :], reading]
        limits = (
            self.settings.devstack_broker_alert_age_s,
            self.settings.devstack_broker_alert_cpu,
        )
        slow = len(self.readings) == STREAK and all(r.slow(*limits) for r in self.readings)
        self.metrics.show(reading, slow)
        if not slow or (self.alerted_at is not None and now - self.alerted_at < REALERT_S):
            return False
        self.alerted_at = now
        return True


async def close(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Stop each client, every one of them, even with the broker gone: aiokafka's consumer
    can raise CancelledError out of stop() then (its fetch task is cancelled while it waits
    on a dead connection), and a client never stopped is left to the GC."""
    for client in clients:
        try:
            await asyncio.wait_for(client.stop(), 5.0)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 (see above)
            log.warning("broker_watch_close", error=type(exc).__name__)
