"""Latency benchmark: the seconds a packer waits, through the whole pipeline.

    make bench-latency            (or: .venv/bin/python -m bench.latency --help)

The devstack (embedded broker, simulator, every worker as its own process) with the label
simulator's latency set to 0, so that parcelflow's own delays show. Demo orders arrive
ahead of their boxes (``--lead`` seconds, as in the demo: the order is paid, then
packed); boxes are closed at a steady ``--rate`` per second. After ``--warmup`` seconds,
``--seconds`` of boxes are measured:

- box closed (the receiver's 202) -> its parcel plan on parcel-plans.v1;
- the order's last box closed -> its label job on label-jobs.v1;
- the order's last box closed -> its label stored (labels.v1);
- order webhook answered (200) -> the order event on orders.v1.

Times on the output side are the records' timestamps (set by the producing worker, on
this machine's clock). One line per measure:
``latency box->job p50_ms=… p95_ms=… p99_ms=… max_ms=…``.

Against the broker's own floor (``bench.bare``, a bare pipeline of the same shape on the
same broker and client settings): ``latency-vs-broker`` before parcelflow's minute,
``-after`` it, ``-grown`` on topics first filled to parcelflow's fullest partition, and
``-loaded`` with a light bare pipeline (``--probe-rate``) run at the same time as
parcelflow, on the same cores. Then where the CPU went (``cpu of a core: …``, each
process) and the planner's batches. Then the rate doubles, phase
after phase, until box -> job p99 passes ``--goal-ms`` or the pipeline falls behind, and
the knee is printed. Everything started is stopped, by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp
import orjson
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.bare import bare_latencies
from bench.cpu import cpu_by_window, cpu_line, cpu_shares
from devstack.demo_data import DemoOrder, make_demo, webhook
from devstack.stack import Stack
from schemas.codec import encode
from schemas.topics import BOXES, LABEL_JOBS, LABELS, ORDERS, PLANS
from workers.kafka import Topics, groupless_consumer, make_reader
from workers.settings import Settings
from workers.tiktok.signing import webhook_signature

MEASURES = ("box->plan", "box->job", "box->label", "order->event")
# LABEL_FILES: the label files go to tmpfs by default. On this machine's ext4 (a VM disk
# that tests fill and empty all day) creating a file took about 1 ms of kernel CPU (perf:
# ext4_create -> find_inode_bit -> recently_deleted); three files per label at 133
# labels/s made the labeler spend 30% of a core in the kernel, and the pipeline fell
# behind. That measures the disk, not parcelflow. --label-dir puts them elsewhere.
SHM = "/dev/shm"  # noqa: S108 (tmpfs; a private TemporaryDirectory is made in it)


@dataclass
class Phase:
    rate: float
    box_at: dict[str, float] = field(default_factory=dict)  # box id -> 202 (ms)
    last_box_at: dict[str, float] = field(default_factory=dict)  # order id -> last 202 (ms)
    order_at: dict[str, float] = field(default_factory=dict)  # order id -> webhook 200 (ms)
    measured: set[str] = field(default_factory=set)  # orders whose boxes are in the window
    box_order: dict[str, str] = field(default_factory=dict)  # box id -> order id
    late_s: float = 0.0  # how far the sender fell behind its schedule, at most
    broker_cpu: list[float] = field(default_factory=list)  # share of a core, per 10 s
    cpu: dict[str, float] = field(default_factory=dict)  # process -> share of a core, measured
    probe: list[float] = field(default_factory=list)  # the bare pipeline meanwhile, box -> job


@dataclass
class Seen:
    plan: dict[str, float] = field(default_factory=dict)  # box id -> record time (ms)
    job: dict[str, float] = field(default_factory=dict)  # order id -> record time
    label: dict[str, float] = field(default_factory=dict)
    order: dict[str, float] = field(default_factory=dict)


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "p50_ms=n/a p95_ms=n/a p99_ms=n/a max_ms=n/a"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    p50, p95, p99 = cuts[49], cuts[94], cuts[98]
    return f"p50_ms={p50:.0f} p95_ms={p95:.0f} p99_ms={p99:.0f} max_ms={max(values):.0f}"


def p99_by_window(phase: Phase, seen: Seen, window_s: float = 10.0) -> str:
    """box -> job p99 of each ``window_s`` of the measured boxes, in order: a tail spread
    over the run or gathered in a few bursts (a pause somewhere) look alike in one p99."""
    windows: dict[int, list[float]] = {}
    closed = {o: phase.last_box_at[o] for o in phase.measured if o in phase.last_box_at}
    first = min(closed.values(), default=0.0)
    for order_id, last in closed.items():
        if order_id in seen.job:
            key = int((last - first) / (window_s * 1000))
            windows.setdefault(key, []).append(max(0.0, seen.job[order_id] - last))
    p99s = []
    for key in sorted(windows):
        values = windows[key]
        cut = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else 0
        p99s.append(f"{cut:.0f}")
    return " ".join(p99s)


async def planner_batches(stack: Stack) -> str:
    """The planner's batches so far, from its metrics: how many, events in each and the
    seconds to join one and have the broker ack it (mean)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(stack.metrics_urls["planner"]) as response,
    ):
        text = await response.text()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("parcelflow_planner_batch_"):
                sums[sample.name] = sample.value
    batches = sums.get("parcelflow_planner_batch_seconds_count", 0)
    events = sums.get("parcelflow_planner_batch_events_sum", 0) / max(batches, 1)
    mean_ms = sums.get("parcelflow_planner_batch_seconds_sum", 0) / max(batches, 1) * 1000
    return f"planner batches={batches:.0f} events_mean={events:.1f} seconds_mean_ms={mean_ms:.1f}"


def stack_pids(stack: Stack) -> dict[str, int]:
    """The broker, every worker and the simulator, and this benchmark's own process."""
    pids = {p.label: p.proc.pid for p in stack.processes}
    if stack.broker is not None and stack.broker.proc is not None:
        pids["broker"] = stack.broker.proc.pid
    pids["bench"] = os.getpid()
    return pids


def now_ms() -> float:
    return time.time() * 1000


async def follow(settings: Settings, seen: Seen, stop: asyncio.Event) -> None:
    names = Topics(settings)
    consumer = make_reader(
        settings,
        names(PLANS),
        names(LABEL_JOBS),
        names(LABELS),
        names(ORDERS),
    )
    await consumer.start()
    try:
        while not stop.is_set():
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for m in messages:
                    value = orjson.loads(m.value)
                    if m.topic == names(PLANS):
                        seen.plan.setdefault(value["box_id"], m.timestamp)
                    elif m.topic == names(LABEL_JOBS):
                        if value.get("kind", "create") == "create":
                            seen.job.setdefault(value["order_id"], m.timestamp)
                    elif m.topic == names(LABELS):
                        seen.label.setdefault(value["order_id"], m.timestamp)
                    else:
                        seen.order.setdefault(value["order_id"], m.timestamp)
    finally:
        await consumer.stop()


async def play(
    stack: Stack, orders: list[DemoOrder], phase: Phase, lead_s: float, window: tuple[float, float]
) -> None:
    """Boxes at ``phase.rate`` per second, each order's webhook ``lead_s`` before its first
    box; orders whose boxes all close inside ``window`` (seconds from start) are measured."""
    settings = stack.settings
    secret = settings.tiktok_app_secret.get_secret_value()
    bearer = {
        "Authorization": f"Bearer {stack.token}",
        "content-type": "application/json",
    }
    schedule: list[tuple[float, str, DemoOrder, int]] = []  # (at s, kind, order, box index)
    t = lead_s
    for order in orders:
        schedule.append((t - lead_s, "order", order, -1))
        for n in range(len(order.boxes)):
            schedule.append((t, "box", order, n))
            t += 1 / phase.rate
    schedule.sort(key=lambda x: x[0])
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as http:
        body = orjson.dumps([o.tiktok for o in orders])
        async with http.put(f"{stack.simulator_url}/_sim/tiktok/orders", data=body) as r:
            r.raise_for_status()

        async def send(at: float, kind: str, order: DemoOrder, n: int) -> None:
            if kind == "order":
                raw = orjson.dumps(webhook(order, int(time.time())))
                headers = {"Authorization": webhook_signature(settings.tiktok_app_key, secret, raw)}
                url = f"{stack.receiver_url}/webhooks/tiktok"
            else:
                raw, headers, url = encode(order.boxes[n]), bearer, f"{stack.receiver_url}/v1/boxes"
            async with http.post(url, data=raw, headers=headers) as response:
                if response.status not in (200, 202):
                    raise RuntimeError(f"{url} answered {response.status}")
            done = now_ms()
            if kind == "order":
                phase.order_at[order.order_id] = done
                return
            phase.box_at[order.boxes[n].box_id] = done
            phase.box_order[order.boxes[n].box_id] = order.order_id
            phase.last_box_at[order.order_id] = max(phase.last_box_at.get(order.order_id, 0), done)
            if window[0] <= at <= window[1]:
                phase.measured.add(order.order_id)

        started = time.monotonic()
        for at, kind, order, n in schedule:
            delay = started + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                phase.late_s = max(phase.late_s, -delay)
            tasks.append(asyncio.create_task(send(at, kind, order, n)))
        await asyncio.gather(*tasks)


def report(phase: Phase, seen: Seen) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {m: [] for m in MEASURES}
    for order_id in phase.measured:
        last = phase.last_box_at.get(order_id)
        if last is None:
            continue
        for measure, got in (("box->job", seen.job), ("box->label", seen.label)):
            if order_id in got:
                values[measure].append(max(0.0, got[order_id] - last))
        if order_id in phase.order_at and order_id in seen.order:
            values["order->event"].append(max(0.0, seen.order[order_id] - phase.order_at[order_id]))
    measured_boxes = {b for b, order_id in phase.box_order.items() if order_id in phase.measured}
    for box_id in measured_boxes:
        if box_id in seen.plan:
            values["box->plan"].append(max(0.0, seen.plan[box_id] - phase.box_at[box_id]))
    return values


async def run_phase(
    stack: Stack, seen: Seen, rate: float, args: argparse.Namespace, run: int
) -> tuple[Phase, dict[str, list[float]], int]:
    total_s = args.warmup + args.seconds
    boxes_wanted = int(rate * total_s)
    orders = make_demo(int(boxes_wanted / 1.5) + 10, seed=run, run_id=run, now_s=int(time.time()))
    count, picked = 0, []
    for order in orders:
        if count >= boxes_wanted:
            break
        picked.append(order)
        count += len(order.boxes)
    phase = Phase(rate)
    assert stack.broker is not None and stack.broker.proc is not None
    samplers = [
        asyncio.create_task(
            cpu_by_window(stack.broker.proc.pid, args.lead + args.warmup, phase.broker_cpu)
        ),
        asyncio.create_task(cpu_shares(stack_pids(stack), phase.cpu, args.lead + args.warmup)),
    ]
    probe = None
    if args.probe_rate > 0:  # the broker's floor measured at the same time, lightly
        probe = asyncio.create_task(
            bare_latencies(stack.settings, args.probe_rate, args.seconds, args.warmup, sample_box())
        )
    await play(stack, picked, phase, args.lead, (args.lead + args.warmup, args.lead + total_s))
    if probe is not None:
        phase.probe = await probe
    for sampler in samplers:
        sampler.cancel()
    await asyncio.gather(*samplers, return_exceptions=True)
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline:  # until every measured order has its label
        if all(o in seen.label for o in phase.measured):
            break
        await asyncio.sleep(0.5)
    missing = sum(1 for o in phase.measured if o not in seen.label)
    return phase, report(phase, seen), missing


async def main(args: argparse.Namespace) -> None:
    overrides = {
        "SIM_LABEL_LATENCY_MEDIAN_S": "0",
        "SIM_LABEL_PER_PARCEL_S": "0",
        "SIM_LABEL_TAIL_PROBABILITY": "0",
        "SIM_LABEL_RENDER": "false",
        "LABELER_MAX_IN_FLIGHT": "256",
        "LABELER_ADAPTIVE": os.environ.get("BENCH_ADAPTIVE", "true"),
    }
    with (
        TemporaryDirectory(prefix="pf-latency-") as tmp,
        TemporaryDirectory(prefix="pf-latency-labels-", dir=args.label_dir) as labels,
    ):
        overrides["LABEL_DIR"] = labels
        stack = Stack(Path(tmp), overrides)
        with stack.running(say=False):
            seen, stop = Seen(), asyncio.Event()
            follower = asyncio.create_task(follow(stack.settings, seen, stop))
            print(
                f"whole pipeline, 2-core machine, label simulator latency 0; "
                f"{args.warmup:g} s warm-up, {args.seconds:g} s measured per rate; "
                f"label files in {labels}"
            )
            floor = await broker_floor(stack, args)
            rate, knee, last_good = args.rate, None, None
            for run in range(1, args.phases + 1):
                phase, values, missing = await run_phase(stack, seen, rate, args, 1000 + run)
                if run == 1:
                    print(versus_broker(values["box->job"], floor), flush=True)
                    # the broker is older now (parcelflow's records in it): the floor again
                    after = await broker_floor(stack, args)
                    line = versus_broker(values["box->job"], after)
                    print(line.replace("latency-vs-broker", "latency-vs-broker-after"), flush=True)
                    # and on topics as old as parcelflow's busiest partition
                    grown = await busiest_partition(stack.settings)
                    aged = await broker_floor(stack, args, grown)
                    line = versus_broker(values["box->job"], aged)
                    print(line.replace("latency-vs-broker", "latency-vs-broker-grown"), flush=True)
                if phase.probe:
                    print(
                        f"bare pipeline at {args.probe_rate:g} boxes/s on the same broker, "
                        "at the same time as parcelflow (its own topics):"
                    )
                    print(f"latency probe box->job {percentiles(phase.probe)}")
                    line = versus_broker(values["box->job"], phase.probe)
                    print(line.replace("latency-vs-broker", "latency-vs-broker-loaded"))
                print(f"rate {rate:g} boxes/s: {len(phase.measured)} orders measured", end="")
                print(f", sender late by {phase.late_s:.2f} s at most, {missing} without label")
                for measure in MEASURES:
                    print(f"latency {measure} {percentiles(values[measure])}", flush=True)
                print(f"box->job p99_ms by 10 s: {p99_by_window(phase, seen)}")
                shares = " ".join(f"{share:.0%}" for share in phase.broker_cpu)
                print(f"broker CPU of a core by 10 s: {shares}")
                print(cpu_line(phase.cpu))
                print(await planner_batches(stack), flush=True)
                p99 = percentiles(values["box->job"]).split()[2].split("=")[1]
                behind = missing > 0 or phase.late_s > 1.0
                if behind or p99 == "n/a" or float(p99) > args.goal_ms:
                    knee = rate
                    break
                last_good = rate
                rate *= 2
            stop.set()
            await follower
    if knee is None:
        print(
            f"knee: not reached; box->job p99 within {args.goal_ms:g} ms "
            f"up to {last_good:g} boxes/s"
        )
    else:
        print(
            f"knee: box->job p99 over {args.goal_ms:g} ms (or behind) at {knee:g} boxes/s; "
            f"last rate within it: {last_good if last_good is not None else 'none'} boxes/s"
        )


async def busiest_partition(settings: Settings) -> int:
    """Records in the fullest partition of parcelflow's pipeline topics now (at least its
    record batches: the bare topics filled to it are at least as old)."""
    names = Topics(settings)
    reader = groupless_consumer(settings)
    await reader.start()
    try:
        await reader.topics()  # the metadata of every topic
        tps = [
            TopicPartition(names(t), p)
            for t in (BOXES, ORDERS, PLANS, LABEL_JOBS, LABELS)
            for p in reader.partitions_for_topic(names(t)) or ()
        ]
        ends = await reader.end_offsets(tps)
    finally:
        await reader.stop()
    return max(ends.values(), default=0)


async def broker_floor(stack: Stack, args: argparse.Namespace, grown: int = 0) -> list[float]:
    """The bare pipeline (``bench.bare``) at the first rate, on this stack's broker and
    client settings: box -> job milliseconds; on topics with ``grown`` batches per partition
    first."""
    body = sample_box()
    cpu: dict[str, float] = {}
    pids = {k: v for k, v in stack_pids(stack).items() if k in ("broker", "bench")}
    floor = await bare_latencies(
        stack.settings, args.rate, args.seconds, args.warmup, body, grown, (pids, cpu)
    )
    aged = f", topics filled with {grown} batches per partition first" if grown else ""
    print(f"bare pipeline at {args.rate:g} boxes/s, same broker and client settings{aged}:")
    print(f"latency bare box->job {percentiles(floor)}")
    print(f"bare {cpu_line(cpu)}", flush=True)
    return floor


def sample_box() -> bytes:
    """One demo box, encoded: what the bare pipeline posts."""
    return encode(make_demo(1, seed=1, run_id=1, now_s=int(time.time()))[0].boxes[0])


def versus_broker(parcelflow: list[float], floor: list[float]) -> str:
    """``latency-vs-broker box->job p50_ratio=R1 p99_ratio=R2``: parcelflow over the bare
    pipeline, at the same rate."""
    if len(parcelflow) < 2 or len(floor) < 2:
        return "latency-vs-broker box->job p50_ratio=n/a p99_ratio=n/a"
    ours = statistics.quantiles(parcelflow, n=100, method="inclusive")
    bare = statistics.quantiles(floor, n=100, method="inclusive")
    r50 = ours[49] / max(bare[49], 1.0)
    r99 = ours[98] / max(bare[98], 1.0)
    return f"latency-vs-broker box->job p50_ratio={r50:.2f} p99_ratio={r99:.2f}"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="boxes per second to start (200)")
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds per rate (60)")
    p.add_argument("--warmup", type=float, default=10.0, help="warm-up seconds per rate (10)")
    p.add_argument("--lead", type=float, default=2.0, help="order ahead of its boxes, s (2)")
    p.add_argument("--drain", type=float, default=60.0, help="wait for labels after, s (60)")
    p.add_argument("--phases", type=int, default=4, help="rates to try at most (4)")
    p.add_argument(
        "--probe-rate",
        type=float,
        default=20.0,
        help="boxes/s of a bare pipeline run alongside parcelflow (the floor under the same "
        "load; 0: none) (20)",
    )
    p.add_argument("--goal-ms", type=float, default=250.0, help="box->job p99 goal (250)")
    p.add_argument(
        "--label-dir",
        default=SHM if Path(SHM).is_dir() else None,
        help=f"where the label files go (default {SHM} when there: see LABEL_FILES)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except KeyboardInterrupt:
        sys.exit(130)
