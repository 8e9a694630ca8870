"""Planner benchmark: join throughput of one Faust worker, against a raw aiokafka pass-through.

    make bench-planner            (or: .venv/bin/python -m bench.planner --help)

The same ``--orders`` orders (each 2 A + 1 B + 1 C, in 1 to 3 boxes, shuffled) are put in
two namespaces' ``orders.v1`` and ``warehouse.boxes.v1`` before anything starts. Then:

- baseline: a plain aiokafka consumer group that reads both topics and produces every
  event unchanged to one output topic (acks=all), committing after each batch;
- planner: one ``parcelflow planner`` worker (Faust) joining them into parcel plans and
  label jobs.

- faust floor: the planner's Faust app (``new_app``: its settings, its consumer) with an
  agent that only consumes the events in batches and writes one count record per batch:
  what Faust's per-event consumption alone allows, for reading the planner's number.
- echo: the floor writing every event back unchanged (one record out per event, acked
  before the next batch), to see what output costs Faust.
- looked-up: the planner itself with its join looked up: every event's records and state
  are joined before the worker starts, and the worker only pops them. Its events/s is the
  most any join inside the planner's app can reach (same app, table, records and waits),
  so looked-up / floor is the most planner / floor can be, and planner / looked-up is the
  join's own cost.
- join alone: the planner's pure join over the same events in this process (decode,
  join, encode every step and its state as the planner does; state as JSON per order,
  read once per batch), no Kafka, with Python's default garbage collection and with the
  planner's.

Each runs as its own process over its backlog; throughput is input events divided by the
time from its first output to its last, so start-up is not counted, and CPU is the
process's share of one core over that same time. Prints them all and their ratios
(planner / faust floor: goal >= 0.8). A small backlog (a few
thousand orders) is over before the pass-through is busy: the default is large enough
that it is. Everything started is stopped, by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import sealing
from devstack.broker.embedded import EmbeddedBroker
from devstack.stack import terminate as stop
from schemas.box import BoxClosed, BoxItem
from schemas.codec import encode
from schemas.common import Dimensions, Weight
from schemas.label import LabelJob
from schemas.order import LineItem, Order, OrderStatus
from schemas.topics import BOXES, LABEL_JOBS, ORDERS, PLANS
from workers.kafka import Topics, make_consumer, make_producer
from workers.loop import collect_garbage_less_often
from workers.planner.join import OrderState, encode_step, on_event, restore
from workers.settings import Settings
from workers.topics import ensure_topics

SKUS = {"A": 2, "B": 1, "C": 1}


def events(count: int, run: str, seed: int = 11) -> list[Order | BoxClosed]:
    rng = random.Random(seed)
    out: list[Order | BoxClosed] = []
    for n in range(count):
        order_id = f"{run}{n:07d}"
        items = [
            LineItem(item_id=f"{order_id}-{k}", sku_id=f"id-{sku}", seller_sku=sku, product_id="p")
            for k, sku in enumerate(s for s, units in SKUS.items() for _ in range(units))
        ]
        order = Order(
            event_id=f"ev-{order_id}",
            order_id=order_id,
            shop_id="bench",
            status=OrderStatus.AWAITING_SHIPMENT,
            line_items=items,
            recipient=sealing.sealed(order_id),
            update_time=1,
        )
        units = [li.seller_sku for li in items]
        cuts = sorted(rng.sample(range(1, len(units)), rng.randint(0, 2)))
        groups = [units[i:j] for i, j in zip([0, *cuts], [*cuts, len(units)], strict=True)]
        boxes = [
            BoxClosed(
                event_id=f"ev-{order_id}-B{k}",
                box_id=f"{order_id}-B{k}",
                order_id=order_id,
                station_id="bench",
                items=[BoxItem(sku=s, quantity=q) for s, q in Counter(group).items()],
                weight=Weight(value=1),
                dimensions=Dimensions(length=10, width=8, height=4),
                closed_at_ms=1,
            )
            for k, group in enumerate(groups)
        ]
        batch: list[Order | BoxClosed] = [order, *boxes]
        rng.shuffle(batch)
        out.extend(batch)
    return out


async def fill(settings: Settings, items: list[Order | BoxClosed]) -> None:
    names = Topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        for item in items:
            topic = names(ORDERS) if isinstance(item, Order) else names(BOXES)
            await producer.send(topic, encode(item), key=item.order_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def output_times(
    settings: Settings, topics: list[str], done: Callable[[str, bytes], bool], timeout_s: float
) -> list[float]:
    """Arrival time of every record on ``topics`` until ``done`` says the run is complete."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    times: list[float] = []
    finished = False
    try:
        async with asyncio.timeout(timeout_s):
            while not finished:
                batches = await consumer.getmany(timeout_ms=100, max_records=5000)
                now = time.monotonic()
                for tp, messages in batches.items():
                    for message in messages:
                        times.append(now)
                        finished = done(tp.topic, message.value) or finished
    except TimeoutError:
        raise SystemExit(f"timed out after {len(times)} outputs on {topics}") from None
    finally:
        await consumer.stop()
    return times


def start(args: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    env |= settings.as_env() | {"PARCELFLOW_LOG_LEVEL": "warning"}
    return subprocess.Popen(
        [sys.executable, *args], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


async def pass_through(settings: Settings) -> None:
    """The baseline process: consume orders and boxes, produce each unchanged, commit."""
    names = Topics(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    consumer = make_consumer(settings, names.group("bench-pass"), names(ORDERS), names(BOXES))
    producer: AIOKafkaProducer = make_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, messages in batches.items():
                acks = [await producer.send(names(PLANS), m.value, key=m.key) for m in messages]
                await asyncio.gather(*acks)
                await consumer.commit(
                    {TopicPartition(tp.topic, tp.partition): messages[-1].offset + 1}
                )
    finally:
        await consumer.stop()
        await producer.stop()


def faust_floor(settings: Settings, echo: bool = False) -> None:
    """The floor process: a Faust worker like the planner that only counts what it consumes.

    With ``echo`` it also writes every event back, unchanged, to the output topic and
    waits for the broker's acks before the next batch: the least output the planner
    itself writes (a plan per box and a job per order: one record per event here).
    """
    import faust

    from devstack.broker.offsets import install_end_offsets_correction
    from workers.kafka_auth import client_options
    from workers.loop import new_event_loop
    from workers.planner.app import RAW, new_app

    if settings.kafka_embedded:
        install_end_offsets_correction(client_options(settings))
    names = Topics(settings)
    app = new_app(settings)  # the planner's own app and settings, without its join
    source = app.topic(names(ORDERS), names(BOXES), **RAW)
    out, echoed = names(PLANS), names(LABEL_JOBS)

    @app.agent(source, concurrency=1)
    async def count(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, faust.Stream)
        batches = stream.take_events(settings.planner_batch_size, settings.planner_batch_wait_s)
        async for events in batches:
            sends = []
            if echo:
                for event in events:
                    message = event.message
                    sends.append(
                        await app.producer.send(
                            echoed, message.key, message.value, None, None, None
                        )
                    )
            count = str(len(events)).encode()
            await app.producer.send(out, b"n", count, None, None, None)
            await asyncio.gather(*sends)  # (none without echo: the floor as it always was)

    collect_garbage_less_often()  # as the planner does
    faust.Worker(
        app, loglevel="WARNING", quiet=True, loop=new_event_loop()
    ).execute_from_commandline()


async def measure(
    name: str,
    settings: Settings,
    command: list[str],
    topics: list[str],
    done: Callable[[str, bytes], bool],
    inputs: int,
    log: Path,
    broker_pid: int,
) -> float:
    proc = start(command, settings, log)
    pids = {"worker": proc.pid, "broker": broker_pid}
    marks: list[dict[str, float]] = []

    def mark(topic: str, value: bytes) -> bool:
        finished = done(topic, value)
        if not marks or finished:
            marks.append(cpu_seconds(pids))
        return finished

    try:
        times = await output_times(settings, topics, mark, timeout_s=600)
    finally:
        stop(proc)
    elapsed = times[-1] - times[0]
    cpu = ", ".join(f"{k} {(marks[-1][k] - marks[0][k]) / elapsed:.0%}" for k in pids)
    print(
        f"{name:<36} {inputs / elapsed:6.0f} events/s  "
        f"({inputs} events in, {len(times)} records out; CPU of a core meanwhile: {cpu})"
    )
    return inputs / elapsed


def join_alone(items: list[Order | BoxClosed], batch_size: int) -> float:
    """Events/s of the pure join in this process: decode, join, encode, no Kafka and no Faust.

    As the planner does it: each order's state read from its JSON once per batch, every
    step encoded (``encode_step``: the records, and the state to check that it fits a
    record) and the last state per order kept as JSON. So this is the planner's own work
    per event, the rest being Kafka and Faust.
    """
    raw = [(isinstance(item, Order), encode(item)) for item in items]
    store: dict[str, bytes] = {}
    started = time.process_time()
    for first in range(0, len(raw), batch_size):
        states: dict[str, OrderState] = {}
        for is_order, value in raw[first : first + batch_size]:
            event = (
                Order.model_validate_json(value)
                if is_order
                else BoxClosed.model_validate_json(value)
            )
            state = states.get(event.order_id)
            if state is None:
                state = restore(event.order_id, store.get(event.order_id))
            encoded = encode_step(state, on_event(state, event, 1), 1024 * 1024)
            states[event.order_id] = encoded.step.state
            if encoded.state is not None:
                store[event.order_id] = encoded.state
    return len(raw) / (time.process_time() - started)


def looked_up_planner(settings: Settings, orders: int) -> None:
    """The planner process with its join looked up instead of computed: every event's
    records and state are joined here before the worker starts, and ``Batch.step`` only
    pops them. Everything else is the planner's: its Faust app, its table, every record it
    writes and when it waits for the broker. So its events/s is the most any join inside
    this app can reach, and its ratio to the floor the most planner/floor can be."""
    from collections import deque

    from workers import logs
    from workers.planner import app as planner_app

    results: dict[bytes, deque[tuple[list[tuple[bool, bytes]], bytes | None]]] = {}
    states: dict[str, OrderState] = {}
    for item in events(orders, "B"):
        state = states.get(item.order_id) or OrderState(order_id=item.order_id)
        encoded = encode_step(state, on_event(state, item, 1), 1024 * 1024)
        states[item.order_id] = encoded.step.state
        records = [(True, plan) for plan in encoded.plans] + [(False, j) for j in encoded.jobs]
        results.setdefault(item.order_id.encode(), deque()).append((records, encoded.state))

    def step(batch: planner_app.Batch, message: Any) -> list[tuple[str, bytes]]:
        records, state = results[message.key].popleft()
        if state is not None:
            batch.partitions[message.key] = message.partition
            batch.encoded[message.key] = state
        p = batch.planner
        return [(p.plans_topic if is_plan else p.jobs_topic, value) for is_plan, value in records]

    planner_app.Batch.step = step  # type: ignore[method-assign,assignment]
    logs.configure(settings.log_level)
    planner_app.run(settings)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    times = {name: psutil.Process(pid).cpu_times() for name, pid in pids.items()}
    return {name: t.user + t.system for name, t in times.items()}


async def main(args: argparse.Namespace) -> None:
    with TemporaryDirectory(prefix="pf-bench-") as tmp_dir, EmbeddedBroker() as broker:
        tmp = Path(tmp_dir)
        base = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True)
        runs = {
            name: base.model_copy(
                update={
                    "topic_namespace": f"{name[:2]}{uuid.uuid4().hex[:6]}.",
                    "planner_data_dir": tmp / name,
                }
            )
            for name in ("baseline", "floor", "echo", "planner", "looked-up")
        }
        assert broker.proc is not None
        broker_pid = broker.proc.pid
        items = events(args.orders, "B")
        for settings in runs.values():
            await ensure_topics(settings)
            await fill(settings, items)
        print(f"{args.orders} orders: {len(items)} events (orders and boxes), 4 partitions")

        async def run(
            key: str, label: str, command: list[str], done: Callable[[str, bytes], bool]
        ) -> float:
            return await measure(
                label,
                runs[key],
                command,
                outputs[key],
                done,
                len(items),
                tmp / f"{key}.log",
                broker_pid,
            )

        outputs = {key: [Topics(s)(PLANS), Topics(s)(LABEL_JOBS)] for key, s in runs.items()}
        this = ["-m", "bench.planner"]
        baseline = await run(
            "baseline", "baseline (pass-through)", [*this, "--pass-through"], passed(items)
        )
        join_without_kafka(items, runs["planner"].planner_batch_size)
        floor = await run(
            "floor", "floor (Faust)", [*this, "--faust-floor"], counted(runs["floor"], items)
        )
        echo = await run(
            "echo",
            "echo (floor + output)",
            [*this, "--faust-floor", "--echo"],
            counted(runs["echo"], items),
        )
        profile = os.environ.get("BENCH_PROFILE", "").split()
        planner = await run(
            "planner",
            "planner",
            [*profile, "-m", "workers.cli", "planner"],
            jobs(runs["planner"], args.orders),
        )
        ceiling = await run(
            "looked-up",
            "looked-up (planner, join looked up)",
            [*this, "--looked-up", "--orders", str(args.orders)],
            jobs(runs["looked-up"], args.orders),
        )
    ratios(baseline, floor, echo, planner, ceiling)


def join_without_kafka(items: Any, batch_size: int) -> None:
    """The join alone in this process, with Python's GC settings and with the planner's."""
    default_gc = gc.get_threshold()
    for name, tune in (("default", False), ("planner's", True)):
        if tune:
            collect_garbage_less_often()
        rate = join_alone(items, batch_size)
        label = f"join alone ({name} GC)"
        print(f"{label:<36} {rate:6.0f} events/s  (in this process, no Kafka)")
    gc.unfreeze()
    gc.set_threshold(*default_gc)


def ratios(baseline: float, floor: float, echo: float, planner: float, ceiling: float) -> None:
    print(f"ratio planner/pass-through: {planner / baseline:.2f} (goal >= 0.5)")
    print(f"ratio planner/faust floor:  {planner / floor:.2f} (the join's own cost inside Faust)")
    print(f"ratio echo/faust floor:     {echo / floor:.2f} (Faust with one record out per event)")
    print(
        f"ratio looked-up/floor:      {ceiling / floor:.2f} (the planner with a join that costs "
        "nothing: the most planner/floor can be)"
    )
    print(f"ratio planner/looked-up:    {planner / ceiling:.2f} (the join's own cost)")


def passed(items: list[Order | BoxClosed]) -> Callable[[str, bytes], bool]:
    """Done when every event came out (the pass-through)."""
    seen = 0

    def done(topic: str, value: bytes) -> bool:
        nonlocal seen
        seen += 1
        return seen >= len(items)

    return done


def counted(settings: Settings, items: list[Order | BoxClosed]) -> Callable[[str, bytes], bool]:
    """Done when the count records of the floor add up to every event."""
    total = 0
    counts = Topics(settings)(PLANS)

    def done(topic: str, value: bytes) -> bool:
        nonlocal total
        if topic == counts:
            total += int(value)
        return total >= len(items)

    return done


def jobs(settings: Settings, orders: int) -> Callable[[str, bytes], bool]:
    """Done when every order has its label job (a planner)."""
    seen: set[str] = set()
    topic = Topics(settings)(LABEL_JOBS)

    def done(topic_: str, value: bytes) -> bool:
        if topic_ == topic:
            seen.add(LabelJob.model_validate_json(value).order_id)
        return len(seen) >= orders

    return done


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--pass-through", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--faust-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--looked-up", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.pass_through:
        asyncio.run(pass_through(Settings()))
    elif arguments.looked_up:
        looked_up_planner(Settings(), arguments.orders)
    elif arguments.faust_floor:
        faust_floor(Settings(), echo=arguments.echo)
    else:
        asyncio.run(main(arguments))
