"""The event loop our long-running processes use, and how they collect garbage."""

from __future__ import annotations

import asyncio
import gc
import signal


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS): about twice the requests per core."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or Ctrl-C sets: a worker's loop runs until it is set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def collect_garbage_less_often() -> None:
    """Fewer garbage collections for a worker that makes many short-lived objects.

    The objects made so far (modules, the app) are frozen out of every collection, and a
    collection starts after 50,000 new objects instead of 700. The planner's models make
    thousands of objects per batch: its join alone runs about twice as fast with this
    (``make bench-planner``, "join alone").
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
