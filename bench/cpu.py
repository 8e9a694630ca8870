"""Where a benchmark's CPU goes: each process's share of a core over a measured window."""

from __future__ import annotations

import asyncio
import contextlib
import time

import psutil


async def cpu_by_window(pid: int, after_s: float, out: list[float], window_s: float = 10) -> None:
    """The process's share of a core in each ``window_s`` from ``after_s`` on, into ``out``
    (until cancelled)."""
    proc = psutil.Process(pid)
    await asyncio.sleep(after_s)
    before = sum(proc.cpu_times()[:2])
    while True:
        await asyncio.sleep(window_s)
        now = sum(proc.cpu_times()[:2])
        out.append((now - before) / window_s)
        before = now


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
