"""Adaptive concurrency benchmark: does the labeler find the label provider's capacity?

    make bench-adaptive            (or: .venv/bin/python -m bench.adaptive --help)

The simulator's Shipium answers label calls in ``--latency`` s (1 s) while at most its
capacity of calls run at once; above it latency grows with the crowd, above twice it
calls get 429 with Retry-After. Its capacity is 24, then drops to 8, then rises to 48,
each phase ``--phase-s`` long. A backlog of label jobs waits in Kafka. The same run is
made by the labeler with the adaptive limiter (PARCELFLOW_LABELER_ADAPTIVE, at most 64),
with the fixed bound of 64, and by ``--replicas`` (3) adaptive labelers sharing the one
provider, each as its own process. Per phase it prints labels/s as a ratio of what the
capacity allows (capacity / latency), the share of calls answered 429, the seconds the
limit (the replicas' summed limit) took to settle within 10% of the new capacity, and
for the replicas each one's labels/s and the fairness (the slowest over the fastest,
after the phase's first 10 s). Then starts: one labeler learns a capacity of 48 for
``--learn-s``, two more start (a scale-up), and later one new labeler replaces all three
(a restart); labels/s in the first ``--measure-s`` after each, with the replicas sharing
what they learned (PARCELFLOW_LABELER_WARM_START) and without. Lines:
``adaptive: throughput_ratio=R rejected_share=S settle_s=T`` (R the worst phase, S over
the run, T the worst change; goals R >= 0.85, S <= 0.02, T <= 30),
``adaptive-replicas: throughput_ratio=R rejected_share=S fairness=F`` (goals R >= 0.85,
S <= 0.02, F >= 0.5) and ``warm-start: scale_up_ratio=U restart_ratio=W`` (warm labels/s
over cold). ``--runs`` picks some. Everything started is stopped, by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.labeler import bench_stack, fill, start_labeler
from devstack.broker.embedded import free_port
from devstack.simulator.app import Simulator
from devstack.stack import terminate
from workers.settings import Settings
from workers.topics import ensure_topics

CAPACITIES = (24, 8, 48)


@dataclass
class Run:
    name: str
    limits: list[tuple[float, float]] = field(default_factory=list)  # (s, sum of the limits)
    done: list[float] = field(default_factory=list)  # (s) each label call answered 200
    calls: int = 0
    rejected: int = 0
    counts: list[tuple[float, int, int]] = field(default_factory=list)  # (s, calls, 429s)
    # per replica: (s, labels it made so far), from its metrics
    made: list[list[tuple[float, float]]] = field(default_factory=list)


def metric_of(url: str, series: str) -> float | None:
    """The value of one series (``name`` or ``name{labels}``) on a metrics page."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (local)
            for line in response.read().decode().splitlines():
                if line.startswith(f"{series} "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def limit_of(url: str) -> float | None:
    return metric_of(url, "parcelflow_labeler_concurrency_limit")


def made_of(url: str) -> float | None:
    return metric_of(url, 'parcelflow_labeler_jobs_ended_total{outcome="labeled"}')


async def one(
    base: Settings,
    sim: Simulator,
    adaptive: bool,
    args: argparse.Namespace,
    tmp: Path,
    replicas: int = 1,
) -> Run:
    name = "adaptive" if adaptive else f"fixed {args.max_in_flight}"
    run = Run(name if replicas == 1 else f"{name}, {replicas} replicas")
    ops = [free_port() for _ in range(replicas)]
    settings = base.model_copy(
        update={
            "topic_namespace": f"ba{uuid.uuid4().hex[:6]}.",
            "topic_partitions": max(base.topic_partitions, 2 * replicas),
            "labeler_max_in_flight": args.max_in_flight,
            "labeler_adaptive": adaptive,
            "shipium_timeout_s": 30.0,
        }
    )
    await ensure_topics(settings)
    total = int(sum(c / args.latency for c in CAPACITIES) * args.phase_s * 1.3) + 200
    await fill(settings, total)
    state = sim.shipium
    state.capacity = CAPACITIES[0]
    state.capacity_schedule = [(args.phase_s * n, c) for n, c in enumerate(CAPACITIES)]
    state.calls = state.overloaded = 0
    before = len(state.requests)
    procs = [
        start_labeler(
            settings.model_copy(update={"ops_port": port}),
            tmp / f"labeler-{'a' if adaptive else 'f'}{replicas}-{n}.log",
        )
        for n, port in enumerate(ops)
    ]
    urls = [f"http://127.0.0.1:{port}/metrics" for port in ops]
    run.made = [[] for _ in urls]
    try:
        for url, proc in zip(urls, procs, strict=True):
            while limit_of(url) is None:  # wait until it serves
                if proc.poll() is not None:
                    raise RuntimeError("a labeler exited: see its log")
                await asyncio.sleep(0.1)
        state.started = time.monotonic()
        end = state.started + args.phase_s * len(CAPACITIES)
        seen = before
        while time.monotonic() < end:
            now = time.monotonic() - state.started
            limits = await asyncio.gather(*(asyncio.to_thread(limit_of, u) for u in urls))
            if all(limit is not None for limit in limits):
                run.limits.append((now, sum(limit or 0.0 for limit in limits)))
            made = await asyncio.gather(*(asyncio.to_thread(made_of, u) for u in urls))
            for samples, count in zip(run.made, made, strict=True):
                samples.append((now, count or 0.0))
            run.done += [now] * (len(state.requests) - seen)
            run.counts.append((now, state.calls, state.overloaded))
            seen = len(state.requests)
            await asyncio.sleep(0.25)
        run.calls, run.rejected = state.calls, state.overloaded
    finally:
        for proc in procs:
            terminate(proc)
    return run


def made_in(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """Labels one replica made from ``start`` to ``end`` (its counter's growth)."""
    inside = [count for t, count in samples if start <= t < end]
    before = [count for t, count in samples if t < start]
    return (inside[-1] if inside else 0.0) - (before[-1] if before else 0.0)


@dataclass
class Start:
    """Labels/s in the first ``measure_s`` after a scale-up and after a restart."""

    warm: bool
    scale_up: float = 0.0  # all replicas together, 1 -> 3
    scale_up_429: float = 0.0  # share of their calls answered 429
    restart: float = 0.0  # the one replica that replaced the three
    restart_limit: list[float] = field(default_factory=list)  # its limit every 5 s


async def starts(
    base: Settings, sim: Simulator, warm: bool, args: argparse.Namespace, tmp: Path
) -> Start:
    """One labeler learns a steady capacity for ``learn_s``; two more start (a scale-up);
    ``measure_s`` later all three stop and one new one starts (a restart, a deploy)."""
    result = Start(warm)
    settings = base.model_copy(
        update={
            "topic_namespace": f"bw{uuid.uuid4().hex[:6]}.",
            "topic_partitions": 6,
            "labeler_max_in_flight": args.max_in_flight,
            "labeler_warm_start": warm,
            "shipium_timeout_s": 30.0,
        }
    )
    await ensure_topics(settings)
    capacity = CAPACITIES[-1]
    await fill(settings, int(capacity / args.latency * (args.learn_s + 3 * args.measure_s) * 1.3))
    state = sim.shipium
    state.capacity, state.capacity_schedule = capacity, []
    state.started = time.monotonic()
    name = "w" if warm else "c"
    procs: list[subprocess.Popen[bytes]] = []

    async def start(n: int) -> str:
        port = free_port()
        log = tmp / f"labeler-{name}{n}.log"
        procs.append(start_labeler(settings.model_copy(update={"ops_port": port}), log))
        url = f"http://127.0.0.1:{port}/metrics"
        while limit_of(url) is None:
            if procs[-1].poll() is not None:
                raise RuntimeError(f"a labeler exited: see {log}")
            await asyncio.sleep(0.1)
        return url

    async def made_during(seconds: float, url: str | None = None) -> tuple[float, float]:
        """(labels/s, share of calls answered 429) over the next ``seconds``."""
        done, calls, refused = len(state.requests), state.calls, state.overloaded
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(5.0)
            if url is not None:
                limit = await asyncio.to_thread(limit_of, url)
                result.restart_limit.append(limit or 0.0)
        calls, refused = state.calls - calls, state.overloaded - refused
        return (len(state.requests) - done) / seconds, refused / calls if calls else 0.0

    try:
        await start(0)
        await asyncio.sleep(args.learn_s)
        procs.extend(  # started together, as an autoscaler adds them
            start_labeler(
                settings.model_copy(update={"ops_port": free_port()}),
                tmp / f"labeler-{name}{n}.log",
            )
            for n in (1, 2)
        )
        result.scale_up, result.scale_up_429 = await made_during(args.measure_s)
        for proc in procs:
            terminate(proc)
        url = await start(3)
        result.restart, _ = await made_during(args.measure_s, url)
    finally:
        for proc in procs:
            terminate(proc)
    return result


def totals_before(run: Run, t: float) -> tuple[int, int]:
    """(calls, 429s) the simulator had counted at the last sample before ``t``, so that
    the phases' counts add up to the run's."""
    before = [(calls, refused) for s, calls, refused in run.counts if s < t]
    return before[-1] if before else (0, 0)


def fairness(run: Run, start: float, end: float) -> float:
    """The slowest replica's labels over the fastest's, from ``start`` to ``end``."""
    made = [made_in(samples, start, end) for samples in run.made]
    return min(made) / max(made) if len(made) > 1 and max(made) > 0 else 1.0


def phase_rows(run: Run, args: argparse.Namespace) -> tuple[list[str], float, float, float]:
    rows, worst_ratio, worst_settle, worst_fair = [], 10.0, 0.0, 1.0
    for n, capacity in enumerate(CAPACITIES):
        start, end = n * args.phase_s, (n + 1) * args.phase_s
        labels = sum(1 for t in run.done if start <= t < end)
        ratio = labels / args.phase_s / (capacity / args.latency)
        calls_before, refused_before = totals_before(run, start)
        calls_by, refused_by = totals_before(run, end)
        calls, refused = calls_by - calls_before, refused_by - refused_before
        worst_ratio = min(worst_ratio, ratio)
        settle = settled_after(run.limits, start, end, capacity)
        shown = f"{settle:5.1f} s" if settle is not None else "never"
        # 10% of a small capacity is less than one call: a limit that still probes (it
        # must, to find a rise) leaves that band. Shown too, not counted in the last line.
        loose = settled_after(run.limits, start, end, capacity, max(0.1 * capacity, 1.0))
        shown += f" (within 10% or one call: {f'{loose:.1f} s' if loose is not None else 'never'})"
        worst_settle = max(worst_settle, settle if settle is not None else args.phase_s)
        row = (
            f"  capacity {capacity:>2}: {labels / args.phase_s:5.1f} labels/s, ratio {ratio:4.2f}, "
            f"429 on {refused / calls if calls else 0:.1%} of calls, "
        )
        if len(run.made) > 1:
            # the first 10 s of a phase are the limiters finding it: fairness after that
            fair = fairness(run, start + min(10.0, args.phase_s / 3), end)
            worst_fair = min(worst_fair, fair)
            each = " / ".join(f"{made_in(m, start, end) / args.phase_s:.1f}" for m in run.made)
            row += f"per replica {each} labels/s, fairness {fair:.2f}, summed limit "
        rows.append(row + f"settled within 10% after {shown}")
        every_2s = {int((t - start) // 2): v for t, v in run.limits if start <= t < end}
        rows.append(
            "    limit every 2 s: " + " ".join(f"{v:g}" for _, v in sorted(every_2s.items()))
        )
    return rows, worst_ratio, worst_settle, worst_fair


def settled_after(
    limits: list[tuple[float, float]], start: float, end: float, cap: int, band: float = 0.0
) -> float | None:
    """Seconds from ``start`` until the limit stayed within ``band`` (10% of ``cap``
    unless given) of ``cap`` to ``end``."""
    inside = [(t, v) for t, v in limits if start <= t < end]
    band = band or 0.1 * cap
    settled = None
    for t, value in inside:
        if abs(value - cap) <= band:
            if settled is None:
                settled = t - start
        else:
            settled = None
    return settled


async def main(args: argparse.Namespace) -> None:
    async with bench_stack(
        "pf-adaptive-",
        kafka_fetch_max_wait_ms=20,
        sim_label_latency_median_s=args.latency,
        sim_label_latency_sigma=0.0,
        sim_label_tail_probability=0.0,
    ) as (base, sim, tmp):
        wanted = set(args.runs.split(","))
        runs = [
            await one(base, sim, adaptive, args, tmp)
            for adaptive, name in ((True, "adaptive"), (False, "fixed"))
            if name in wanted
        ]
        if args.replicas > 1 and "replicas" in wanted:
            runs.append(await one(base, sim, True, args, tmp, args.replicas))
        started = []
        if "starts" in wanted:
            started = [await starts(base, sim, warm, args, tmp) for warm in (True, False)]
    print(
        f"label calls of {args.latency:g} s; capacity {' -> '.join(map(str, CAPACITIES))}, "
        f"{args.phase_s:g} s each; 2-core machine"
    )
    lines: list[str] = []
    for run in runs:
        rows, ratio, settle, fair = phase_rows(run, args)
        share = run.rejected / run.calls if run.calls else 0.0
        print(f"{run.name}: {run.calls} calls, {share:.1%} answered 429")
        print("\n".join(rows))
        if run.name == "adaptive":
            lines.insert(
                0,
                f"adaptive: throughput_ratio={ratio:.2f} rejected_share={share:.3f} "
                f"settle_s={settle:.0f}",
            )
        elif len(run.made) > 1:
            lines.append(
                f"adaptive-replicas: throughput_ratio={ratio:.2f} rejected_share={share:.3f} "
                f"fairness={fair:.2f}"
            )
    if started:
        print_starts(started, args)
    print("\n".join(lines))


def print_starts(started: list[Start], args: argparse.Namespace) -> None:
    capacity = CAPACITIES[-1] / args.latency
    print(
        f"starting replicas (capacity {capacity:g} labels/s; one labeler learns it for "
        f"{args.learn_s:g} s, then two more start; later one replaces all three), labels/s in "
        f"the first {args.measure_s:g} s:"
    )
    for one_start in started:
        print(
            f"  {'warm' if one_start.warm else 'cold'}: scale-up 1 -> 3 "
            f"{one_start.scale_up:5.1f} ({one_start.scale_up / capacity:.2f} of capacity, "
            f"429 on {one_start.scale_up_429:.1%}), restart {one_start.restart:5.1f} "
            f"({one_start.restart / capacity:.2f}); restarted limit every 5 s: "
            + " ".join(f"{v:g}" for v in one_start.restart_limit)
        )
    warm, cold = started
    print(
        f"warm-start: scale_up_ratio={warm.scale_up / cold.scale_up:.2f} "
        f"restart_ratio={warm.restart / cold.restart:.2f} (warm labels/s over cold, first "
        f"{args.measure_s:g} s)"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latency", type=float, default=1.0, help="label call seconds (1.0)")
    p.add_argument("--phase-s", type=float, default=60.0, help="seconds per capacity (60)")
    p.add_argument("--max-in-flight", type=int, default=64, help="the bound, fixed or max (64)")
    p.add_argument(
        "--replicas", type=int, default=3, help="labelers sharing the provider (3; 1: no run)"
    )
    p.add_argument(
        "--runs",
        default="adaptive,fixed,replicas,starts",
        help="which runs (adaptive,fixed,replicas,starts: all)",
    )
    p.add_argument("--learn-s", type=float, default=40.0, help="before the scale-up (40)")
    p.add_argument("--measure-s", type=float, default=30.0, help="after each start (30)")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except KeyboardInterrupt:
        sys.exit(130)
