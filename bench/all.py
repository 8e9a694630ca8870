"""Every benchmark, one after the other, then one table of their ratios and latencies.

    make bench            (or: .venv/bin/python -m bench.all)

Each benchmark runs as its own process (``python -m bench.<name>``) and prints its full
output as it goes; the table at the end picks each one's headline numbers, with the goal
each is held to. Numbers from a shared 2-core machine: compare within one run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    bench: str
    measure: str
    pattern: str  # a regex whose first group is the value
    goal: str
    unit: str = ""


ROWS = [
    Row("sealing", "seal a recipient (AES-256-GCM)", r"^sealing: seal_us=(\S+)", "(info)", " us"),
    Row("sealing", "open a recipient", r"^sealing: .*open_us=(\S+)", "(info)", " us"),
    Row(
        "sealing",
        "the address as JSON in clear (baseline)",
        r"^sealing: .*baseline_us=(\S+)",
        "(info)",
        " us",
    ),
    Row(
        "receiver",
        "receiver / bare aiohttp handler",
        r"ratio receiver/baseline: ([\d.]+)",
        ">= 0.5",
    ),
    Row("receiver", "receiver p99", r"^receiver .*p99\s+([\d.]+) ms", "< 50", " ms"),
    Row(
        "planner",
        "planner / raw aiokafka pass-through",
        r"planner/pass-through: ([\d.]+)",
        "(info)",
    ),
    Row("planner", "planner / Faust floor", r"planner/faust floor:\s+([\d.]+)", ">= 0.8"),
    Row(
        "planner",
        "join looked up / Faust floor (the most the row above can be)",
        r"looked-up/floor:\s+([\d.]+)",
        "(info)",
    ),
    Row("planner", "planner / join looked up", r"planner/looked-up:\s+([\d.]+)", "(info)"),
    Row("labeler", "labels/s / Little's law", r"^ratio:\s+([\d.]+)\s+\(goal >= 0.9\)", ">= 0.9"),
    Row(
        "labeler",
        "peak RSS, large / small backlog",
        r"^ratio:\s+([\d.]+)\s+\(goal <= 1.10\)",
        "<= 1.10",
    ),
    Row(
        "latency", "box closed -> plan, p99", r"^latency box->plan .*p99_ms=(\S+)", "(info)", " ms"
    ),
    Row(
        "latency",
        "box closed -> label job, p99",
        r"^latency box->job .*p99_ms=(\S+)",
        "< 250",
        " ms",
    ),
    Row(
        "latency", "box closed -> label, p99", r"^latency box->label .*p99_ms=(\S+)", "< 500", " ms"
    ),
    Row(
        "latency",
        "order webhook -> order event, p99",
        r"^latency order->event .*p99_ms=(\S+)",
        "(info)",
        " ms",
    ),
    Row(
        "latency",
        "box -> job p99 / bare pipeline's on the same broker",
        r"^latency-vs-broker box->job .*p99_ratio=(\S+)",
        "<= 2.0",
    ),
    Row(
        "latency",
        "box -> job p99 / bare pipeline's beside parcelflow",
        r"^latency-vs-broker-loaded box->job .*p99_ratio=(\S+)",
        "(info)",
    ),
    Row(
        "adaptive",
        "labels/s / capacity, worst phase",
        r"^adaptive: throughput_ratio=(\S+)",
        ">= 0.85",
    ),
    Row("adaptive", "share of calls answered 429", r"^adaptive: .*rejected_share=(\S+)", "<= 0.02"),
    Row("adaptive", "seconds to settle, worst change", r"^adaptive: .*settle_s=(\S+)", "<= 30"),
    Row(
        "adaptive",
        "3 replicas: labels/s / capacity, worst phase",
        r"^adaptive-replicas: throughput_ratio=(\S+)",
        ">= 0.85",
    ),
    Row(
        "adaptive",
        "3 replicas: share of calls answered 429",
        r"^adaptive-replicas: .*rejected_share=(\S+)",
        "<= 0.02",
    ),
    Row(
        "adaptive",
        "3 replicas: slowest / fastest replica",
        r"^adaptive-replicas: .*fairness=(\S+)",
        ">= 0.5",
    ),
    Row(
        "recovery",
        "planner restore, seconds per 1000 open orders (worst)",
        r"^recovery: restore_s_per_1000_open_orders=(\S+)",
        "(info)",
    ),
    Row(
        "adaptive",
        "warm / cold start, labels/s in 30 s after a restart",
        r"^warm-start: .*restart_ratio=(\S+)",
        "(info)",
    ),
]
BENCHES = ("receiver", "planner", "labeler", "latency", "adaptive", "recovery", "sealing")


def run(name: str) -> str:
    print(f"=== bench.{name}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}"], stdout=subprocess.PIPE, text=True
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    proc.wait()
    print(f"=== bench.{name}: exit {proc.returncode} after {time.monotonic() - started:.0f} s\n")
    return "".join(lines)


def table(outputs: dict[str, str]) -> list[str]:
    out = ["| benchmark | measure | value | goal |", "|---|---|---|---|"]
    for row in ROWS:
        found = re.search(row.pattern, outputs.get(row.bench, ""), flags=re.MULTILINE)
        value = f"{found.group(1)}{row.unit}" if found else "(no result)"
        out.append(f"| {row.bench} | {row.measure} | {value} | {row.goal} |")
    knee = re.search(r"^knee: .*$", outputs.get("latency", ""), flags=re.MULTILINE)
    if knee:
        out.append(f"\n{knee.group(0)}")
    return out


def main() -> None:
    outputs = {name: run(name) for name in (sys.argv[1:] or BENCHES)}
    print("\n".join(table(outputs)))


if __name__ == "__main__":
    main()
