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

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import orjson

from schemas.common import Address
from schemas.label import LabelJob, Parcel
from workers.errors import ApiError, http_code
from workers.labeler.codes import FailureCode
from workers.labeler.provider import LabelResponse, PackageLabel, PackageLog
from workers.labeler.tiktok_shipping import wire
from workers.settings import LabelerSettings
from workers.tiktok.client import ACCESS_TOKEN_EXPIRED, TikTokClient, TikTokCode, TikTokError
from workers.tiktok.codes import Verdict
from workers.tiktok.wire import ORDER_DETAIL_PATH

T = TypeVar("T")
DOCUMENT_TRIES = 4  # Get Package Shipping Document while the document is being generated


class TikTokShippingError(ApiError):
    pass


# What the labeler does with TikTok's verdicts (``workers/tiktok/codes.py``) that end a
# job, or retry it under a code of its own.
VERDICT_CODES = {
    Verdict.DONE: (FailureCode.ALREADY_DONE, True),  # retried: the retry looks it up first
    Verdict.NO_SERVICE: (FailureCode.NO_SHIPPING_SERVICE, False),
    Verdict.GONE: (FailureCode.DOCUMENT_GONE, False),
    Verdict.HANDOVER_SLOT: (FailureCode.HANDOVER_SLOT, False),
}


def label_error(err: TikTokError, on_hold_retry_s: float) -> ApiError:
    """A TikTok answer as the labeler's typed outcome: retry (with backoff, or after the
    hold), wait for the enricher's token refresh, look up what was made, or give up with
    TikTok's reason. TikTok's request_id stays in the message."""
    code, message = err.code, err.message
    if code == http_code(429) or err.verdict is Verdict.RATE_LIMITED:
        return TikTokShippingError(
            message, code=FailureCode.RATE_LIMITED, retriable=True, retry_after_s=err.retry_after_s
        )
    if err.verdict is Verdict.ON_HOLD:
        message = f"TikTok holds the order (ON_HOLD: the buyer may still cancel): {message}"
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
    if err.verdict in VERDICT_CODES:
        failure, retriable = VERDICT_CODES[err.verdict]
        return TikTokShippingError(f"TikTok {code}: {message}", code=failure, retriable=retriable)
    # 5xx keep their status code (502-504 leave the outcome unknown: looked up first);
    # TikTok's codes keep theirs, retried where its reference says to try again
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

    async def create_label(self, job: LabelJob, recipient: Address | None) -> LabelResponse:
        # TikTok has the recipient: the packages TikTok ships go where the order says
        packed = await self.packed(job)
        labels, packages, services = [], [], []
        for parcel in job.parcels:
            package_id = self.existing(parcel, packed)
            if package_id is None:
                await self.check_service(job, parcel)
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
        """Which of the order's line items are in a live package now: the order's packages
        from Get Order Detail, each read with Get Package Detail (a CANCELLED one holds
        nothing). Ends here when the order may not get a label (``check_order``)."""
        data = await self.call(job, "GET", ORDER_DETAIL_PATH, {"ids": job.order_id})
        orders = data.get("orders") or []
        order = wire.order_of(orders, job.order_id)
        if order is None:
            raise TikTokShippingError(
                f"TikTok does not know order {job.order_id[:80]}",
                code=FailureCode.BAD_RESPONSE,
                retriable=False,
            )
        self.check_order(order)
        packed = self.parsed(lambda d: wire.packages_by_item(orders, job.order_id), data)
        for package_id in self.parsed(wire.package_ids, order):
            path = wire.PACKAGE_PATH.format(package_id=package_id)
            detail = await self.call(job, "GET", path, {}, api=wire.PACKAGE_PATH)
            packed = {i: p for i, p in packed.items() if p != package_id}
            packed |= dict.fromkeys(wire.items_of_package(detail), package_id)
        return packed

    def check_order(self, order: dict[str, Any]) -> None:
        """No package for an order that is cancelled, ON_HOLD, or whose buyer has a pending
        cancel request (Get Order Detail: ``status``, ``is_buyer_request_cancel``)."""
        status = str(order.get("status") or "")
        if status in ("CANCELLED", "CANCEL"):
            raise TikTokShippingError(
                "TikTok says the order is cancelled: no label bought",
                code=FailureCode.CANCELLED,
                retriable=False,
            )
        retry_s = self.settings.labeler_on_hold_retry_s
        if status == "ON_HOLD":
            raise TikTokShippingError(
                "TikTok holds the order (ON_HOLD: the buyer may still cancel)",
                code=FailureCode.ON_HOLD,
                retriable=True,
                retry_after_s=retry_s,
            )
        if order.get("is_buyer_request_cancel") is True:
            raise TikTokShippingError(
                "the buyer asked to cancel the order: no package while the request is pending",
                code=FailureCode.CANCEL_REQUESTED,
                retriable=True,
                retry_after_s=retry_s,
            )

    async def check_service(self, job: LabelJob, parcel: Parcel) -> None:
        """Get Eligible Shipping Service before Create Packages (the changelog "US market:
        TikTok Shipping label allocation" asks for it per package): a box no service
        takes ends here, before anything is bought."""
        path = wire.ELIGIBLE_PATH.format(order_id=self.parsed(wire.order_id, job.order_id))
        body = orjson.dumps(wire.package_attributes(parcel))
        data = await self.call(job, "POST", path, {}, body, api=wire.ELIGIBLE_PATH)
        if not wire.eligible_services(data):
            raise TikTokShippingError(
                f"no TikTok Shipping service takes box {parcel.box_id[:80]} (weight, size or "
                "address): nothing was bought",
                code=FailureCode.NO_SHIPPING_SERVICE,
                retriable=False,
            )

    async def create_package(self, job: LabelJob, parcel: Parcel) -> wire.Created:
        body = orjson.dumps(wire.create_package_body(job, parcel))
        data = await self.call(job, "POST", wire.PACKAGES_PATH, {}, body)
        return self.parsed(wire.parse_created, data)

    async def label(self, job: LabelJob, package_id: str) -> PackageLabel:
        document = self.parsed(wire.parse_document, await self.document(job, package_id))
        pdf = await self.download(document.url)
        handover = self.handover(job)
        if handover:
            await self.ship(job, package_id, handover)
        return PackageLabel(tracking_id=document.tracking_number, documents={"pdf": pdf})

    async def document(self, job: LabelJob, package_id: str) -> dict[str, Any]:
        """Get Package Shipping Document; asked again in place (up to
        ``DOCUMENT_TRIES`` times, 0.5 s, 1 s, ...) while TikTok answers that the document is
        still being generated (11034037, 11034023: "please try again later")."""
        path = wire.DOCUMENT_PATH.format(package_id=package_id)
        for attempt in range(1, DOCUMENT_TRIES + 1):
            try:
                return await self.tiktok.request(
                    job.shop_id, "GET", path, wire.document_params(), api=wire.DOCUMENT_PATH
                )
            except TikTokError as err:
                if err.verdict is not Verdict.RETRY or attempt == DOCUMENT_TRIES:
                    raise label_error(err, self.settings.labeler_on_hold_retry_s) from err
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def handover(self, job: LabelJob) -> str:
        warehouse = self.settings.warehouses.get(job.warehouse_id)
        return warehouse.tiktok_handover if warehouse is not None else ""

    async def ship(self, job: LabelJob, package_id: str, handover: str) -> None:
        """Ship Package; for PICKUP with the earliest bookable slot of Get Package Handover
        Time Slots (Ship Package answers 21011054 without one, 21011053 outside it)."""
        slot = None
        if handover == "PICKUP":
            path = wire.HANDOVER_SLOTS_PATH.format(package_id=package_id)
            slots = await self.call(job, "GET", path, {}, api=wire.HANDOVER_SLOTS_PATH)
            slot = wire.first_pickup_slot(slots, int(time.time()))
            if slot is None:
                raise TikTokShippingError(
                    f"TikTok offers no pick-up time slot for package {package_id}",
                    code=FailureCode.HANDOVER_SLOT,
                    retriable=False,
                )
        path = wire.SHIP_PATH.format(package_id=package_id)
        try:
            body = orjson.dumps(wire.ship_body(handover, slot))
            await self.call(job, "POST", path, {}, body, api=wire.SHIP_PATH)
        except TikTokShippingError as err:
            if err.code != FailureCode.ALREADY_DONE:  # TikTok's "already shipped" answers
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
        self,
        job: LabelJob,
        method: str,
        path: str,
        params: dict[str, str],
        body: bytes = b"",
        api: str = "",
    ) -> dict[str, Any]:
        """One TikTok call, under the rate limit of ``api`` (the documented path)."""
        try:
            return await self.tiktok.request(job.shop_id, method, path, params, body, api)
        except TikTokError as err:
            raise label_error(err, self.settings.labeler_on_hold_retry_s) from err

    @staticmethod
    def parsed(parse: Callable[[Any], T], data: Any) -> T:
        try:
            return parse(data)
        except wire.BadAnswer as exc:
            raise TikTokShippingError(
                str(exc), code=FailureCode.BAD_RESPONSE, retriable=False
            ) from exc
