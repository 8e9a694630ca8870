"""Buyer data, sealed where it enters and opened only where a label is bought.

The key hierarchy:

- a key-encryption key (KEK) in a key service (``workers.buyer.kek``: PKCS#11, AWS KMS);
- data keys (AES-256): each writer (a receiver or enricher replica) makes its own per
  shop, uses it for ``PARCELFLOW_BUYER_KEY_ROTATE_S`` at most, and publishes it wrapped
  by the KEK on ``buyer.keys.v1`` (record key ``<shop id>/<key id>``) before its first
  use;
- a recipient, sealed with AES-256-GCM under a data key and bound to its order id (the
  associated data): ``pf1.<key id>.<nonce>.<ciphertext>``. Moved to another order, it
  does not open.

Only the labeler opens (``Opener``): it follows ``buyer.keys.v1`` and
``buyer.erasures.v1`` and asks the key service to unwrap a data key when a job needs it.
An erasure tombstones the data keys of a shop (crypto-shredding: every sealed copy in
every topic, dead letter and backup is then unreadable), or names one order, whose jobs
the labeler then ends as ``erased``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import Counter, Histogram

from schemas.buyer import DataKey, Erasure
from schemas.codec import decode, encode
from schemas.common import Address, now_ms
from schemas.topics import BUYER_KEYS, ERASURES
from workers.buyer.kek import KeyService, UnwrapFailed, Wrapped
from workers.buyer.registry import Erasures
from workers.kafka import Topics, groupless_consumer
from workers.settings import BuyerDataSettings, KafkaSettings

log = structlog.get_logger(__name__)

VERSION = "pf1"
NONCE = 12
CACHE = 10_000  # unwrapped data keys an opener keeps in memory

KEYS_MADE = Counter("parcelflow_buyer_keys_made", "Data keys made and published (wrapped).")
SEALED = Counter("parcelflow_buyer_sealed", "Recipients sealed.")
OPENED = Counter("parcelflow_buyer_opened", "Recipients opened, by outcome.", ["outcome"])
UNWRAP_SECONDS = Histogram(
    "parcelflow_buyer_unwrap_seconds",
    "Time the key service took to unwrap a data key.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _aad(order_id: str, key_id: str) -> bytes:
    return f"{VERSION}/{key_id}/{order_id}".encode()


def wrap_context(shop_id: str, key_id: str) -> str:
    return f"{shop_id}/{key_id}"


def record_key(shop_id: str, key_id: str) -> bytes:
    return wrap_context(shop_id, key_id).encode()


def seal_with(key_id: str, key: bytes, order_id: str, recipient: Address) -> str:
    nonce = os.urandom(NONCE)
    sealed = AESGCM(key).encrypt(nonce, encode(recipient), _aad(order_id, key_id))
    return f"{VERSION}.{key_id}.{_b64(nonce)}.{_b64(sealed)}"


class Unreadable(ValueError):
    """A sealed value that is not one (or was changed): never a buyer's data in the text."""


@dataclass(frozen=True)
class SealedParts:
    key_id: str
    nonce: bytes
    ciphertext: bytes


def parts_of(sealed: str) -> SealedParts:
    version, key_id, nonce, ciphertext = [*sealed.split("."), "", "", ""][:4]
    if version != VERSION or len(key_id) != 32:
        raise Unreadable("not a sealed recipient")
    try:
        parts = SealedParts(key_id, _unb64(nonce), _unb64(ciphertext))
    except ValueError as exc:
        raise Unreadable("not a sealed recipient: bad base64") from exc
    if len(parts.nonce) != NONCE or len(parts.ciphertext) < 16:
        raise Unreadable("not a sealed recipient: wrong sizes")
    return parts


def open_with(parts: SealedParts, key: bytes, order_id: str) -> Address:
    try:
        plain = AESGCM(key).decrypt(parts.nonce, parts.ciphertext, _aad(order_id, parts.key_id))
    except InvalidTag as exc:
        raise Unreadable("the sealed recipient does not open for this order") from exc
    return Address.model_validate(orjson.loads(plain))


@dataclass
class _Current:
    key_id: str
    key: bytes
    made_at: float  # monotonic


class Sealer:
    """Seals recipients for one writer (a receiver or enricher replica)."""

    def __init__(
        self,
        settings: BuyerDataSettings,
        kafka: KafkaSettings,
        kek: KeyService,
        producer: AIOKafkaProducer,
        writer: str,
    ) -> None:
        self.rotate_s = settings.buyer_key_rotate_s
        self.topic = Topics(kafka)(BUYER_KEYS)
        self.kek = kek
        self.producer = producer
        self.writer = writer
        self.current: dict[str, _Current] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def seal(self, shop_id: str, order_id: str, recipient: Address | None) -> str | None:
        if recipient is None:
            return None
        current = await self._key(shop_id)
        SEALED.inc()
        return seal_with(current.key_id, current.key, order_id, recipient)

    def _fresh(self, shop_id: str) -> _Current | None:
        current = self.current.get(shop_id)
        if current is not None and time.monotonic() - current.made_at < self.rotate_s:
            return current
        return None

    async def _key(self, shop_id: str) -> _Current:
        current = self._fresh(shop_id)
        if current is not None:
            return current
        async with self.locks.setdefault(shop_id, asyncio.Lock()):
            current = self._fresh(shop_id)
            if current is None:
                current = await self._make(shop_id)
                self.current[shop_id] = current
        return current

    async def _make(self, shop_id: str) -> _Current:
        """A new data key, published wrapped (and acknowledged) before its first use."""
        key, key_id = AESGCM.generate_key(256), uuid.uuid4().hex
        await publish_key(self.producer, self.topic, self.kek, shop_id, key_id, key, self.writer)
        KEYS_MADE.inc()
        return _Current(key_id, key, time.monotonic())


async def publish_key(
    producer: AIOKafkaProducer,
    topic: str,
    kek: KeyService,
    shop_id: str,
    key_id: str,
    key: bytes,
    writer: str,
) -> DataKey:
    """Wrap a data key and write it to ``buyer.keys.v1`` (acknowledged); its record."""
    wrapped = await kek.wrap(key, wrap_context(shop_id, key_id))
    record = DataKey(
        key_id=key_id,
        shop_id=shop_id,
        kek_id=wrapped.kek_id,
        wrapped=base64.b64encode(wrapped.blob).decode(),
        created_at_ms=now_ms(),
        writer=writer,
    )
    await producer.send_and_wait(topic, encode(record), key=record_key(shop_id, key_id))
    log.info("buyer_key_made", shop_id=shop_id, key_id=key_id, kek_id=wrapped.kek_id)
    return record


@dataclass(frozen=True)
class Erased:
    """Why a recipient cannot be opened any more."""

    reason: str


class Opener:
    """Opens sealed recipients (the labeler only). Reads ``buyer.keys.v1`` and
    ``buyer.erasures.v1`` whole at start, then follows them."""

    def __init__(self, settings: KafkaSettings, kek: KeyService) -> None:
        names = Topics(settings)
        self.keys_topic = names(BUYER_KEYS)
        self.erasures_topic = names(ERASURES)
        self.kek = kek
        self.consumer: AIOKafkaConsumer = groupless_consumer(settings)
        self.wrapped: dict[str, DataKey] = {}  # key id -> its record
        self.destroyed: set[str] = set()  # key ids tombstoned
        self.erasures = Erasures()
        self.unwrapped: OrderedDict[str, bytes] = OrderedDict()
        self.follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer.topics()
        tps = [
            TopicPartition(topic, p)
            for topic in (self.keys_topic, self.erasures_topic)
            for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        await self._read_to_end()
        self.follower = asyncio.create_task(self._follow(), name="buyer-keys")
        log.info("buyer_keys_loaded", keys=len(self.wrapped), destroyed=len(self.destroyed))

    async def stop(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            await asyncio.gather(self.follower, return_exceptions=True)
        await self.consumer.stop()
        await self.kek.close()

    async def _read_to_end(self) -> None:
        ends = await self.consumer.end_offsets(list(self.consumer.assignment()))
        for tp, end in ends.items():
            while await self.consumer.position(tp) < end:
                self._take(await self.consumer.getmany(tp, timeout_ms=500))

    async def _follow(self) -> None:
        while True:
            self._take(await self.consumer.getmany(timeout_ms=1_000))

    async def caught_up(self, timeout_s: float = 10.0) -> None:
        """Wait until the follower has read what the topics hold now."""
        tps = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any([await self.consumer.position(tp) < end for tp, end in ends.items()]):
            if time.monotonic() > deadline:
                raise TimeoutError("buyer.keys.v1 was not read to its end in time")
            await asyncio.sleep(0.05)

    def _take(self, batches: dict[TopicPartition, list[object]]) -> None:
        for tp, messages in batches.items():
            for message in messages:
                key = getattr(message, "key", None) or b""
                value = getattr(message, "value", None)
                if tp.topic == self.keys_topic:
                    key_id = key.decode(errors="replace").rpartition("/")[2]
                    if value is None:
                        self.destroyed.add(key_id)
                        self.wrapped.pop(key_id, None)
                        self.unwrapped.pop(key_id, None)
                        continue
                    record = decode(DataKey, value)
                    if isinstance(record, DataKey) and record.key_id not in self.destroyed:
                        self.wrapped[record.key_id] = record
                else:
                    erasure = decode(Erasure, value)
                    if isinstance(erasure, Erasure):
                        self.erasures.take(erasure)

    async def open(
        self, order_id: str, sealed: str | None, shop_id: str = ""
    ) -> Address | Erased | None:
        """The recipient, None if there is none, or Erased; raises Unreadable."""
        if self.erasures.covers(order_id, shop_id, now_ms()):
            OPENED.labels("erased").inc()
            return Erased("the order's buyer data was erased")
        if sealed is None:
            return None
        parts = parts_of(sealed)
        key = await self._key(parts.key_id)
        if isinstance(key, Erased):
            OPENED.labels("erased").inc()
            return key
        recipient = open_with(parts, key, order_id)
        OPENED.labels("opened").inc()
        return recipient

    async def _key(self, key_id: str) -> bytes | Erased:
        if key_id in self.unwrapped:
            self.unwrapped.move_to_end(key_id)
            return self.unwrapped[key_id]
        if key_id not in self.wrapped and key_id not in self.destroyed:
            await self.caught_up()  # made a moment ago: its record is on the topic
        record = self.wrapped.get(key_id)
        if record is None:
            return Erased("the data key it was sealed under is destroyed (erasure)")
        if self.erasures.covers("", record.shop_id, now_ms()):
            return Erased("the shop's buyer data was erased")
        started = time.perf_counter()
        try:
            wrapped = Wrapped(record.kek_id, base64.b64decode(record.wrapped))
            key = await self.kek.unwrap(wrapped, wrap_context(record.shop_id, key_id))
        except UnwrapFailed as exc:
            raise Unreadable(f"data key {key_id}: {exc}") from exc
        UNWRAP_SECONDS.observe(time.perf_counter() - started)
        self.unwrapped[key_id] = key
        while len(self.unwrapped) > CACHE:
            self.unwrapped.popitem(last=False)
        return key
