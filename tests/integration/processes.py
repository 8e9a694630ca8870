"""Run a parcelflow worker as a real process for a test; stopped by pid, always."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workers.devstack.stack import terminate
from workers.settings import Settings


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
            command or [sys.executable, "-m", "workers.cli", name],
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
