"""Build Shipium's carrier-selection label request from a label job. Pure.

TikTok Shop through Shipium: every product in every parcel carries its TikTok line item
id as ``orderItemReferenceIdentifier`` (also for a single parcel), and the shipment
carries the TikTok order id. The names of the TikTok-specific shipment fields are not
public; they are the constants below, to be corrected in this one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.common import Address, Dimensions, Weight
from schemas.label import LabelJob, Parcel

LABEL_PATH = "/api/v1/shipment/carrierselection/label"
METHOD = "POST"
# Looking a label up by our partnerShipmentId (usable wherever Shipium's shipment id is).
# The exact path is unverified: correct it here.
LOOKUP_PATH = "/api/v1/shipment/{partner_shipment_id}/label"

# TikTok Shop fields of the Shipium request. Shipium's TikTok Shop carrier page names a
# required string (the TikTok order id), a recommended string (the shop), a conditional
# array of strings (items left out) and orderItemReferenceIdentifier per product; the first
# three names are not in Shipium's public reference: correct them here.
TIKTOK_ORDER_ID_FIELD = "tikTokShopOrderId"  # required string
TIKTOK_SHOP_ID_FIELD = "tikTokShopId"  # recommended string
TIKTOK_UNPACKED_ITEMS_FIELD = "tikTokShopExcludedItemIds"  # conditional array of strings
ITEM_REFERENCE_FIELD = "orderItemReferenceIdentifier"

WEIGHT_UNITS = {"lb": "lb", "oz": "oz", "kg": "kg", "g": "g"}
LENGTH_UNITS = {"in": "in", "cm": "cm"}


def address(addr: Address | None) -> dict[str, str]:
    addr = addr or Address()
    return {
        "name": addr.name,
        "phoneNumber": addr.phone,
        "street1": addr.street1,
        "street2": addr.street2,
        "city": addr.city,
        "state": addr.state,
        "postalCode": addr.postal_code,
        "countryCode": addr.country_code,
    }


def weight(w: Weight) -> dict[str, Any]:
    return {"weight": w.value, "weightUnit": WEIGHT_UNITS[w.unit]}


def packaging(parcel: Parcel) -> dict[str, Any]:
    d: Dimensions = parcel.dimensions
    return {
        "packagingTypeCode": "custom",
        "linearDimensions": {
            "length": d.length,
            "width": d.width,
            "height": d.height,
            "linearUnit": LENGTH_UNITS[d.unit],
        },
        "packagingWeight": weight(parcel.weight),
    }


def item_quantities(parcel: Parcel, tiktok: bool = True) -> list[dict[str, Any]]:
    if not tiktok:
        return [{"productId": item.product_id, "quantity": 1} for item in parcel.items]
    return [
        {ITEM_REFERENCE_FIELD: item.item_id, "productId": item.product_id, "quantity": 1}
        for item in parcel.items
    ]


def package(parcel: Parcel, tiktok: bool = True) -> dict[str, Any]:
    return {
        "partnerPackageId": parcel.box_id,
        "packagingType": packaging(parcel),
        "totalWeight": weight(parcel.weight),
        "orderItemQuantities": item_quantities(parcel, tiktok),
    }


def build_label_request(
    job: LabelJob,
    recipient: Address | None,
    ship_from: Address,
    *,
    label_formats: Sequence[str] = ("pdf",),
    fulfillment_context: dict[str, Any] | None = None,
    tiktok: bool = True,
    test_mode: bool = False,
) -> dict[str, Any]:
    """Shipium's label request for one job. ``tiktok``: the TikTok Shop carrier with its
    fields (the order, the shop, each unit's TikTok item id); False: Shipium's ordinary
    carrier selection, for an order the seller ships itself."""
    if not job.parcels:
        raise ValueError(f"label job {job.job_id} has no parcels")
    shipment: dict[str, Any] = {
        "partnerShipmentId": job.job_id,
        "orderedDateTime": datetime.fromtimestamp(job.created_at_ms / 1000, UTC).isoformat(),
        "shipFromAddress": address(ship_from),
        "destinationAddress": address(recipient),
        "fulfillmentContext": fulfillment_context or {"channel": "TikTok Shop"},
    }
    if tiktok:
        shipment[TIKTOK_ORDER_ID_FIELD] = job.order_id
        shipment[TIKTOK_SHOP_ID_FIELD] = job.shop_id
    if tiktok and job.unpacked_items:
        shipment[TIKTOK_UNPACKED_ITEMS_FIELD] = [i.item_id for i in job.unpacked_items]
    first = job.parcels[0]
    shipment.update(
        packagingType=packaging(first),
        totalWeight=weight(first.weight),
        orderItemQuantities=item_quantities(first, tiktok),
    )
    if len(job.parcels) > 1:
        shipment["multiParcelShipmentParameters"] = [package(p, tiktok) for p in job.parcels]
    return {
        "currencyCode": "USD",
        "generateLabel": True,
        "labelParameters": {
            "labelFormats": list(label_formats),
            "includeLabelImagesInResponse": True,
            "testMode": test_mode,
        },
        "shipmentParameters": shipment,
    }
