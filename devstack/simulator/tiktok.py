"""Fake TikTok Shop Open API: Get Order Detail and token refresh, checked like TikTok does."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devstack.simulator.faults import Fault, FaultQueue
from workers.tiktok import wire
from workers.tiktok.signing import verify_api_signature

TIMESTAMP_PAST_S = 300
TIMESTAMP_FUTURE_S = 30
INVALID_REFRESH_TOKEN = 36004005


@dataclass
class SimShop:
    """One authorized shop: its cipher and its current tokens."""

    cipher: str
    access_token: str
    refresh_token: str
    access_expires_at: float = 0.0  # unix seconds; 0: does not expire
    revoked: bool = False  # the seller deauthorized the app: refresh is refused
    call_times: list[float] = field(default_factory=list)  # when Get Order Detail was called


@dataclass
class TikTokState:
    app_key: str
    app_secret: str
    shops: dict[str, SimShop] = field(default_factory=dict)  # by shop cipher
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    refreshes: int = 0
    refused_refreshes: int = 0  # a used (single-use) or unknown refresh token
    rejected_signatures: int = 0
    token_ttl_s: float = 0.0  # access tokens of a refresh expire after this (0: 7 days)

    def add_shop(self, cipher: str, access_token: str, refresh_token: str) -> SimShop:
        self.shops[cipher] = SimShop(cipher, access_token, refresh_token)
        return self.shops[cipher]


def answer(
    code: int, message: str, data: dict[str, Any] | None = None, status: int = 200
) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "request_id": secrets.token_hex(8),
        "data": data or {},
    }
    return web.json_response(body, status=status)


async def injected(faults: FaultQueue, api: str) -> tuple[Fault | None, web.Response | None]:
    """The next scripted answer of ``api``: its fault, and the answer that replaces the
    real one (None: the call goes on, to do its work)."""
    fault = faults.next(api)
    if fault is None:
        return None, None
    await asyncio.sleep(fault.delay_s)
    if fault.after == "created" or (fault.status == 200 and fault.code is None):
        return fault, None
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.code is not None:
        body = {
            "code": fault.code,
            "message": fault.message,
            "request_id": f"sim{secrets.token_hex(8)}",
            "data": {},
        }
        return fault, web.json_response(body, status=fault.status, headers=headers)
    return fault, web.Response(status=fault.status, headers=headers)


async def checked(request: web.Request, state: TikTokState) -> SimShop | web.Response:
    """The shop of a signed Open API call, checked as TikTok checks it: app key,
    timestamp, signature over the raw body, shop cipher, access token."""
    params = dict(request.query)
    body = await request.read()
    if params.get("app_key") != state.app_key:
        return answer(wire.BAD_CREDENTIALS, "invalid app_key")
    try:
        skew = time.time() - int(params.get("timestamp", "0"))
    except ValueError:
        return answer(wire.BAD_CREDENTIALS, "invalid timestamp")
    if skew > TIMESTAMP_PAST_S or skew < -TIMESTAMP_FUTURE_S:
        return answer(wire.BAD_CREDENTIALS, "timestamp out of range")
    if not verify_api_signature(state.app_secret, request.path, params, body):
        state.rejected_signatures += 1
        return answer(wire.BAD_SIGN, "invalid sign")
    shop = state.shops.get(params.get("shop_cipher", ""))
    if shop is None:
        return answer(wire.BAD_CREDENTIALS, "invalid shop_cipher")
    shop.call_times.append(time.monotonic())
    expired = shop.access_expires_at and time.time() > shop.access_expires_at
    if request.headers.get(wire.ACCESS_TOKEN_HEADER) != shop.access_token or expired:
        return answer(wire.ACCESS_TOKEN_EXPIRED, "access token expired")
    return shop


async def admitted(
    request: web.Request, state: TikTokState, faults: FaultQueue, api: str
) -> tuple[Fault | None, SimShop | web.Response]:
    """The scripted fault of ``api``'s next call, and the call's shop or the answer that
    ends it (the scripted one, or TikTok's refusal of the call)."""
    fault, replaced = await injected(faults, api)
    if replaced is not None:
        return fault, replaced
    return fault, await checked(request, state)


async def order_detail(
    request: web.Request, state: TikTokState, faults: FaultQueue
) -> web.Response:
    state.calls += 1
    _, shop = await admitted(request, state, faults, "tiktok")
    if isinstance(shop, web.Response):
        return shop
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    if not ids or len(ids) > 50:
        return answer(36009003, "ids must hold 1 to 50 order ids")
    found = [state.orders[i] for i in ids if i in state.orders]
    return answer(wire.OK, "Success", {"orders": found})


async def token_refresh(request: web.Request, state: TikTokState) -> web.Response:
    q = request.query
    if q.get("app_key") != state.app_key or q.get("app_secret") != state.app_secret:
        return answer(wire.BAD_CREDENTIALS, "invalid app credentials")
    # a refresh token works once: the refresh replaces it (a used one is refused)
    shops = [s for s in state.shops.values() if s.refresh_token == q.get("refresh_token")]
    if not shops or q.get("grant_type") != "refresh_token":
        state.refused_refreshes += 1
        return answer(INVALID_REFRESH_TOKEN, "invalid refresh token")
    shop = shops[0]
    if shop.revoked:
        return answer(INVALID_REFRESH_TOKEN, "authorization revoked by the seller")
    state.refreshes += 1
    shop.access_token = f"TTP_{secrets.token_urlsafe(24)}"
    shop.refresh_token = f"TTP_{secrets.token_urlsafe(24)}"
    now = int(time.time())
    ttl = state.token_ttl_s or 7 * 86400.0
    shop.access_expires_at = time.time() + state.token_ttl_s if state.token_ttl_s else 0.0
    return answer(
        wire.OK,
        "success",
        {
            "access_token": shop.access_token,
            "access_token_expire_in": int(now + ttl),
            "refresh_token": shop.refresh_token,
            "refresh_token_expire_in": now + 365 * 86400,
            "open_id": "sim",
            "seller_name": "parcelflow demo",
        },
    )
