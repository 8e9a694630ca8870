"""The event loop our long-running processes use, and how they collect garbage."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS): about twice the requests per core."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def stop_on_signals(deadline_s: float | None = None) -> asyncio.Event:
    """An event that SIGTERM or Ctrl-C sets: a worker's loop runs until it is set. With
    ``deadline_s``, a worker still running that long after the signal exits with code 1,
    whatever it waits for (a broker that is gone, a write that never acks)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        if deadline_s is not None and not stop.is_set():
            hard_stop_after(deadline_s)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping)
    return stop


def hard_stop_after(deadline_s: float) -> None:
    """End this process with code 1 in ``deadline_s`` unless it has ended by then."""
    timer = threading.Timer(deadline_s, os._exit, (1,))
    timer.daemon = True
    timer.start()


def collect_garbage_less_often() -> None:
    """Fewer garbage collections for a worker that makes many short-lived objects.

    The objects made so far (modules, the app) are frozen out of every collection, and a
    collection starts after 50,000 new objects instead of 700. The planner's models make
    thousands of objects per batch: its join alone runs about twice as fast with this
    (``make bench-planner``, "join alone").
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
