"""``parcelflow scale``: the stack under steady demo traffic while each worker is scaled
out and in as an autoscaler would, then the truth about every order and every shop.

The receiver, enricher, planner and labeler each start with one process, grow to
``peak`` (new processes started one at a time), each lose one process to SIGKILL (the
stack's supervisor starts it again), and shrink back to one (processes stopped by
SIGTERM, as a scale-down does). The receivers share one port (SO_REUSEPORT), as pods
share a Service. Several shops send orders, their TikTok access tokens expire every
``token_ttl_s`` and each refresh token works once, so refreshes happen while the
enrichers' partitions move. Afterwards every order is checked against the simulator's
record (exactly one label call, each parcel with its box's item ids), every shop's token
on tiktok.tokens.v1 against the one TikTok would accept now, and the consumer-group
rebalances are counted from the workers' logs. The last line is
``scale: orders=N labels=L duplicate_calls=D lost=X unauthorized_shops=U rebalances=R``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import secrets
import signal
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from devstack.chaos import get_json, play, settle, signal_pid
from devstack.demo import Progress, watch
from devstack.demo_data import make_demo
from devstack.stack import Stack, StackError
from devstack.verify import Verdict, verify
from workers.settings import Settings
from workers.tiktok.tokens import ShopAuth, shared_tokens

SCALED = ("receiver", "enricher", "planner", "labeler")
Kind = Literal["up", "down", "kill"]
JOINED = re.compile(rb"Joined group '([^']+)' \(generation (\d+)\)")


@dataclass(frozen=True)
class Step:
    at_s: float  # seconds after the traffic started
    kind: Kind  # up: start one more process; down: SIGTERM one; kill: SIGKILL one
    worker: str

    def __str__(self) -> str:
        return f"{self.at_s:6.1f}s {self.kind} {self.worker}"


def plan(seconds: float, peak: int, seed: int) -> list[Step]:
    """Every scaled worker goes 1 -> ``peak`` over 10-30% of the traffic time, loses one
    process to SIGKILL over 40-55%, and goes back to 1 over 65-85%; the order of the
    workers is drawn from the seed, and the scale-down takes them in the order they were
    killed, so that each worker's restarted process has as long as any to join its groups
    before a replica of it leaves (the embedded broker's group coordinator was seen to
    loop on a join when a member left while a restarted one was joining)."""
    rng = random.Random(seed)
    ups = [w for w in SCALED for _ in range(peak - 1)]
    rng.shuffle(ups)
    kills = list(SCALED)
    rng.shuffle(kills)
    downs = [w for w in kills for _ in range(peak - 1)]
    phases: list[tuple[Kind, float, float, list[str]]] = [
        ("up", 0.10, 0.30, ups),
        ("kill", 0.40, 0.55, kills),
        ("down", 0.65, 0.85, downs),
    ]
    steps = []
    for kind, start, end, workers in phases:
        slot = seconds * (end - start) / max(1, len(workers))
        steps += [
            Step(round(seconds * start + n * slot, 1), kind, worker)
            for n, worker in enumerate(workers)
        ]
    return steps


class Scaler(threading.Thread):
    """Carries out the steps on time. A scale-up waits for its process to be ready in a
    thread of its own, so that a slow start does not hold up the next step."""

    def __init__(self, stack: Stack, steps: list[Step], seed: int, say: bool = True) -> None:
        super().__init__(name="scaler", daemon=True)
        self.stack, self.steps, self.say = stack, sorted(steps, key=lambda s: s.at_s), say
        self.rng = random.Random(seed)
        self.done: list[str] = []
        self.problems: list[str] = []
        self.killed: dict[str, float] = {}  # worker -> when the kill step last killed one
        self.peak: dict[str, int] = {w: 1 for w in SCALED}  # most processes seen at once
        self._halt = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=len(SCALED) * 2, thread_name_prefix="scale")
        self._origin = time.monotonic()

    def run(self) -> None:
        for step in self.steps:
            if self._halt.wait(max(0.0, self._origin + step.at_s - time.monotonic())):
                break
            self._pool.submit(self.take, step)
        self._pool.shutdown(wait=True)

    def take(self, step: Step) -> None:
        started = time.monotonic()
        try:
            self.report(f"{step} {getattr(self, step.kind)(step.worker)}")
        except StackError as exc:
            killed = self.killed.get(step.worker, 0.0) >= started
            if step.kind == "up" and killed and "exited with code -9" in str(exc):
                # the schedule's own kill step took the replica while it was starting
                self.report(f"{step}: killed while starting by the kill step")
                return
            self.problems.append(f"{step}: {exc}")
            self.report(f"{step}: failed: {exc}")

    def up(self, worker: str) -> str:
        started = time.monotonic()
        process = self.stack.add_replica(worker)
        running = len(self.stack.replicas(worker))
        self.peak[worker] = max(self.peak[worker], running)
        return (
            f"{process.label} (pid {process.proc.pid}) ready after "
            f"{time.monotonic() - started:.1f}s; {running} running"
        )

    def kill(self, worker: str) -> str:
        alive = [p for p in self.stack.replicas(worker) if p.proc.poll() is None]
        if not alive:
            return "skipped: none running"
        process = self.rng.choice(alive)
        self.killed[worker] = time.monotonic()
        signal_pid(process.proc.pid, signal.SIGKILL)
        return f"{process.label} (pid {process.proc.pid})"

    def down(self, worker: str) -> str:
        replicas = self.stack.replicas(worker)
        if len(replicas) <= 1:
            return "skipped: one left"
        process = self.rng.choice(replicas)  # a scale-down picks any pod, the first too
        started = time.monotonic()
        self.stack.remove_replica(process)
        return (
            f"{process.label} (pid {process.proc.pid}) stopped after "
            f"{time.monotonic() - started:.1f}s; {len(self.stack.replicas(worker))} running"
        )

    def report(self, line: str) -> None:
        self.done.append(line)
        if self.say:
            print(f"  scale: {line}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class ScaleResult:
    verdict: Verdict
    unauthorized: list[str]  # shops whose tokens on the topic TikTok would not take now
    rebalances: int
    steps: list[str]
    peak: dict[str, int]
    restarts: dict[str, int]
    tiktok: dict[str, int]  # the simulator's token refresh counts
    run_dir: Path
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.unauthorized and not self.problems

    def last_line(self) -> str:
        v = self.verdict
        return (
            f"scale: orders={v.orders} labels={v.labeled} duplicate_calls={v.duplicate_calls} "
            f"lost={v.lost} unauthorized_shops={len(self.unauthorized)} "
            f"rebalances={self.rebalances}"
        )


def run_scale(
    run_dir: Path,
    *,
    seconds: float,
    seed: int,
    peak: int = 3,
    rate: float = 2.0,
    shops: int = 6,
    token_ttl_s: float = 30.0,
    drain_s: float = 300.0,
    overrides: dict[str, str] | None = None,
    say: bool = True,
) -> ScaleResult:
    """Play ``rate`` orders a second from ``shops`` shops for ``seconds`` while the plan
    for ``peak`` scales the workers, drain, and judge."""
    orders = make_demo(
        max(1, int(seconds * rate)),
        seed=seed,
        run_id=seed % 100_000,
        now_s=int(time.time()),
        shops=shops,
    )
    values = {
        "SIM_LABEL_LATENCY_MEDIAN_S": "0.5",
        "SIM_TIKTOK_TOKEN_TTL_S": f"{token_ttl_s:g}",
        "TIKTOK_REFRESH_BEFORE_S": f"{token_ttl_s / 3:g}",
    } | (overrides or {})
    stack = Stack(run_dir, values)
    with stack.running(say=say):
        settings = stack.settings
        asyncio.run(authorize(settings, stack.simulator_url, {o.shop_id for o in orders}))
        scaler = Scaler(stack, plan(seconds, peak, seed), seed, say=say)
        scaler.start()
        try:
            asyncio.run(play(orders, stack, seconds))
            scaler.join(timeout=seconds)
        finally:
            scaler.stop()
        progress = Progress.of(orders)
        asyncio.run(watch(settings, progress, timeout_s=drain_s, out=say))
        settle(stack.simulator_url)
        requests = get_json(f"{stack.simulator_url}/_sim/shipium/requests")
        unauthorized = asyncio.run(stale_shops(settings, stack.simulator_url))
        tiktok = get_json(f"{stack.simulator_url}/_sim/stats")["tiktok"]
        restarts = dict(stack.restarts)
    verdict = verify(orders, requests, progress.labels, set(progress.failures))
    return ScaleResult(
        verdict=verdict,
        unauthorized=unauthorized,
        rebalances=count_rebalances(run_dir),
        steps=scaler.done,
        peak=scaler.peak,
        restarts=restarts,
        tiktok={k: tiktok[k] for k in ("refreshes", "refused_refreshes")},
        run_dir=run_dir,
        problems=verdict.problems + scaler.problems,
    )


async def authorize(settings: Settings, simulator_url: str, shop_ids: set[str]) -> None:
    """Each demo shop authorized at the simulated TikTok with tokens of its own, which
    expire at TikTok's token TTL, and the same tokens put on tiktok.tokens.v1 (as
    ``parcelflow tokens set`` does)."""
    ttl = settings.sim_tiktok_token_ttl_s or 7 * 86400.0
    expires = int(time.time() + ttl)
    issued = {
        shop_id: ShopAuth(
            access_token=f"TTP_{secrets.token_urlsafe(24)}",
            refresh_token=f"TTP_{secrets.token_urlsafe(24)}",
            shop_cipher=f"ROW_{secrets.token_urlsafe(12)}",
            access_expires_at=expires,
        )
        for shop_id in sorted(shop_ids)
    }
    body = {
        auth.shop_cipher: auth.revealed() | {"access_expires_at": expires}
        for auth in issued.values()
    }
    request = urllib.request.Request(  # noqa: S310 (local simulator)
        f"{simulator_url}/_sim/tiktok/shops", data=orjson.dumps(body), method="PUT"
    )
    await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    async with shared_tokens(settings, "scale") as store:
        for shop_id, auth in issued.items():
            await store.put(shop_id, auth)


async def stale_shops(settings: Settings, simulator_url: str) -> list[str]:
    """Shops whose entry on tiktok.tokens.v1 is marked unauthorized, or holds a refresh
    token that is not the one TikTok would take now (a rotated token was lost)."""
    live = get_json(f"{simulator_url}/_sim/tiktok/shops")
    stale = []
    async with shared_tokens(settings, "scale") as store:
        for key, auth in sorted(store.shops.items()):
            shop = live.get(auth.shop_cipher)
            digest = hashlib.sha256(auth.refresh_token.get_secret_value().encode()).hexdigest()
            if (
                auth.unauthorized
                or shop is None
                or shop["revoked"]
                or shop["refresh_token_sha256"] != digest
            ):
                stale.append(key)
    return stale


def count_rebalances(run_dir: Path) -> int:
    """Generations of each consumer group beyond its first, as the members logged them
    ("Joined group 'G' (generation N)"): one per rebalance of the group."""
    generations: dict[bytes, set[int]] = defaultdict(set)
    for path in run_dir.glob("*.log"):
        for group, generation in JOINED.findall(path.read_bytes()):
            generations[group].add(int(generation))
    return sum(len(seen) - 1 for seen in generations.values())
