"""The only module that calls Shipium over HTTP."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import orjson

from schemas.common import Address
from schemas.label import LabelJob
from workers.errors import retry_after_seconds
from workers.labeler.codes import FailureCode
from workers.labeler.provider import LabelResponse
from workers.labeler.shipium.request import (
    LABEL_PATH,
    LOOKUP_PATH,
    METHOD,
    build_label_request,
)
from workers.labeler.shipium.response import ShipiumError, parse_error, parse_label_response
from workers.settings import LabelerSettings

IN_PROGRESS = 409


class ShipiumClient:
    looks_before_create = False  # an unclear answer is looked up by partnerShipmentId

    def __init__(self, http: aiohttp.ClientSession, settings: LabelerSettings) -> None:
        self.http = http
        self.base = settings.shipium_base_url
        # HTTP Basic with the API key as the user and no password.
        key = settings.shipium_api_key.get_secret_value()
        self.headers = {
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
            "content-type": "application/json",
        }
        self.timeout = aiohttp.ClientTimeout(total=settings.shipium_timeout_s)
        self.ship_from: Address = settings.ship_from
        self.formats = list(settings.label_formats)
        self.warehouses = settings.warehouses

    def request(self, job: LabelJob, recipient: Address | None = None) -> dict[str, Any]:
        """The request for this job: the ship-from address and fulfillment context of its
        warehouse (routing checked the warehouse is known), the TikTok Shop carrier unless
        the seller ships the order."""
        warehouse = self.warehouses.get(job.warehouse_id)
        return build_label_request(
            job,
            recipient,
            warehouse.ship_from if warehouse is not None else self.ship_from,
            label_formats=self.formats,
            fulfillment_context=warehouse.fulfillment_context if warehouse is not None else None,
            tiktok=job.shipping_type != "SELLER",
        )

    async def create_label(self, job: LabelJob, recipient: Address | None) -> LabelResponse:
        body = orjson.dumps(self.request(job, recipient))
        status, payload, retry_after = await self._call(METHOD, LABEL_PATH, body)
        if status >= 400:
            raise parse_error(status, payload, retry_after)
        if payload is None:
            raise ShipiumError(
                f"HTTP {status} without a JSON body", code=FailureCode.BAD_RESPONSE, retriable=True
            )
        return parse_label_response(payload, len(job.parcels))

    async def find_label(self, job: LabelJob) -> LabelResponse | None:
        """The label already made for this job's partnerShipmentId, or None."""
        path = LOOKUP_PATH.format(partner_shipment_id=job.job_id)
        status, payload, retry_after = await self._call("GET", path, None)
        if status == 404:
            return None
        if status == IN_PROGRESS:
            raise ShipiumError(
                "an earlier call for this shipment is still in progress",
                code=FailureCode.IN_PROGRESS,
                retriable=True,
                status=status,
                retry_after_s=retry_after or 1.0,
            )
        if status >= 400 or payload is None:
            raise parse_error(status, payload, retry_after)
        return parse_label_response(payload, len(job.parcels))

    async def _call(
        self, method: str, path: str, body: bytes | None
    ) -> tuple[int, dict[str, Any] | None, float | None]:
        try:
            async with self.http.request(
                method, f"{self.base}{path}", data=body, timeout=self.timeout, headers=self.headers
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise ShipiumError(
                "label call timed out", code=FailureCode.TIMEOUT, retriable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise ShipiumError(
                f"{type(exc).__name__}: {exc}", code=FailureCode.CONNECTION, retriable=True
            ) from exc
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        return status, payload if isinstance(payload, dict) else None, retry_after
