"""Print benchmark: labels at the packing stations as boxes close.

    make bench-print            (or: .venv/bin/python -m bench.printing --help)

The devstack (broker, simulator, every worker) gets demo orders at ``--rate`` boxes/s for
``--seconds``; a station print agent per warehouse (``station/``, the same code a
station runs) follows its label events and prints ZPL to a socket printer (a thermal
printer's port 9100, in this process). A third of the way in the printer goes away for
``--outage`` seconds; two thirds in the agent is stopped and started again.

Prints the counts and the latencies: box closed (its order's last box stored by the
receiver) -> label bytes taken by the printer, p50 and p99; and the agent's own share,
from the label event's arrival to the printer's acknowledgement. The last line:
``print: boxes=N printed=P duplicates=D lost=X p50_ms=A p99_ms=B agent_p50_ms=C``.
Goal: P = N, D = 0, X = 0, C < 300 ms. Everything started is stopped, by process id.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

from parcelflow_station.agent import Agent, Config
from parcelflow_station.printers import RawPrinter

from devstack.chaos import play
from devstack.demo_data import DemoOrder, make_demo
from devstack.printer import SocketPrinter
from devstack.stack import Stack

WAREHOUSE = "7300000000000000001"  # the demo's warehouse
BARCODE = re.compile(rb"\^BCN,[^^]*\^FD([^^]+)\^FS")  # a label's tracking barcode, in ZPL


class Counted:
    """The agent's printer, counting what the printer took, per box (the print name)."""

    def __init__(self, printer: RawPrinter) -> None:
        self.printer = printer
        self.taken: list[tuple[str, float]] = []  # (box id, when the printer took it)

    async def print(self, document: bytes, fmt: str, name: str) -> None:
        await self.printer.print(document, fmt, name)
        self.taken.append((name.split(" ")[0], time.time()))


def demo(rate: float, seconds: float) -> list[DemoOrder]:
    """Demo orders whose boxes add up to about ``rate * seconds``."""
    orders = make_demo(
        int(rate * seconds), seed=7, run_id=int(time.time()) % 100_000, now_s=int(time.time())
    )
    wanted, total, kept = rate * seconds, 0, []
    for order in orders:
        if total >= wanted:
            break
        kept.append(order)
        total += len(order.boxes)
    return kept


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def bench(stack: Stack, token: str, args: argparse.Namespace, state: Path) -> None:
    orders = demo(args.rate, args.seconds)
    boxes = {box.box_id: order.order_id for order in orders for box in order.boxes}
    printer = SocketPrinter()
    await printer.on()
    counted = Counted(RawPrinter("127.0.0.1", printer.port))
    config = Config(stack.receiver_url, token, "", "zpl", state, retry_s=0.5)
    stop = asyncio.Event()
    agents = [Agent(config, counted)]
    running = asyncio.create_task(agents[0].run(stop))
    stored: dict[str, float] = {}
    traffic = asyncio.create_task(play(orders, stack, args.seconds, stored))
    await asyncio.sleep(args.seconds / 3)
    await printer.off()
    print(f"printer away for {args.outage:g} s", flush=True)
    await asyncio.sleep(args.outage)
    await printer.on()
    await asyncio.sleep(max(0.0, args.seconds / 3 - args.outage))
    stop.set()  # the agent restarts
    await running
    print("agent restarted", flush=True)
    stop = asyncio.Event()
    agents.append(Agent(config, counted))
    running = asyncio.create_task(agents[1].run(stop))
    await traffic
    deadline = time.monotonic() + args.drain
    while len({box for box, _ in counted.taken}) < len(boxes):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # a late duplicate would show now
    stop.set()
    await running
    await printer.off()

    # what the printer got, read from the bytes: each label's tracking barcode, once
    prints = Counter(
        m.group(1).decode() for _, job in printer.jobs for m in [BARCODE.search(job)] if m
    )
    printed = min(len(prints), len(boxes))
    duplicates = sum(n - 1 for n in prints.values())
    last_print: dict[str, float] = {}
    for box, at in counted.taken:
        order = boxes.get(box)
        if order is not None:
            last_print[order] = max(last_print.get(order, 0.0), at)
    latencies = [(last_print[o] - stored[o]) * 1000 for o in last_print if o in stored]
    agent_ms = [float(ms) for agent in agents for ms in agent.stats.agent_ms]
    print(
        f"{len(orders)} orders, {len(boxes)} boxes at {args.rate:g} boxes/s; "
        f"printer jobs {len(printer.jobs)}"
    )
    print(
        f"box closed -> label at the printer: p50 {pct(latencies, 50):.0f} ms, "
        f"p99 {pct(latencies, 99):.0f} ms (the outage and the restart included)"
    )
    print(
        f"agent's own share (label event -> printer ack): p50 {pct(agent_ms, 50):.0f} ms, "
        f"p99 {pct(agent_ms, 99):.0f} ms"
    )
    print(
        f"print: boxes={len(boxes)} printed={printed} duplicates={duplicates} "
        f"lost={len(boxes) - printed} p50_ms={pct(latencies, 50):.0f} "
        f"p99_ms={pct(latencies, 99):.0f} agent_p50_ms={pct(agent_ms, 50):.0f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rate", type=float, default=20.0, help="boxes per second (20)")
    p.add_argument("--seconds", type=float, default=60.0, help="traffic for (60)")
    p.add_argument("--outage", type=float, default=10.0, help="printer away for (10)")
    p.add_argument("--drain", type=float, default=180.0, help="wait for the last labels (180)")
    args = p.parse_args()
    token = secrets.token_urlsafe(24)
    principal: dict[str, object] = {"token": token, "roles": ["labels"], "warehouses": [WAREHOUSE]}
    with TemporaryDirectory(prefix="pf-print-") as tmp:
        stack = Stack(
            Path(tmp),
            {"LABEL_FORMATS": '["zpl"]', "SIM_LABEL_LATENCY_MEDIAN_S": "0.3"},
            principals={"printer-wh": principal},
        )
        with stack.running(say=False):
            asyncio.run(bench(stack, token, args, Path(tmp) / "station-state.json"))


if __name__ == "__main__":
    main()
