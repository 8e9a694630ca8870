"""TikTok tokens per shop, shared by every enricher replica through ``tiktok.tokens.v1``.

The topic is compacted and keyed by shop id (``*``: the default tokens of the settings,
which serve every shop without its own). Each record holds one shop's tokens, encrypted
with ``PARCELFLOW_TIKTOK_TOKEN_KEY``; the latest record of a key is the shop's tokens.
Every replica reads the whole topic at start and follows it (``TokenTopic``), so a
refresh by one replica, or `parcelflow tokens set` by an operator, reaches every replica
within a fetch.

Who refreshes: only the replica whose webhooks consumer owns the key's partition of
``tiktok.webhooks.v1`` (the one that handles the shop's webhooks), so one refresh per shop
happens at a time without a lock; the rule is in ``workers/tiktok/client.py``. Why this
design (and not a lock or a database): docs/tokens.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from schemas.codec import decode, encode
from schemas.tokens import SealedTokens
from schemas.topics import TOKENS
from workers.errors import ConfigError
from workers.kafka import Topics, behind, groupless_consumer, make_producer, start_on_all
from workers.retry import backoff_delay
from workers.settings import TikTokWorkerSettings

log = structlog.get_logger(__name__)

ANY_SHOP = "*"
WRITE_FOR_S = 120.0  # a refreshed token's write is retried this long before the worker exits


class ShopAuth(BaseModel):
    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    refresh_token: SecretStr
    shop_cipher: str = ""
    access_expires_at: int = 0  # unix seconds; 0: unknown
    refresh_expires_at: int = 0
    unauthorized: str = ""  # why the shop must authorize the app again; "" while it is fine

    def revealed(self) -> dict[str, Any]:
        data = self.model_dump()
        data["access_token"] = self.access_token.get_secret_value()
        data["refresh_token"] = self.refresh_token.get_secret_value()
        return data

    def needs_refresh(self, before_s: float, now: float) -> bool:
        return self.access_expires_at > 0 and now >= self.access_expires_at - before_s

    def same_tokens(self, other: ShopAuth) -> bool:
        return self.access_token.get_secret_value() == other.access_token.get_secret_value()


class TokenKeyMissing(ConfigError):
    pass


class Sealer:
    """Seals tokens for the topic (Fernet: AES-128-CBC with HMAC-SHA256) and opens them."""

    def __init__(self, key: SecretStr) -> None:
        raw = key.get_secret_value()
        if not raw:
            raise TokenKeyMissing(
                "PARCELFLOW_TIKTOK_TOKEN_KEY must be set: it encrypts the shops' tokens in "
                "tiktok.tokens.v1 (`parcelflow tokens key` makes one)"
            )
        try:
            self.fernet = Fernet(raw.encode())
        except ValueError:
            raise TokenKeyMissing(
                "PARCELFLOW_TIKTOK_TOKEN_KEY is not a Fernet key (32 url-safe base64-encoded "
                "bytes: `parcelflow tokens key` makes one)"
            ) from None

    def seal(self, key: str, auth: ShopAuth, writer: str) -> SealedTokens:
        sealed = self.fernet.encrypt(orjson.dumps(auth.revealed())).decode()
        return SealedTokens(shop_key=key, sealed=sealed, written_at_ms=now_ms(), writer=writer)

    def open(self, record: SealedTokens) -> ShopAuth | None:
        try:
            return ShopAuth.model_validate_json(self.fernet.decrypt(record.sealed.encode()))
        except (InvalidToken, ValidationError):
            return None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TokenStore:
    """The tokens every replica knows, newest first; ``changed`` wakes who waits for a
    write of another replica."""

    def __init__(self, defaults: dict[str, ShopAuth] | None = None) -> None:
        self.shops: dict[str, ShopAuth] = dict(defaults or {})
        self.changed = asyncio.Condition()
        self.write: Callable[[str, ShopAuth], Awaitable[None]] | None = None

    def get(self, shop_id: str) -> tuple[str, ShopAuth] | None:
        """The entry that serves ``shop_id`` (its own, else ``*``)."""
        for key in (shop_id, ANY_SHOP):
            if key in self.shops:
                return key, self.shops[key]
        return None

    async def learn(self, key: str, auth: ShopAuth) -> None:
        self.shops[key] = auth
        async with self.changed:
            self.changed.notify_all()

    async def put(self, key: str, auth: ShopAuth) -> None:
        """Use ``key``'s tokens here at once, and write them where every replica reads
        them (retried while the broker is away: a refreshed token must not be lost)."""
        await self.learn(key, auth)
        if self.write is not None:
            await self.write(key, auth)

    async def replaced(self, key: str, stale: ShopAuth, timeout_s: float) -> ShopAuth | None:
        """Tokens of ``key`` other than ``stale``, written within ``timeout_s``, or None."""

        def other() -> bool:
            current = self.shops.get(key)
            return current is not None and not current.same_tokens(stale)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self.changed:
                await self.changed.wait_for(other)
        return self.shops[key] if other() else None


class TokenTopic:
    """Reads ``tiktok.tokens.v1`` into a TokenStore and follows it; writes to it."""

    def __init__(self, settings: TikTokWorkerSettings, store: TokenStore, writer: str) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.topic = Topics(settings)(TOKENS)
        self.sealer = Sealer(settings.tiktok_token_key)
        self.consumer = groupless_consumer(settings)
        self.producer: AIOKafkaProducer | None = None
        self.follower: asyncio.Task[None] | None = None

    async def start(self, producer: AIOKafkaProducer) -> None:
        """Read every record to the end (the tokens as of now), then follow new ones."""
        self.producer = producer
        tps = await start_on_all(self.consumer, self.topic)
        await self.consumer.seek_to_beginning(*tps)
        ends = await self.consumer.end_offsets(tps)
        while await behind(self.consumer, ends):
            await self.take(await self.consumer.getmany(timeout_ms=500))
        self.store.write = self.send
        self.follower = asyncio.create_task(self.follow(), name="tokens")
        log.info("tiktok_tokens_loaded", shops=sorted(self.store.shops))

    async def follow(self) -> None:
        while True:
            await self.take(await self.consumer.getmany(timeout_ms=1_000))

    async def take(self, batches: dict[TopicPartition, list[Any]]) -> None:
        for messages in batches.values():
            for message in messages:
                record = decode(SealedTokens, message.value)
                auth = self.sealer.open(record) if isinstance(record, SealedTokens) else None
                if auth is None:
                    log.error("tiktok_tokens_unreadable", offset=message.offset)
                    continue
                assert isinstance(record, SealedTokens)  # noqa: S101 (opened above)
                await self.store.learn(record.shop_key, auth)

    async def send(self, key: str, auth: ShopAuth) -> None:
        assert self.producer is not None  # noqa: S101 (started first)
        value = encode(self.sealer.seal(key, auth, self.writer))
        deadline = time.monotonic() + WRITE_FOR_S
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.producer.send_and_wait(self.topic, value, key=key.encode())
            except KafkaError as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("tiktok_tokens_write_retry", error=type(exc).__name__)
                await asyncio.sleep(backoff_delay(attempt, base_s=0.5, max_s=5.0))
            else:
                return

    async def stop(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            await asyncio.gather(self.follower, return_exceptions=True)
        await self.consumer.stop()


def defaults_of(settings: TikTokWorkerSettings) -> dict[str, ShopAuth]:
    """The tokens of the settings, as the ``*`` entry (none if they are empty)."""
    if not (
        settings.tiktok_access_token.get_secret_value()
        or settings.tiktok_refresh_token.get_secret_value()
    ):
        return {}
    return {
        ANY_SHOP: ShopAuth(
            access_token=settings.tiktok_access_token,
            refresh_token=settings.tiktok_refresh_token,
            shop_cipher=settings.tiktok_shop_cipher,
        )
    }


def read_token_file(path: Path) -> dict[str, ShopAuth]:
    """The shops of a token file of earlier versions (``{"shops": {id: {...}}}``)."""
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    return {key: ShopAuth.model_validate(entry) for key, entry in raw.get("shops", {}).items()}


async def import_missing(store: TokenStore, found: dict[str, ShopAuth], why: str) -> list[str]:
    """Write every entry of ``found`` the topic does not know; the keys written."""
    missing = {key: auth for key, auth in found.items() if key not in store.shops}
    for key, auth in missing.items():
        await store.put(key, auth)
    if missing:
        log.info("tiktok_tokens_imported", shops=sorted(missing), source=why)
    return sorted(missing)


@contextlib.asynccontextmanager
async def shared_tokens(settings: TikTokWorkerSettings, writer: str) -> AsyncIterator[TokenStore]:
    """The tokens of the topic, for a tool: read to the end, writable, then closed."""
    store = TokenStore()
    topic = TokenTopic(settings, store, writer)
    producer = make_producer(settings)
    await producer.start()
    try:
        await topic.start(producer)
        yield store
    finally:
        await topic.stop()
        await producer.stop()
