"""Where a benchmark's CPU goes: each process's share of a core over a measured window."""

from __future__ import annotations

import asyncio
import contextlib
import time

import psutil


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process so far (gone ones left out)."""
    spent = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            spent[name] = sum(psutil.Process(pid).cpu_times()[:2])
    return spent


async def cpu_shares(pids: dict[str, int], out: dict[str, float], after_s: float) -> None:
    """Each process's share of a core from ``after_s`` on until cancelled, into ``out``:
    where the machine's two cores go while the latencies are measured."""
    await asyncio.sleep(after_s)
    started, before = time.monotonic(), cpu_seconds(pids)
    try:
        await asyncio.Event().wait()
    finally:
        elapsed, after = time.monotonic() - started, cpu_seconds(pids)
        for name in before.keys() & after.keys():
            out[name] = (after[name] - before[name]) / max(elapsed, 1e-9)


def cpu_line(cpu: dict[str, float]) -> str:
    """``cpu of a core: broker 62% planner 41% ... total 1.71 of 2 cores``."""
    parts = " ".join(
        f"{name} {share:.0%}" for name, share in sorted(cpu.items(), key=lambda x: -x[1])
    )
    return f"cpu of a core: {parts}; total {sum(cpu.values()):.2f} of {psutil.cpu_count()} cores"
