"""Fake TikTok Shop Open API: Get Order Detail and token refresh, checked like TikTok does."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from workers.simulator.faults import FaultQueue
from workers.tiktok import wire
from workers.tiktok.signing import verify_api_signature

TIMESTAMP_PAST_S = 300
TIMESTAMP_FUTURE_S = 30


@dataclass
class TikTokState:
    app_key: str
    app_secret: str
    access_token: str
    refresh_token: str
    shop_cipher: str
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    refreshes: int = 0
    rejected_signatures: int = 0


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


async def order_detail(
    request: web.Request, state: TikTokState, faults: FaultQueue
) -> web.Response:
    state.calls += 1
    fault = faults.next("tiktok")
    if fault is not None:
        await asyncio.sleep(fault.delay_s)
        if fault.status != 200 or fault.code is not None:
            headers = (
                {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            )
            if fault.code is not None:
                return web.json_response(
                    {"code": fault.code, "message": fault.message, "request_id": "", "data": {}},
                    status=fault.status,
                    headers=headers,
                )
            return web.Response(status=fault.status, headers=headers)
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
    if request.headers.get(wire.ACCESS_TOKEN_HEADER) != state.access_token:
        return answer(wire.ACCESS_TOKEN_EXPIRED, "access token expired")
    if params.get("shop_cipher") != state.shop_cipher:
        return answer(wire.BAD_CREDENTIALS, "invalid shop_cipher")
    ids = [i for i in params.get("ids", "").split(",") if i]
    if not ids or len(ids) > 50:
        return answer(36009003, "ids must hold 1 to 50 order ids")
    found = [state.orders[i] for i in ids if i in state.orders]
    return answer(wire.OK, "Success", {"orders": found})


async def token_refresh(request: web.Request, state: TikTokState) -> web.Response:
    q = request.query
    if q.get("app_key") != state.app_key or q.get("app_secret") != state.app_secret:
        return answer(wire.BAD_CREDENTIALS, "invalid app credentials")
    if q.get("refresh_token") != state.refresh_token or q.get("grant_type") != "refresh_token":
        return answer(36004005, "invalid refresh token")
    state.refreshes += 1
    state.access_token = f"TTP_{secrets.token_urlsafe(24)}"
    state.refresh_token = f"TTP_{secrets.token_urlsafe(24)}"
    now = int(time.time())
    return answer(
        wire.OK,
        "success",
        {
            "access_token": state.access_token,
            "access_token_expire_in": now + 7 * 86400,
            "refresh_token": state.refresh_token,
            "refresh_token_expire_in": now + 365 * 86400,
            "open_id": "sim",
            "seller_name": "parcelflow demo",
        },
    )
