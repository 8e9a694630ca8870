"""The only module that calls Shipium over HTTP."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import orjson

from schemas.common import Address
from schemas.label import LabelJob
from workers.errors import retry_after_seconds
from workers.labeler.shipium.request import LABEL_PATH, METHOD, build_label_request
from workers.labeler.shipium.response import (
    LabelResponse,
    ShipiumError,
    parse_error,
    parse_label_response,
)
from workers.settings import Settings


class ShipiumClient:
    def __init__(self, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.http = http
        self.url = f"{settings.shipium_base_url}{LABEL_PATH}"
        # HTTP Basic with the API key as the user and no password.
        key = settings.shipium_api_key.get_secret_value()
        self.headers = {
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
            "content-type": "application/json",
        }
        self.timeout = aiohttp.ClientTimeout(total=settings.shipium_timeout_s)
        self.ship_from: Address = settings.ship_from

    async def create_label(self, job: LabelJob) -> LabelResponse:
        body = orjson.dumps(build_label_request(job, self.ship_from))
        try:
            async with self.http.request(
                METHOD,
                self.url,
                data=body,
                timeout=self.timeout,
                headers=self.headers,
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise ShipiumError("label call timed out", code="timeout", retriable=True) from exc
        except aiohttp.ClientError as exc:
            raise ShipiumError(
                f"{type(exc).__name__}: {exc}", code="connection", retriable=True
            ) from exc
        payload: dict[str, Any] | None
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        if status >= 400:
            raise parse_error(status, payload, retry_after)
        if payload is None:
            raise ShipiumError(
                f"HTTP {status} without a JSON body", code="bad_response", retriable=True
            )
        return parse_label_response(payload, len(job.parcels))
