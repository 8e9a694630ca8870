"""Run a parcelflow worker for a test: as a real process (stopped by pid, always), or as a
task in the test's own process (stopped through its stop event)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from devstack.stack import terminate
from workers import lifeline
from workers.settings import Settings


@asynccontextmanager
async def in_process(
    run: Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]], settings: Settings
) -> AsyncIterator[None]:
    """A worker's ``run(settings, stop)`` in this process while the block runs; stopped
    after, within 15 s."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    return env | settings.as_env()


@contextmanager
def worker_process(
    name: str,
    settings: Settings,
    log_path: Path,
    ready: bytes,
    timeout_s: float = 60.0,
    command: list[str] | None = None,  # instead of ``python -m workers.cli NAME``
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        start = log.tell()  # a restart appends to the same log: look at its own lines only
        proc = subprocess.Popen(
            # it dies with this test process too, should a timeout end it past the finally
            lifeline.wrap(command or [sys.executable, "-m", "workers.cli", name]),
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while ready not in log_path.read_bytes()[start:]:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} did not become ready:\n{tail}")
                time.sleep(0.1)
            yield proc
        finally:
            terminate(proc)
