"""Correct the embedded broker's ListOffsets(LATEST) answer.

Tansu answers ListOffsets(LATEST) with the base offset of the newest record batch + 1,
not the log end, so ``end_offsets()`` is short whenever the newest batch holds more than
one record, and Faust stops restoring a table early (keys are lost). A Fetch response's
high watermark is right. ``install_end_offsets_correction`` wraps aiokafka's
``end_offsets`` so that, for every non-empty partition, it reads the newest batch once
and answers that Fetch's high watermark instead. Install it only on the embedded broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

EndOffsets = Callable[
    [AIOKafkaConsumer, list[TopicPartition]], Awaitable[dict[TopicPartition, int]]
]

_ORIGINAL: EndOffsets | None = None


async def high_watermarks(
    client: Mapping[str, Any], reported: Mapping[TopicPartition, int], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The true end offset of each partition, given the broker's (short) LATEST answer."""
    result = dict(reported)
    pending = {tp for tp, offset in reported.items() if offset > 0}
    if not pending:
        return result
    reader = AIOKafkaConsumer(
        **client,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await reader.start()
    try:
        reader.assign(sorted(pending))
        for tp in pending:
            # The newest batch starts at reported - 1: fetch it and read the high watermark.
            reader.seek(tp, reported[tp] - 1)
        async with asyncio.timeout(timeout_s):
            while pending:
                await reader.getmany(*pending, timeout_ms=200)
                for tp in list(pending):
                    highwater = reader.highwater(tp)
                    if highwater is not None:
                        result[tp] = max(highwater, reported[tp])
                        pending.discard(tp)
    finally:
        await reader.stop()
    return result


def install_end_offsets_correction(client: Mapping[str, Any]) -> None:
    """Patch ``AIOKafkaConsumer.end_offsets`` in this process (idempotent). ``client``:
    how to connect (``workers.kafka_auth.client_options``)."""
    global _ORIGINAL
    if _ORIGINAL is not None:
        return
    original: EndOffsets = AIOKafkaConsumer.end_offsets
    _ORIGINAL = original

    async def corrected(
        self: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return await high_watermarks(client, await original(self, partitions))

    AIOKafkaConsumer.end_offsets = corrected


def uninstall_end_offsets_correction() -> None:
    global _ORIGINAL
    if _ORIGINAL is not None:
        AIOKafkaConsumer.end_offsets = _ORIGINAL
        _ORIGINAL = None
