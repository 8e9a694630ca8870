"""The planner's batches in flight: acked in order, once the broker has their records, and
never past a write that failed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workers.planner.app import InFlight


class Event:
    """What InFlight needs of a Faust event: ``ack()``, here noted in ``acked``."""

    def __init__(self, acked: list[str], name: str) -> None:
        self.acked, self.name = acked, name

    def ack(self) -> bool:
        self.acked.append(self.name)
        return True


def batch(acked: list[str], name: str, size: int = 2) -> list[Any]:
    return [Event(acked, f"{name}{n}") for n in range(size)]


async def settled() -> None:
    """Let done-callbacks run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_batches_are_acked_in_order_once_their_records_are_written() -> None:
    acked: list[str] = []
    failures: list[BaseException] = []
    in_flight = InFlight(4, failures.append)
    loop = asyncio.get_running_loop()
    writes = [loop.create_future() for _ in range(3)]
    for name, written in zip("abc", writes, strict=True):
        in_flight.add(batch(acked, name), written, 0.0)
    writes[1].set_result(None)  # the second batch is written before the first
    await settled()
    assert acked == []  # never past a batch still being written
    writes[0].set_result(None)
    await settled()
    assert acked == ["a0", "a1", "b0", "b1"]
    writes[2].set_result(None)
    await settled()
    assert acked == ["a0", "a1", "b0", "b1", "c0", "c1"]
    assert failures == []
    await in_flight.room()  # nothing in flight: returns at once


async def test_a_refused_write_is_told_once_and_nothing_after_it_is_acked() -> None:
    acked: list[str] = []
    failures: list[BaseException] = []
    in_flight = InFlight(4, failures.append)
    loop = asyncio.get_running_loop()
    first, second, third = (loop.create_future() for _ in range(3))
    in_flight.add(batch(acked, "a"), first, 0.0)
    in_flight.add(batch(acked, "b"), second, 0.0)
    in_flight.add(batch(acked, "c"), third, 0.0)
    first.set_result(None)
    refused = RuntimeError("KafkaTimeoutError")
    second.set_exception(refused)
    third.set_result(None)
    await settled()
    assert acked == ["a0", "a1"]
    assert failures == [refused]  # told while the stream is idle, and once
    with pytest.raises(RuntimeError, match="KafkaTimeoutError"):
        await in_flight.room()


async def test_a_write_cancelled_at_a_stop_is_no_failure_but_stops_the_acking() -> None:
    acked: list[str] = []
    failures: list[BaseException] = []
    in_flight = InFlight(4, failures.append)
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    in_flight.add(batch(acked, "a"), first, 0.0)
    in_flight.add(batch(acked, "b"), second, 0.0)
    first.cancel()
    second.set_result(None)
    await settled()
    assert acked == []
    assert failures == []
    with pytest.raises(asyncio.CancelledError):
        await in_flight.room()


async def test_room_waits_while_as_many_batches_as_allowed_are_in_flight() -> None:
    acked: list[str] = []
    in_flight = InFlight(2, lambda exc: None)
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    in_flight.add(batch(acked, "a"), first, 0.0)
    in_flight.add(batch(acked, "b"), second, 0.0)
    waiting = asyncio.create_task(in_flight.room())
    await settled()
    assert not waiting.done()  # two in flight, at most two: the next batch waits
    first.set_result(None)
    await asyncio.wait_for(waiting, 1)
    assert acked == ["a0", "a1"]
    assert len(in_flight.batches) == 1
