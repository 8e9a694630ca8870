"""Parse Shipium's label response and errors. Pure."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from workers.errors import ApiError, http_code
from workers.labeler.codes import FailureCode
from workers.labeler.provider import LabelResponse, PackageLabel


class ShipiumError(ApiError):
    pass


def _package(carrier_label: dict[str, Any]) -> PackageLabel:
    documents: dict[str, bytes] = {}
    for image in carrier_label.get("labelImages") or []:
        fmt = str(image.get("imageFormat", "")).lower()
        try:
            documents[fmt] = base64.b64decode(image.get("imageContents", ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ShipiumError(
                "label image is not base64", code=FailureCode.BAD_RESPONSE, retriable=False
            ) from exc
    return PackageLabel(tracking_id=str(carrier_label["packageScannableId"]), documents=documents)


def parse_label_response(body: dict[str, Any], parcels: int) -> LabelResponse:
    try:
        if parcels > 1:
            labels = [_package(p["carrierLabel"]) for p in body["multiParcelLabels"]]
        else:
            labels = [_package(body["carrierLabel"])]
        result = LabelResponse(
            shipment_id=str(body["shipiumShipmentId"]),
            label_id=str(body.get("shipiumLabelId", "")),
            carrier=str(body.get("carrier", "")),
            service=str(body.get("serviceMethod", body.get("service", ""))),
            packages=labels,
        )
    except (KeyError, TypeError) as exc:
        raise ShipiumError(
            f"unexpected label response: missing {exc}",
            code=FailureCode.BAD_RESPONSE,
            retriable=False,
        ) from exc
    if len(result.packages) != parcels:
        raise ShipiumError(
            f"asked for {parcels} parcel labels, got {len(result.packages)}",
            code=FailureCode.BAD_RESPONSE,
            retriable=False,
        )
    return result


def parse_error(
    status: int, body: dict[str, Any] | None, retry_after_s: float | None
) -> ShipiumError:
    """4xx: the request must be fixed (not retriable), but 429 and 401/403 are retried."""
    message = ""
    if body:
        message = str(body.get("message") or body.get("error") or body.get("errors") or "")
    retriable = status == 429 or status >= 500 or status in (401, 403)
    named = {
        401: FailureCode.UNAUTHORIZED,
        403: FailureCode.FORBIDDEN,
        429: FailureCode.RATE_LIMITED,
    }
    code = named.get(status) or http_code(status)
    return ShipiumError(
        message or f"HTTP {status}",
        code=code,
        retriable=retriable,
        status=status,
        retry_after_s=retry_after_s,
    )
