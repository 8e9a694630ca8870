"""The one start-up and shutdown path of the long-running Kafka workers.

The enricher, labeler and auditor start with ``async with worker_runtime(...)``: the topic
check (workers refuse to start on a mismatch), the embedded broker's offsets correction,
SIGTERM and Ctrl-C, and the ops HTTP server on ``PARCELFLOW_OPS_PORT``:

- ``/healthz``: 200 while the process and its event loop answer (with the loop's lag);
- ``/readyz``: 200 once the broker answers a metadata request and every consumer the
  worker registered has its partitions; 503 with the reason otherwise;
- ``/metrics``: Prometheus.

The planner (a Faust worker with its own loop) serves the same routes from ``ops_app``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from workers.loop import stop_on_signals
from workers.plugins import adapt_kafka_clients
from workers.settings import WorkerSettings
from workers.topics import ensure_topics

log = structlog.get_logger(__name__)

Check = Callable[[], Awaitable[str | None]]  # why the worker is not ready, or None
TICK_S = 0.5


S = TypeVar("S", bound=WorkerSettings)


@dataclass
class Runtime(Generic[S]):
    """What a running worker tells its ops server: its name and its readiness checks."""

    settings: S
    name: str
    stop: asyncio.Event
    checks: list[Check] = field(default_factory=list)
    last_tick: float = field(default_factory=time.monotonic)

    def ready_when(self, check: Check) -> None:
        self.checks.append(check)

    def wants_consumer(self, name: str, consumer: object) -> None:
        """Ready only while this consumer has partitions assigned (or assigned by hand)."""

        async def assigned() -> str | None:
            return None if consumer.assignment() else f"{name} has no partitions assigned"  # type: ignore[attr-defined]

        self.ready_when(assigned)

    def wants_broker(self, client: object) -> None:
        """Ready only while the broker answers this client's metadata request."""

        async def answers() -> str | None:
            try:
                async with asyncio.timeout(self.settings.kafka_request_timeout_s):
                    await client.fetch_all_metadata()  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 (any failure means: not ready)
                return f"the broker does not answer: {type(exc).__name__}"
            return None

        self.ready_when(answers)

    async def tick(self) -> None:
        """Notes that the event loop runs: /healthz reports how late the last tick was."""
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(TICK_S)


def ops_app(runtime: Runtime[Any]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        lag = max(0.0, time.monotonic() - runtime.last_tick - TICK_S)
        return web.json_response({"status": "ok", "worker": runtime.name, "loop_lag_s": lag})

    async def readyz(request: web.Request) -> web.Response:
        reasons = [r for r in await asyncio.gather(*(c() for c in runtime.checks)) if r]
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready", "worker": runtime.name})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def ops_server(runtime: Runtime[Any]) -> AsyncIterator[None]:
    """Serve the ops routes on ``ops_host:ops_port`` (0: none) while the block runs."""
    settings = runtime.settings
    ticker = asyncio.create_task(runtime.tick(), name="ops-tick")
    runner = web.AppRunner(ops_app(runtime), access_log=None)
    try:
        if settings.ops_port:
            await runner.setup()
            await web.TCPSite(runner, settings.ops_host, settings.ops_port).start()
            log.info("ops_serving", port=settings.ops_port, worker=runtime.name)
        yield
    finally:
        ticker.cancel()
        await runner.cleanup()


@asynccontextmanager
async def worker_runtime(
    settings: S, name: str, stop: asyncio.Event | None = None
) -> AsyncIterator[Runtime[S]]:
    """Start a worker the one way: topics checked, offsets corrected on the embedded
    broker, signals handled (unless ``stop`` is given), the ops server up."""
    await ensure_topics(settings)
    adapt_kafka_clients(settings)
    if stop is None:
        stop = stop_on_signals(settings.worker_stop_timeout_s)
    runtime = Runtime(settings, name, stop)
    async with ops_server(runtime):
        yield runtime
