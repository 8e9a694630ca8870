"""``parcelflow dashboard``: a live web page of the pipeline, in its own process.

It reads the topics itself, as any dashboard of them would (from the beginning of their
retention, no consumer group: it commits nothing and moves no one's offsets), and the
consumer groups' committed offsets for the lag of each stage. Routes, on
``PARCELFLOW_DASHBOARD_PORT``:

- ``GET /``: the page (no internet needed: its script and styles are inline);
- ``GET /api/snapshot``: what the page shows, as JSON; ``GET /api/events``: the same,
  pushed every second as server-sent events (one snapshot per second, shared by every
  page; at most ``dashboard_max_clients`` at once, 503 beyond);
- ``POST /api/failures/replay`` ``{"job_ids": [...]}`` or ``{"all": true}``: replay
  failed label jobs;
- ``GET /login``, ``POST /login``, ``POST /logout``: see ``access.py``;
- ``/healthz``, ``/readyz``, ``/metrics`` (with ``parcelflow_consumer_lag``): on
  ``PARCELFLOW_OPS_PORT`` when it is set (production), else on this port.

Everything but login and the ops routes needs the operator role (``access.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from aiohttp_sse import sse_response

from schemas.codec import decode, encode
from schemas.common import derived_id, now_ms
from schemas.replay import ReplayRequest
from schemas.session import SessionEnded
from schemas.topics import (
    ALERTS,
    BOXES,
    LABEL_FAILURES,
    LABEL_JOBS,
    LABELS,
    ORDERS,
    PLANS,
    REPAIRS,
    REPLAYS,
    SESSIONS,
    WEBHOOKS_PARKED,
)
from workers import auth
from workers.auth import Principals, in_warehouses, protect
from workers.dashboard.access import Access, login_page
from workers.dashboard.board import Board
from workers.dashboard.lag import LagReader
from workers.kafka import (
    Topics,
    groupless_consumer,
    make_producer,
    make_reader,
    start_on_all,
)
from workers.labeler.codes import DECISIONS
from workers.runtime import Runtime, ops_app, worker_runtime
from workers.settings import DashboardSettings

log = structlog.get_logger(__name__)

BOARD = web.AppKey("board", Board)
SETTINGS = web.AppKey("settings", DashboardSettings)
CLOSING = web.AppKey("closing", asyncio.Event)
PUSH_EVERY_S = 1.0
LAG_EVERY_S = 5.0
READ = {  # topic -> the board's name for it
    ORDERS: "orders",
    BOXES: "boxes",
    PLANS: "plans",
    LABEL_JOBS: "jobs",
    LABELS: "labels",
    LABEL_FAILURES: "failures",
    ALERTS: "alerts",
    WEBHOOKS_PARKED: "parked",
    REPAIRS: "repairs",
}


def page(snapshot: dict[str, Any] | None = None) -> str:
    """The page; with a snapshot, a static report of it (no server needed to view)."""
    html = resources.files("workers.dashboard").joinpath("page.html").read_text("utf-8")
    if snapshot is None:
        return html
    data = orjson.dumps(snapshot).decode().replace("</", "<\\/")
    return html.replace(
        '<script id="snapshot" type="application/json">null</script>',
        f'<script id="snapshot" type="application/json">{data}</script>',
    )


class Pushes:
    """One snapshot per tick, encoded once and shared by every event stream."""

    def __init__(self, board: Board, max_clients: int) -> None:
        self.board, self.max_clients = board, max_clients
        self.clients = 0
        # per scope (None: every warehouse), the snapshot of this tick and when it was made
        self.made: dict[frozenset[str] | None, tuple[bytes, float]] = {}
        self.fresh = asyncio.Condition()

    def latest(self, scope: frozenset[str] | None = None) -> bytes:
        """The snapshot of this tick for an operator of ``scope``'s warehouses (made now if
        none is, or it is a tick old)."""
        now = asyncio.get_running_loop().time()
        data, at = self.made.get(scope, (b"", 0.0))
        if not data or now - at >= PUSH_EVERY_S:
            data = orjson.dumps(self.board.snapshot(now_ms(), scope))
            self.made[scope] = (data, now)
        return data

    async def tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.clients:
                for scope in list(self.made):
                    self.latest(scope)
                async with self.fresh:
                    self.fresh.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PUSH_EVERY_S)
        async with self.fresh:
            self.fresh.notify_all()  # the streams see the stop


PUSHES = web.AppKey("pushes", Pushes)


class Replays:
    """Where replay requests go: set once the Kafka producer is up (``follow_sessions``)."""

    write: Callable[[ReplayRequest], Awaitable[None]] | None = None


REPLAYS_WRITE = web.AppKey("replays_write", Replays)


def dashboard_app(
    runtime: Runtime[DashboardSettings], board: Board, access: Access
) -> web.Application:
    settings = runtime.settings
    app = ops_app(runtime) if not settings.ops_port else web.Application()
    app.middlewares.append(auth.middleware)
    app[auth.IDENTIFY] = access.identify
    app[auth.REFUSE] = refuse
    app[BOARD] = board
    app[SETTINGS] = settings
    app[CLOSING] = asyncio.Event()
    app[PUSHES] = Pushes(board, settings.dashboard_max_clients)
    app[REPLAYS_WRITE] = Replays()

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()  # ends the event streams, so shutdown does not wait on them

    app.on_shutdown.append(closing)
    for method, path, handler in (
        ("GET", "/", index),
        ("GET", "/api/snapshot", snapshot),
        ("GET", "/api/events", events),
        ("POST", "/api/failures/replay", replay),
    ):
        protect(app, app.router.add_route(method, path, handler), "operator")
    app.router.add_get("/login", access.login_form)
    app.router.add_post("/login", access.login)
    app.router.add_post("/logout", access.logout)
    return app


def refuse(request: web.Request, status: int, detail: str) -> web.StreamResponse:
    """The page answers a login form (401); the API answers JSON."""
    if request.path == "/" and status == 401:
        return login_page("Sign in to see the dashboard.", status=401)
    return auth.refusal(status, detail)


async def index(request: web.Request) -> web.Response:
    return web.Response(
        text=page(),
        content_type="text/html",
        headers={"Content-Security-Policy": "default-src 'self' 'unsafe-inline'"},
    )


def scope_of(request: web.Request) -> frozenset[str] | None:
    """The warehouses the calling operator sees (None: every one)."""
    return request[auth.PRINCIPAL].warehouses


async def snapshot(request: web.Request) -> web.Response:
    body = request.app[PUSHES].latest(scope_of(request))
    return web.Response(body=body, content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    pushes, closing = request.app[PUSHES], request.app[CLOSING]
    if pushes.clients >= pushes.max_clients:
        return web.json_response(
            {"error": "too many live pages", "detail": "PARCELFLOW_DASHBOARD_MAX_CLIENTS"},
            status=503,
            headers={"Retry-After": "10"},
        )
    scope = scope_of(request)
    pushes.clients += 1
    try:
        async with sse_response(request) as stream:  # aiohttp-sse: framing, heartbeats
            with contextlib.suppress(ConnectionResetError):
                while not closing.is_set() and stream.is_connected():
                    await stream.send(pushes.latest(scope).decode())
                    async with pushes.fresh:
                        await pushes.fresh.wait()
    finally:
        pushes.clients -= 1
    return stream


async def replay(request: web.Request) -> web.Response:
    """Ask the labeler to replay failures the page shows (of the operator's warehouses):
    a request per job on ``label-replays.v1``; the labeler checks it against its own
    failure records and sends the job again."""
    if request.content_type != "application/json":  # a form posted from elsewhere: no
        return web.json_response(
            {"error": "unsupported media type", "detail": "send application/json"}, status=415
        )
    try:
        body = orjson.loads(await request.read())
        wanted = None if body.get("all") is True else {str(j) for j in body["job_ids"]}
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return web.json_response(
            {"error": "invalid body", "fields": [{"field": "job_ids", "problem": "a list of ids"}]},
            status=400,
        )
    principal = request[auth.PRINCIPAL]
    write = request.app[REPLAYS_WRITE].write
    if write is None:
        return web.json_response(
            {"error": "unavailable", "detail": "not connected to Kafka yet"}, status=503
        )
    board, scope = request.app[BOARD], principal.warehouses
    chosen = [
        f
        for f in board.failures.values()
        if f.error_code not in DECISIONS
        and (wanted is None or f.job_id in wanted)
        and (scope is None or in_warehouses(f.job, scope))
    ]
    for failure in chosen:
        asked = ReplayRequest(
            event_id=derived_id("replay", failure.job_id, str(now_ms())),
            job_id=failure.job_id,
            order_id=failure.order_id,
            principal=principal.name[:64],
            requested_at_ms=now_ms(),
        )
        await write(asked)
        board.failures.pop(failure.job_id, None)
    log.info("failures_replay_asked", job_ids=[f.job_id for f in chosen], principal=principal.name)
    return web.json_response({"replayed": [f.job_id for f in chosen]})


async def follow(settings: DashboardSettings, board: Board, stop: asyncio.Event) -> None:
    """Fold every record of the dashboard's topics into the board, as they come."""
    names = Topics(settings)
    kinds = {names(spec): kind for spec, kind in READ.items()}
    consumer = make_reader(settings, *kinds)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for messages in batches.values():
                for m in messages:
                    board.take(kinds[m.topic], m.value, m.timestamp)
    finally:
        await consumer.stop()


LIMIT_SAMPLE = "parcelflow_labeler_concurrency_limit "


async def read_limits(settings: DashboardSettings, board: Board, stop: asyncio.Event) -> None:
    """Every LAG_EVERY_S, the adaptive limit of each labeler whose /metrics is listed in
    ``dashboard_metrics_urls``, summed: the label calls allowed in flight."""
    if not settings.dashboard_metrics_urls:
        await stop.wait()  # nothing to read: the limit plot stays empty, the page works
        return
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while not stop.is_set():
            total, seen = 0.0, False
            for url in settings.dashboard_metrics_urls:
                try:
                    async with http.get(url) as response:
                        text = await response.text()
                except (aiohttp.ClientError, TimeoutError):
                    continue  # a labeler restarting: the next read finds it
                for line in text.splitlines():
                    if line.startswith(LIMIT_SAMPLE):
                        total += float(line.split()[1])
                        seen = True
            if seen:
                board.limits.append((now_ms(), total))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_EVERY_S)


async def follow_sessions(
    settings: DashboardSettings,
    access: Access,
    stop: asyncio.Event,
    app: web.Application | None = None,
) -> None:
    """Sessions ended on any replica (``dashboard.sessions.v1``), read from the start and
    followed; this replica's logouts are written there, and (with ``app``) its operators'
    replay requests to ``label-replays.v1``."""
    names = Topics(settings)
    topic = names(SESSIONS)
    consumer = groupless_consumer(settings)
    producer = make_producer(settings)
    try:
        tps = await start_on_all(consumer, topic)
        await consumer.seek_to_beginning(*tps)
        await producer.start()

        async def write(ended: SessionEnded) -> None:
            await producer.send_and_wait(topic, encode(ended), key=ended.session_id.encode())

        async def ask(replay: ReplayRequest) -> None:
            key = replay.order_id.encode()
            await producer.send_and_wait(names(REPLAYS), encode(replay), key=key)

        access.ended.write = write
        if app is not None:
            app[REPLAYS_WRITE].write = ask
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=1_000)
            for messages in batches.values():
                for message in messages:
                    ended = decode(SessionEnded, message.value)
                    if isinstance(ended, SessionEnded):
                        access.ended.learn(ended, time.time())
    finally:
        access.ended.write = None
        await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)


async def measure_lag(settings: DashboardSettings, board: Board, stop: asyncio.Event) -> None:
    reader = LagReader(settings)
    await reader.start()
    try:
        while not stop.is_set():
            try:
                board.lag = await reader.read()
            except Exception as exc:  # noqa: BLE001 (the page says so; the next read may work)
                log.warning("lag_unavailable", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_EVERY_S)
    finally:
        await reader.stop()


async def run(settings: DashboardSettings, stop: asyncio.Event | None = None) -> None:
    board = Board()
    access = Access(settings, Principals.from_settings(settings))
    # without an ops port, the ops routes are on the dashboard's own port
    async with worker_runtime(settings, "dashboard", stop) as runtime:
        app = dashboard_app(runtime, board, access)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.dashboard_host, settings.dashboard_port)
        await site.start()
        tasks = [
            asyncio.create_task(app[PUSHES].tick(runtime.stop), name="pushes"),
            asyncio.create_task(follow(settings, board, runtime.stop), name="follow"),
            asyncio.create_task(measure_lag(settings, board, runtime.stop), name="lag"),
            asyncio.create_task(read_limits(settings, board, runtime.stop), name="limits"),
            asyncio.create_task(
                follow_sessions(settings, access, runtime.stop, app), name="sessions"
            ),
        ]
        log.info(
            "dashboard_ready",
            url=f"http://{settings.dashboard_host}:{settings.dashboard_port}/",
            access=access.says,
        )
        try:
            stopped = asyncio.create_task(runtime.stop.wait())
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
                if task is not stopped and not runtime.stop.is_set():  # never idle and alive
                    raise RuntimeError(f"the dashboard's {task.get_name()} task ended")
        finally:
            runtime.stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
        log.info("dashboard_stopped")
