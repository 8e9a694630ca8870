"""The only module that makes TikTok Shipping labels: Fulfillment API calls through the
TikTok client (signed as the enricher signs, the shop's tokens from tiktok.tokens.v1,
one rate limiter per shop), and the label document's download.

Per box, in order: the package that already holds the box's line items (Get Order
Detail, read once per job before anything is created) or Create Packages; then Get
Package Shipping Document; the document downloaded at once (its URL expires after 24
hours); Ship Package only where the warehouse names a handover method. Each created
package is recorded (``PackageLog``) the moment its id is known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import orjson

from schemas.label import LabelJob, Parcel
from workers.errors import ApiError, http_code
from workers.labeler.codes import FailureCode
from workers.labeler.provider import LabelResponse, PackageLabel, PackageLog
from workers.labeler.tiktok_shipping import wire
from workers.settings import LabelerSettings
from workers.tiktok.client import ACCESS_TOKEN_EXPIRED, TikTokClient, TikTokCode, TikTokError
from workers.tiktok.wire import ORDER_DETAIL_PATH, ORDER_ON_HOLD, RATE_LIMITED

T = TypeVar("T")


class TikTokShippingError(ApiError):
    pass


def label_error(err: TikTokError, on_hold_retry_s: float) -> ApiError:
    """A TikTok answer as the labeler's typed outcome: retry (with backoff, or after the
    hold), wait for the enricher's token refresh, or give up with TikTok's reason."""
    code, message = err.code, err.message
    if code == http_code(429) or code == str(RATE_LIMITED):
        return TikTokShippingError(
            message, code=FailureCode.RATE_LIMITED, retriable=True, retry_after_s=err.retry_after_s
        )
    if code == str(ORDER_ON_HOLD):
        message = f"TikTok holds the order (the buyer may still cancel): {message}"
        return TikTokShippingError(
            message, code=FailureCode.ON_HOLD, retriable=True, retry_after_s=on_hold_retry_s
        )
    if code in (ACCESS_TOKEN_EXPIRED, TikTokCode.REFRESH_ELSEWHERE, TikTokCode.REFRESH):
        message = f"the shop's access token is being refreshed by the enricher: {message}"
        return TikTokShippingError(message, code=FailureCode.TOKEN_EXPIRED, retriable=True)
    if code == TikTokCode.SHOP_UNAUTHORIZED:
        return TikTokShippingError(message, code=FailureCode.SHOP_UNAUTHORIZED, retriable=False)
    if code == TikTokCode.CONNECTION:
        return TikTokShippingError(message, code=FailureCode.CONNECTION, retriable=True)
    # 5xx keep their status code (502-504 leave the outcome unknown: looked up first)
    return TikTokShippingError(
        message, code=code, retriable=err.retriable, status=err.status, retry_after_s=None
    )


class TikTokShipping:
    looks_before_create = True  # every create_label reads the order's packages first

    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: LabelerSettings,
        tiktok: TikTokClient,
        record: PackageLog,
    ) -> None:
        self.http = http
        self.settings = settings
        self.tiktok = tiktok
        self.record = record
        self.timeout = aiohttp.ClientTimeout(total=settings.tiktok_timeout_s)

    async def create_label(self, job: LabelJob) -> LabelResponse:
        packed = await self.packed(job)
        labels, packages, services = [], [], []
        for parcel in job.parcels:
            package_id = self.existing(parcel, packed)
            if package_id is None:
                created = await self.create_package(job, parcel)
                package_id = created.package_id
                services.append(created.service)
                await self.record(job, parcel.box_id, package_id)
            packages.append(package_id)
            labels.append(await self.label(job, package_id))
        return self.response(job, packages, labels, services)

    async def find_label(self, job: LabelJob) -> LabelResponse | None:
        """The labels of this job's packages when every box already has its package."""
        packed = await self.packed(job)
        packages = [self.existing(parcel, packed) for parcel in job.parcels]
        if not packages or any(p is None for p in packages):
            return None
        found = [p for p in packages if p is not None]
        labels = [await self.label(job, package_id) for package_id in found]
        return self.response(job, found, labels, [])

    def response(
        self, job: LabelJob, packages: list[str], labels: list[PackageLabel], services: list[str]
    ) -> LabelResponse:
        return LabelResponse(
            shipment_id=",".join(packages),
            label_id=packages[0] if packages else "",
            carrier=wire.CARRIER,
            service=next((s for s in services if s), ""),
            packages=labels,
        )

    def existing(self, parcel: Parcel, packed: dict[str, str]) -> str | None:
        try:
            return wire.package_of(parcel, packed)
        except wire.PackedElsewhere as exc:
            raise TikTokShippingError(
                str(exc), code=FailureCode.ITEMS_IN_OTHER_PACKAGE, retriable=False
            ) from exc

    async def packed(self, job: LabelJob) -> dict[str, str]:
        """Which of the order's line items are in a package now (Get Order Detail)."""
        data = await self.call(job, "GET", ORDER_DETAIL_PATH, {"ids": job.order_id})
        return self.parsed(
            lambda d: wire.packages_by_item(d.get("orders") or [], job.order_id), data
        )

    async def create_package(self, job: LabelJob, parcel: Parcel) -> wire.Created:
        body = orjson.dumps(wire.create_package_body(job, parcel))
        data = await self.call(job, "POST", wire.PACKAGES_PATH, {}, body)
        return self.parsed(wire.parse_created, data)

    async def label(self, job: LabelJob, package_id: str) -> PackageLabel:
        path = wire.DOCUMENT_PATH.format(package_id=package_id)
        data = await self.call(job, "GET", path, wire.document_params())
        document = self.parsed(wire.parse_document, data)
        pdf = await self.download(document.url)
        handover = self.handover(job)
        if handover:
            await self.ship(job, package_id, handover)
        return PackageLabel(tracking_id=document.tracking_number, documents={"pdf": pdf})

    def handover(self, job: LabelJob) -> str:
        warehouse = self.settings.warehouses.get(job.warehouse_id)
        return warehouse.tiktok_handover if warehouse is not None else ""

    async def ship(self, job: LabelJob, package_id: str, handover: str) -> None:
        path = wire.SHIP_PATH.format(package_id=package_id)
        try:
            await self.call(job, "POST", path, {}, orjson.dumps(wire.ship_body(handover)))
        except TikTokShippingError as err:
            if err.code != str(wire.PACKAGE_ALREADY_SHIPPED):
                raise

    async def download(self, url: str) -> bytes:
        """The label document (a PDF), read at once, at most tiktok_document_max_bytes."""
        cap = self.settings.tiktok_document_max_bytes
        try:
            async with self.http.get(url, timeout=self.timeout) as response:
                if response.status != 200:
                    raise TikTokShippingError(
                        f"label document: HTTP {response.status}",
                        code=http_code(response.status),
                        retriable=response.status >= 500 or response.status == 429,
                        status=response.status,
                    )
                data = await response.content.read(cap + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TikTokShippingError(
                f"label document: {type(exc).__name__}", code=FailureCode.CONNECTION, retriable=True
            ) from exc
        if len(data) > cap or not data.startswith(b"%PDF-"):
            raise TikTokShippingError(
                "label document is not a PDF of at most tiktok_document_max_bytes",
                code=FailureCode.BAD_RESPONSE,
                retriable=False,
            )
        return data

    async def call(
        self, job: LabelJob, method: str, path: str, params: dict[str, str], body: bytes = b""
    ) -> dict[str, Any]:
        try:
            return await self.tiktok.request(job.shop_id, method, path, params, body)
        except TikTokError as err:
            raise label_error(err, self.settings.labeler_on_hold_retry_s) from err

    @staticmethod
    def parsed(parse: Callable[[dict[str, Any]], T], data: dict[str, Any]) -> T:
        try:
            return parse(data)
        except wire.BadAnswer as exc:
            raise TikTokShippingError(
                str(exc), code=FailureCode.BAD_RESPONSE, retriable=False
            ) from exc
