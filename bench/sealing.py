"""Buyer data sealing: what sealing and opening a recipient costs per order.

    .venv/bin/python -m bench.sealing

Against a baseline measured in the same run: encoding and decoding the same address as
JSON (what the pipeline did with it in clear). Also the first open of a data key (its
unwrap by the key service; the local KEK here, an HSM or KMS call in production), paid
once per data key and labeler replica. Prints one line per measure and a last line
``sealing: seal_us=A open_us=B baseline_us=C unwrap_local_us=D``.

The helpers seal the benchmarks' jobs and orders under a data key of their own and
publish it wrapped on ``buyer.keys.v1``, so that a labeler opens them as in production.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any

import orjson

from schemas.codec import encode
from schemas.common import Address
from schemas.topics import BUYER_KEYS
from workers.buyer import keys
from workers.buyer.kek import LocalKek, key_service
from workers.buyer.keys import open_with, parts_of, seal_with
from workers.kafka import Topics, make_producer
from workers.settings import Settings

KEY_ID = "be7c" * 8
KEY = os.urandom(32)
SHOP = "bench"
ADDRESS = Address(
    name="Bench Buyer", phone="(+1)555-0100", street1="1 Main St", city="Austin", state="TX"
)
# what a bench's labeler and receiver run with: a local KEK of the run's own
SETTINGS: dict[str, Any] = {
    "buyer_kek": "local",
    "buyer_local_key": base64.b64encode(os.urandom(32)).decode(),
}


def sealed(order_id: str) -> str:
    return seal_with(KEY_ID, KEY, order_id, ADDRESS)


async def publish_key(settings: Settings) -> None:
    """The benchmarks' data key on buyer.keys.v1, wrapped by the settings' KEK."""
    kek = key_service(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = Topics(settings)(BUYER_KEYS)
        await keys.publish_key(producer, topic, kek, SHOP, KEY_ID, KEY, "bench")
    finally:
        await producer.stop()
        await kek.close()


def per_call_us(fn: Any, rounds: int) -> float:
    started = time.perf_counter()
    for n in range(rounds):
        fn(n)
    return (time.perf_counter() - started) / rounds * 1e6


def main(rounds: int = 20_000) -> None:
    texts = [sealed(f"O{n}") for n in range(rounds)]
    plain = [encode(ADDRESS) for _ in range(rounds)]
    seal_us = per_call_us(lambda n: sealed(f"O{n}"), rounds)
    open_us = per_call_us(lambda n: open_with(parts_of(texts[n]), KEY, f"O{n}"), rounds)
    baseline_us = per_call_us(
        lambda n: Address.model_validate(orjson.loads(plain[n])) and encode(ADDRESS), rounds
    )
    kek = LocalKek(os.urandom(32))

    async def unwraps() -> float:
        wrapped = await kek.wrap(KEY, "bench/key")
        started = time.perf_counter()
        for _ in range(1000):
            await kek.unwrap(wrapped, "bench/key")
        return (time.perf_counter() - started) / 1000 * 1e6

    unwrap_us = asyncio.run(unwraps())
    print(f"seal one recipient (AES-256-GCM, JSON):   {seal_us:7.1f} us")
    print(f"open one recipient:                        {open_us:7.1f} us")
    print(f"baseline, the same address as JSON in clear: {baseline_us:5.1f} us (encode+decode)")
    print(f"unwrap a data key, local KEK (once per key): {unwrap_us:5.1f} us")
    print(
        f"sealing: seal_us={seal_us:.1f} open_us={open_us:.1f} baseline_us={baseline_us:.1f} "
        f"unwrap_local_us={unwrap_us:.1f}"
    )


if __name__ == "__main__":
    main()
