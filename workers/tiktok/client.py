"""TikTok Shop Open API client: signed requests, token refresh, batched order detail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
import structlog
from pydantic import SecretStr

from workers.errors import ApiError, retry_after_seconds
from workers.retry import backoff_delay
from workers.settings import Settings
from workers.tiktok import wire
from workers.tiktok.signing import api_signature

log = structlog.get_logger(__name__)


class TikTokError(ApiError):
    pass


class Tokens:
    """The shop's access and refresh tokens; refreshed in place."""

    def __init__(self, access: SecretStr, refresh: SecretStr) -> None:
        self.access = access
        self.refresh = refresh
        self.access_expires_at = 0.0


class TikTokClient:
    def __init__(self, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.http = http
        self.settings = settings
        self.tokens = Tokens(settings.tiktok_access_token, settings.tiktok_refresh_token)
        self._refresh_lock = asyncio.Lock()
        self.timeout = aiohttp.ClientTimeout(total=settings.tiktok_timeout_s)

    async def get_orders(self, order_ids: list[str], max_attempts: int = 8) -> list[dict[str, Any]]:
        """Get Order Detail for up to 50 ids; retries what can be retried."""
        params = {"ids": ",".join(order_ids), "shop_cipher": self.settings.tiktok_shop_cipher}
        attempt = 0
        while True:
            attempt += 1
            try:
                data = await self._call("GET", wire.ORDER_DETAIL_PATH, params)
            except TikTokError as err:
                if err.code == str(wire.ACCESS_TOKEN_EXPIRED) and attempt < max_attempts:
                    await self.refresh_tokens()
                    continue
                if not err.retriable or attempt >= max_attempts:
                    raise
                delay = backoff_delay(
                    attempt, base_s=0.2, max_s=10.0, retry_after_s=err.retry_after_s
                )
                log.warning("tiktok_retry", code=err.code, attempt=attempt, delay_s=round(delay, 2))
                await asyncio.sleep(delay)
            else:
                orders: list[dict[str, Any]] = data.get("orders") or []
                return orders

    async def _call(
        self, method: str, path: str, extra: Mapping[str, str], body: bytes = b""
    ) -> dict[str, Any]:
        params = {
            "app_key": self.settings.tiktok_app_key,
            "timestamp": str(int(time.time())),
            **extra,
        }
        secret = self.settings.tiktok_app_secret.get_secret_value()
        params["sign"] = api_signature(secret, path, params, body)
        headers = {
            wire.ACCESS_TOKEN_HEADER: self.tokens.access.get_secret_value(),
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
                f"{type(exc).__name__}: {exc}", code="connection", retriable=True
            ) from exc
        if status == 429 or status >= 500:
            raise TikTokError(
                f"HTTP {status}",
                code=f"http_{status}",
                retriable=True,
                status=status,
                retry_after_s=retry_after,
            )
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TikTokError(
                f"HTTP {status}, body is not JSON",
                code=f"http_{status}",
                retriable=False,
                status=status,
            ) from exc
        code = int(payload.get("code", -1))
        if code != wire.OK:
            raise TikTokError(
                str(payload.get("message", "")),
                code=str(code),
                retriable=code in (wire.RATE_LIMITED, wire.ACCESS_TOKEN_EXPIRED),
                status=status,
                retry_after_s=retry_after,
            )
        data: dict[str, Any] = payload.get("data") or {}
        return data

    async def refresh_tokens(self) -> None:
        """Trade the refresh token for a new access token (one refresh at a time)."""
        stale = self.tokens.access
        async with self._refresh_lock:
            if self.tokens.access is not stale:
                return  # another caller refreshed while we waited
            params = {
                "app_key": self.settings.tiktok_app_key,
                "app_secret": self.settings.tiktok_app_secret.get_secret_value(),
                "refresh_token": self.tokens.refresh.get_secret_value(),
                "grant_type": "refresh_token",
            }
            url = f"{self.settings.tiktok_auth_base}{wire.TOKEN_REFRESH_PATH}"
            try:
                async with self.http.get(url, params=params, timeout=self.timeout) as response:
                    payload = orjson.loads(await response.read())
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                raise TikTokError(
                    f"token refresh failed: {exc}", code="refresh", retriable=True
                ) from exc
            if int(payload.get("code", -1)) != wire.OK:
                raise TikTokError(
                    f"token refresh refused: {payload.get('message', '')}",
                    code=str(payload.get("code")),
                    retriable=False,
                )
            data = payload["data"]
            self.tokens.access = SecretStr(data["access_token"])
            self.tokens.refresh = SecretStr(data["refresh_token"])
            self.tokens.access_expires_at = float(data.get("access_token_expire_in", 0))
            log.info("tiktok_token_refreshed", expires_at=self.tokens.access_expires_at)
