"""TikTok Shop Open API client: signed requests, tokens per shop, rate limit per shop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import aiohttp
import orjson
import structlog
from aiolimiter import AsyncLimiter
from pydantic import SecretStr

from workers.errors import ApiError, VendorCode, http_code, retry_after_seconds
from workers.retry import backoff_delay
from workers.settings import TikTokSettings
from workers.tiktok import codes, wire
from workers.tiktok.codes import Verdict
from workers.tiktok.signing import api_signature
from workers.tiktok.tokens import ShopAuth, TokenStore

log = structlog.get_logger(__name__)


class TikTokCode(StrEnum):
    """What went wrong in a TikTok call, beside TikTok's own codes (``VendorCode``)."""

    SHOP_UNAUTHORIZED = "shop_unauthorized"  # the seller must authorize the app again
    CONNECTION = "connection"  # no answer at all
    REFRESH = "refresh"  # a token refresh got no usable answer (retried)
    REFRESH_ELSEWHERE = "refresh_elsewhere"  # another replica refreshes this shop's tokens


ACCESS_TOKEN_EXPIRED = VendorCode(str(wire.ACCESS_TOKEN_EXPIRED))


class TikTokError(ApiError):
    """A failed TikTok call. ``verdict``: what TikTok's reference says to do with its answer
    code (``codes.py``); ``request_id``: TikTok's id of the call, which its support asks
    for (in the message too, so that it reaches logs and failure records)."""

    def __init__(
        self,
        message: str,
        *,
        verdict: Verdict | None = None,
        request_id: str = "",
        **kwargs: Any,
    ) -> None:
        if request_id:
            message = f"{message} (TikTok request_id {request_id})"
        super().__init__(message, **kwargs)
        if verdict is None and isinstance(self.code, VendorCode) and self.code.isdigit():
            verdict = codes.verdict(int(self.code))
        self.verdict = verdict
        self.request_id = request_id


class ShopUnauthorized(TikTokError):
    """The shop's refresh token was refused: the seller must authorize the app again."""

    def __init__(self, shop_id: str, reason: str, request_id: str = "") -> None:
        super().__init__(
            f"shop {shop_id} must authorize the app again: {reason}",
            code=TikTokCode.SHOP_UNAUTHORIZED,
            retriable=False,
            request_id=request_id,
        )
        self.shop_id = shop_id
        self.reason = reason


class TikTokClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: TikTokSettings,
        store: TokenStore,
        owns: Callable[[str], bool] = lambda key: True,
    ) -> None:
        self.http = http
        self.settings = settings
        self.store = store
        self.owns = owns  # whether this replica refreshes the tokens of a key
        self.timeout = aiohttp.ClientTimeout(total=settings.tiktok_timeout_s)
        self.qps = settings.tiktok_rate_limit_qps  # this process's share (budget.py)
        self._limiters: dict[tuple[str, str], AsyncLimiter] = {}
        self._refresh_locks: dict[str, asyncio.Lock] = {}

    def auth(self, shop_id: str) -> tuple[str, ShopAuth]:
        found = self.store.get(shop_id)
        if found is None:
            raise ShopUnauthorized(shop_id, "no tokens for this shop (parcelflow tokens set)")
        key, auth = found
        if auth.unauthorized:
            raise ShopUnauthorized(shop_id, auth.unauthorized)
        return key, auth

    def limiter(self, shop_id: str, api: str) -> AsyncLimiter:
        """The rate limiter of one API of a shop in this process: TikTok's "Rate limits"
        page gives each app 50 calls a second *for each API*, counted per app and shop."""
        return self._limiters.setdefault((shop_id, api), AsyncLimiter(self.qps, 1.0))

    def share(self, qps: float) -> None:
        """Call each shop at most ``qps`` a second from now on (calls already waiting in
        a limiter finish their wait at the old rate)."""
        if qps != self.qps:
            self.qps = qps
            self._limiters = {}

    async def request(
        self,
        shop_id: str,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes = b"",
        api: str = "",
    ) -> dict[str, Any]:
        """One signed call for a shop under the rate limit of its API (``api``: the path
        as documented, ids left as placeholders; ``path`` by default); its ``data``. The
        shop's token is refreshed first when due (by the replica that owns it), and once
        more when TikTok answers that it expired. An answer that says the shop's
        authorization needs a person raises ShopUnauthorized. Raises TikTokError;
        retrying is the caller's."""
        refreshed = False
        while True:
            key, auth = self.auth(shop_id)
            due = auth.needs_refresh(self.settings.tiktok_refresh_before_s, time.time())
            if due and self.owns(key):  # another replica's still-valid token is used as is
                await self.refresh_tokens(shop_id, stale=auth)
                key, auth = self.auth(shop_id)
            try:
                async with self.limiter(shop_id, api or path):
                    extra = {**params, "shop_cipher": auth.shop_cipher}
                    return await self._call(method, path, extra, auth, body)
            except TikTokError as err:
                if err.verdict is Verdict.SHOP:
                    reason = f"TikTok answered {err.code} ({codes.meaning(int(err.code))})"
                    raise ShopUnauthorized(shop_id, reason, err.request_id) from err
                if err.code != ACCESS_TOKEN_EXPIRED or refreshed:
                    raise
                refreshed = True
                await self.refresh_tokens(shop_id, stale=auth)

    async def get_orders(self, shop_id: str, order_ids: list[str]) -> list[dict[str, Any]]:
        """Get Order Detail for up to 50 ids of one shop; retries what can be retried."""
        max_attempts = self.settings.tiktok_max_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                params = {"ids": ",".join(order_ids)}
                data = await self.request(shop_id, "GET", wire.ORDER_DETAIL_PATH, params)
            except TikTokError as err:
                if not err.retriable or attempt >= max_attempts:
                    raise
                delay = backoff_delay(
                    attempt, base_s=0.2, max_s=10.0, retry_after_s=err.retry_after_s
                )
                log.warning(
                    "tiktok_retry",
                    shop_id=shop_id,
                    code=err.code,
                    request_id=err.request_id,
                    attempt=attempt,
                    delay_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
            else:
                orders: list[dict[str, Any]] = data.get("orders") or []
                return orders

    async def _call(
        self, method: str, path: str, extra: Mapping[str, str], auth: ShopAuth, body: bytes = b""
    ) -> dict[str, Any]:
        params = {
            "app_key": self.settings.tiktok_app_key,
            "timestamp": str(int(time.time())),
            **extra,
        }
        secret = self.settings.tiktok_app_secret.get_secret_value()
        params["sign"] = api_signature(secret, path, params, body)
        headers = {
            wire.ACCESS_TOKEN_HEADER: auth.access_token.get_secret_value(),
            "content-type": "application/json",
        }
        url = f"{self.settings.tiktok_api_base}{path}"
        try:
            async with self.http.request(
                method, url, params=params, data=body or None, headers=headers, timeout=self.timeout
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TikTokError(
                f"{type(exc).__name__}: {exc}", code=TikTokCode.CONNECTION, retriable=True
            ) from exc
        if status == 429 or status >= 500:
            raise TikTokError(
                f"HTTP {status}",
                code=http_code(status),
                retriable=True,
                status=status,
                retry_after_s=retry_after,
            )
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TikTokError(
                f"HTTP {status}, body is not JSON",
                code=http_code(status),
                retriable=False,
                status=status,
            ) from exc
        try:
            code = int(payload.get("code", -1))
        except (TypeError, ValueError):
            code = -1
        if code != wire.OK:
            verdict = codes.verdict(code)
            raise TikTokError(
                str(payload.get("message", ""))[:500],
                code=VendorCode(str(code)),
                verdict=verdict,
                request_id=str(payload.get("request_id") or "")[:64],
                retriable=verdict in codes.RETRIABLE,
                status=status,
                retry_after_s=retry_after,
            )
        data: dict[str, Any] = payload.get("data") or {}
        return data

    async def refresh_tokens(self, shop_id: str, stale: ShopAuth) -> None:
        """Trade the shop's refresh token for new tokens (one refresh per shop at a time:
        only the replica that owns the key refreshes, one task at a time).

        A refused refresh (a refresh token is single-use) first waits for another
        replica's new tokens; without any, it marks the shop unauthorized (for every
        replica) and raises ShopUnauthorized.
        """
        lock = self._refresh_locks.setdefault(shop_id, asyncio.Lock())
        async with lock:
            key, current = self.auth(shop_id)
            if not current.same_tokens(stale):
                return  # refreshed while we waited (by us, or by an operator's new tokens)
            if not self.owns(key):  # the owner refreshes: wait a little for its write
                wait_s = self.settings.tiktok_refresh_race_wait_s
                if await self.store.replaced(key, current, wait_s) is not None:
                    return
                raise TikTokError(
                    "the shop's tokens are refreshed by the enricher replica that handles "
                    "its webhooks",
                    code=TikTokCode.REFRESH_ELSEWHERE,
                    retriable=True,
                )
            payload = await self.exchange(current)
            if int(payload.get("code", -1)) != wire.OK:
                wait_s = self.settings.tiktok_refresh_race_wait_s
                if await self.store.replaced(key, current, wait_s) is not None:
                    log.warning("tiktok_refresh_race_lost", shop_id=shop_id)
                    return  # another replica refreshed first: its tokens are in use now
                reason = f"refresh refused: {payload.get('code')} {payload.get('message', '')}"
                await self.store.put(key, current.model_copy(update={"unauthorized": reason}))
                log.error("tiktok_shop_unauthorized", shop_id=shop_id, reason=reason)
                raise ShopUnauthorized(shop_id, reason)
            data = payload["data"]
            await self.store.put(
                key,
                ShopAuth(
                    access_token=SecretStr(data["access_token"]),
                    refresh_token=SecretStr(data["refresh_token"]),
                    shop_cipher=current.shop_cipher,
                    access_expires_at=int(data.get("access_token_expire_in", 0)),
                    refresh_expires_at=int(data.get("refresh_token_expire_in", 0)),
                ),
            )
            log.info(
                "tiktok_token_refreshed",
                shop_id=shop_id,
                expires_at=int(data.get("access_token_expire_in", 0)),
            )

    async def exchange(self, current: ShopAuth) -> dict[str, Any]:
        """TikTok's answer to a refresh with ``current``'s refresh token (any code), or a
        retriable TikTokError when there is no usable answer."""
        params = {
            "app_key": self.settings.tiktok_app_key,
            "app_secret": self.settings.tiktok_app_secret.get_secret_value(),
            "refresh_token": current.refresh_token.get_secret_value(),
            "grant_type": "refresh_token",
        }
        url = f"{self.settings.tiktok_auth_base}{wire.TOKEN_REFRESH_PATH}"
        try:
            async with self.http.get(url, params=params, timeout=self.timeout) as response:
                status = response.status
                payload = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise TikTokError(
                f"token refresh failed: {type(exc).__name__}",
                code=TikTokCode.REFRESH,
                retriable=True,
            ) from exc
        if status == 429 or status >= 500:
            raise TikTokError(
                f"token refresh: HTTP {status}",
                code=TikTokCode.REFRESH,
                retriable=True,
                status=status,
            )
        answer: dict[str, Any] = payload
        return answer
