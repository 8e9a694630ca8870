"""``parcelflow chaos``: the whole stack under demo traffic while a seeded schedule of
faults hits it, then the truth: every order against what the label provider recorded.

The schedule SIGKILLs and SIGSTOPs (then SIGCONTs) each worker and pauses the broker
(SIGSTOP then SIGCONT), at times drawn from the seed, so a failing run is replayed by its
seed. The stack's supervisor restarts what dies. After the traffic it waits until every
order has a label (or the drain time is up) and nothing is in flight, then checks each
order: exactly one label call, each parcel with exactly its box's item ids. The last line
is ``chaos: orders=N labels=L duplicate_calls=D lost=X repairs=R restarts=S``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from devstack.demo import Progress, send, watch
from devstack.demo_data import DemoOrder, make_demo
from devstack.stack import Stack
from devstack.verify import Verdict, verify
from schemas.topics import REPAIRS
from workers.kafka import Topics, make_reader
from workers.settings import Settings

TARGETS = ("receiver", "enricher", "planner", "labeler", "auditor")
Kind = Literal["kill", "stop", "pause"]


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the traffic started
    kind: Kind  # kill: SIGKILL a worker; stop: SIGSTOP it; pause: SIGSTOP the broker
    target: str  # a worker's name, or "broker"
    hold_s: float = 0.0  # how long a stopped process stays stopped

    def __str__(self) -> str:
        hold = f" for {self.hold_s:.1f}s" if self.kind != "kill" else ""
        return f"{self.at_s:6.1f}s {self.kind} {self.target}{hold}"


def schedule(seed: int, seconds: float) -> list[Fault]:
    """Each worker killed once and stopped once, and the broker paused once per 100 s
    (at least once), in a seeded order, spread over the first 80% of the run."""
    rng = random.Random(seed)
    picks: list[tuple[Kind, str]] = [("kill", t) for t in TARGETS] + [("stop", t) for t in TARGETS]
    picks += [("pause", "broker")] * max(1, int(seconds // 100))
    rng.shuffle(picks)
    slot = seconds * 0.7 / len(picks)
    faults = []
    for n, (kind, target) in enumerate(picks):
        at = seconds * 0.1 + n * slot + rng.uniform(0, slot / 2)
        hold = {"kill": 0.0, "stop": rng.uniform(2, 15), "pause": rng.uniform(3, 30)}[kind]
        faults.append(Fault(round(at, 1), kind, target, round(hold, 1)))
    return faults


class Injector(threading.Thread):
    """Carries out faults against a running stack, on time, by pid. Every process it
    stopped is continued when its hold is over, and when the injector is stopped."""

    def __init__(self, stack: Stack, faults: list[Fault], say: bool = True) -> None:
        super().__init__(name="chaos", daemon=True)
        self.stack, self.say = stack, say
        self.faults = sorted(faults, key=lambda f: f.at_s)
        self.done: list[str] = []  # what was carried out, for the report
        self._halt = threading.Event()
        self._held: dict[int, float] = {}  # pid -> when to SIGCONT it
        self._origin = time.monotonic()

    def run(self) -> None:
        pending = list(self.faults)
        try:
            while (pending or self._held) and not self._halt.is_set():
                now = time.monotonic() - self._origin
                for pid, until in list(self._held.items()):
                    if now >= until:
                        del self._held[pid]
                        signal_pid(pid, signal.SIGCONT)
                while pending and now >= pending[0].at_s:
                    self.inject(pending.pop(0), now)
                self._halt.wait(0.1)
        finally:
            for pid in self._held:
                signal_pid(pid, signal.SIGCONT)
            self._held.clear()

    def inject(self, fault: Fault, now: float) -> None:
        if fault.target == "broker":
            proc = self.stack.broker.proc if self.stack.broker is not None else None
            pid = proc.pid if proc is not None else None
        else:
            pid = self.stack.pid_of(fault.target)
        if pid is None or pid in self._held:
            self.report(f"{fault}: skipped, not running or already stopped")
            return
        if fault.kind == "kill":
            signal_pid(pid, signal.SIGKILL)
        else:
            signal_pid(pid, signal.SIGSTOP)
            self._held[pid] = now + fault.hold_s
        self.report(f"{fault} (pid {pid})")

    def report(self, line: str) -> None:
        self.done.append(line)
        if self.say:
            print(f"  chaos: {line}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it exited meanwhile: the supervisor has it


@dataclass
class ChaosResult:
    seed: int
    faults: list[str]
    verdict: Verdict
    repairs: int
    restarts: dict[str, int]
    run_dir: Path
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.problems

    def last_line(self) -> str:
        v = self.verdict
        return (
            f"chaos: orders={v.orders} labels={v.labeled} duplicate_calls={v.duplicate_calls} "
            f"lost={v.lost} repairs={self.repairs} restarts={sum(self.restarts.values())}"
        )


def run_chaos(
    run_dir: Path,
    *,
    seconds: float,
    seed: int,
    rate: float = 2.0,
    faults: list[Fault] | None = None,
    drain_s: float = 420.0,
    overrides: dict[str, str] | None = None,
    say: bool = True,
) -> ChaosResult:
    """Play ``rate`` orders a second for ``seconds`` under ``faults`` (the seed's schedule
    when None), drain, and judge."""
    faults = schedule(seed, seconds) if faults is None else faults
    orders = make_demo(
        max(1, int(seconds * rate)), seed=seed, run_id=seed % 100_000, now_s=int(time.time())
    )
    values = {"SIM_LABEL_LATENCY_MEDIAN_S": "0.5"} | (overrides or {})
    stack = Stack(run_dir, values)
    with stack.running(say=say):
        settings = stack.settings
        injector = Injector(stack, faults, say=say)
        injector.start()
        try:
            asyncio.run(play(orders, stack, seconds))
            injector.join(timeout=max(0.0, max((f.at_s + f.hold_s for f in faults), default=0)))
        finally:
            injector.stop()
        progress = Progress.of(orders)
        asyncio.run(watch(settings, progress, timeout_s=drain_s, out=say))
        settle(stack.simulator_url)
        requests = get_json(f"{stack.simulator_url}/_sim/shipium/requests")
        repairs = asyncio.run(count_repairs(settings))
        restarts = dict(stack.restarts)
    verdict = verify(orders, requests, progress.labels, set(progress.failures))
    return ChaosResult(seed, injector.done, verdict, repairs, restarts, run_dir, verdict.problems)


async def play(
    orders: list[DemoOrder],
    stack: Stack,
    seconds: float,
    stored: dict[str, float] | None = None,
) -> None:
    """Send the orders in waves, one a second, each wave on its own so that a wave held
    up by a dead receiver does not hold up the next. ``stored``: see ``send``."""
    waves = max(1, int(seconds))
    per_wave = -(-len(orders) // waves)
    started = time.monotonic()
    tasks = []
    for n in range(waves):
        wave = orders[n * per_wave : (n + 1) * per_wave]
        if wave:
            tasks.append(
                asyncio.create_task(
                    send(
                        wave,
                        stack.settings,
                        stack.receiver_url,
                        stack.simulator_url,
                        stack.token,
                        retry_for_s=600.0,
                        stored=stored,
                    )
                )
            )
        await asyncio.sleep(max(0.0, started + n + 1 - time.monotonic()))
    await asyncio.gather(*tasks)


def settle(simulator_url: str, quiet_s: float = 10.0, timeout_s: float = 120.0) -> None:
    """Wait until no label call is in flight and none has started for ``quiet_s``: a
    late duplicate call must be seen before the verdict."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        stats = get_json(f"{simulator_url}/_sim/stats")["shipium"]
        if stats["labels"] != last or stats["in_flight"]:
            last, since = stats["labels"], time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)


async def count_repairs(settings: Settings, idle_s: float = 3.0) -> int:
    """Orders the auditor asked the planner to repair (keys of ``planner.repairs.v1``)."""
    consumer = make_reader(settings, Topics(settings)(REPAIRS))
    await consumer.start()
    repaired: set[bytes] = set()
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                quiet_since = time.monotonic()
                repaired.update(m.key for m in messages if m.key is not None)
    finally:
        await consumer.stop()
    return len(repaired)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (local simulator)
        return orjson.loads(response.read())
