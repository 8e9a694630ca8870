"""The receiver's notification-id memory: window, bound, concurrent copies, failures."""

from __future__ import annotations

import asyncio

import pytest

from workers.receiver.dedupe import Dedupe


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_an_id_is_written_once_within_the_window_and_again_after() -> None:
    clock = Clock()
    dedupe = Dedupe(window_s=60, max_ids=10, clock=clock)
    writes: list[str] = []

    async def write() -> None:
        writes.append("x")

    assert await dedupe.once("a", write) is True
    clock.now = 59
    assert await dedupe.once("a", write) is False
    clock.now = 61
    assert await dedupe.once("a", write) is True
    assert writes == ["x", "x"]


async def test_the_oldest_ids_are_forgotten_beyond_the_bound() -> None:
    dedupe = Dedupe(window_s=60, max_ids=2, clock=Clock())

    async def write() -> None:
        return None

    for key in "abc":
        await dedupe.once(key, write)
    assert len(dedupe) == 2
    assert await dedupe.once("a", write) is True  # forgotten: written again
    assert await dedupe.once("c", write) is False


async def test_concurrent_copies_share_one_write() -> None:
    dedupe = Dedupe(window_s=60, max_ids=10)
    release = asyncio.Event()
    writes = 0

    async def write() -> None:
        nonlocal writes
        writes += 1
        await release.wait()

    copies = [asyncio.create_task(dedupe.once("a", write)) for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    assert sorted(await asyncio.gather(*copies)) == [False, False, False, False, True]
    assert writes == 1


async def test_a_failed_write_is_not_remembered_and_a_waiting_copy_writes() -> None:
    dedupe = Dedupe(window_s=60, max_ids=10)
    release = asyncio.Event()
    attempts: list[str] = []

    async def failing() -> None:
        attempts.append("fail")
        await release.wait()
        raise ConnectionError("broker gone")

    async def working() -> None:
        attempts.append("ok")

    first = asyncio.create_task(dedupe.once("a", failing))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(dedupe.once("a", working))
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(ConnectionError):
        await first
    assert await second is True
    assert attempts == ["fail", "ok"]
    assert await dedupe.once("a", working) is False
