"""TikTok Shipping through the Fulfillment API (202309): request builders and answer
parsers. Pure.

A label is a package: Create Packages puts a box's line items (one id per unit) in one
package and buys its label, Get Package Shipping Document gives the label's URL and
tracking number. Create Packages has no idempotency key, so which items are already in a
package is read from Get Order Detail (each line item's ``package_id``) before creating.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.label import LabelJob, Parcel

PACKAGES_PATH = "/fulfillment/202309/packages"
DOCUMENT_PATH = "/fulfillment/202309/packages/{package_id}/shipping_documents"
SHIP_PATH = "/fulfillment/202309/packages/{package_id}/ship"

CARRIER = "TikTok Shipping"
DOCUMENT_TYPE = "SHIPPING_LABEL"
DOCUMENT_SIZE = "A6"  # 4x6 in, what thermal label printers take
DOCUMENT_FORMAT = "PDF"

# An answer code that decides what the labeler does (beside the on-hold and rate-limit codes
# of ``workers/tiktok/wire.py``; others end the job with TikTok's code and message). It is
# not in TikTok's public pages: correct it here once a live shop shows it.
PACKAGE_ALREADY_SHIPPED = 21001041  # Ship Package a second time: it is done

WEIGHT_UNITS = {
    "lb": ("POUND", 1.0),
    "oz": ("POUND", 1 / 16),
    "kg": ("GRAM", 1000.0),
    "g": ("GRAM", 1.0),
}
LENGTH_UNITS = {"in": "INCH", "cm": "CM"}


def amount(value: float) -> str:
    """TikTok's numbers are strings; two decimals, without trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def create_package_body(job: LabelJob, parcel: Parcel) -> dict[str, Any]:
    """Create Packages for one box: its order, its line item ids, weight and size.
    ``shipping_service_id`` is left out: TikTok picks the service (for US sellers with
    label allocation it ignores the field anyway)."""
    unit, factor = WEIGHT_UNITS[parcel.weight.unit]
    d = parcel.dimensions
    return {
        "order_id": job.order_id,
        "order_line_item_ids": [item.item_id for item in parcel.items],
        "weight": {"value": amount(parcel.weight.value * factor), "unit": unit},
        "dimension": {
            "length": amount(d.length),
            "width": amount(d.width),
            "height": amount(d.height),
            "unit": LENGTH_UNITS[d.unit],
        },
    }


def document_params() -> dict[str, str]:
    return {
        "document_type": DOCUMENT_TYPE,
        "document_size": DOCUMENT_SIZE,
        "document_format": DOCUMENT_FORMAT,
    }


def ship_body(handover: str) -> dict[str, Any]:
    return {"handover_method": handover}


class BadAnswer(ValueError):
    """An answer without the fields the flow needs."""


# TikTok's ids are decimal strings; a package id goes into a request path, so anything
# else in an answer is refused rather than sent on.
PACKAGE_ID = re.compile(r"[0-9]{1,32}")


def package_id(value: object) -> str:
    text = str(value or "")
    if not PACKAGE_ID.fullmatch(text):
        raise BadAnswer(f"not a TikTok package id: {text[:40]!r}")
    return text


@dataclass(frozen=True)
class Created:
    package_id: str
    service: str  # the shipping service TikTok chose, as it names it


def parse_created(data: Mapping[str, Any]) -> Created:
    if not data.get("package_id"):
        raise BadAnswer("Create Packages answered without package_id")
    service = data.get("shipping_service_info") or {}
    return Created(package_id(data["package_id"]), str(service.get("name") or ""))


@dataclass(frozen=True)
class Document:
    url: str
    tracking_number: str


def parse_document(data: Mapping[str, Any]) -> Document:
    url = str(data.get("doc_url") or "")
    if not url.startswith(("https://", "http://")):
        raise BadAnswer("Get Package Shipping Document answered without a doc_url")
    return Document(url, str(data.get("tracking_number") or ""))


def packages_by_item(orders: list[dict[str, Any]], order_id: str) -> dict[str, str]:
    """Line item id -> the package that holds it, from Get Order Detail's answer (items
    in no package are left out); raises BadAnswer for a package id that is not one."""
    for order in orders:
        if str(order.get("id")) == order_id:
            return {
                str(item["id"]): package_id(item["package_id"])
                for item in order.get("line_items") or []
                if item.get("id") and item.get("package_id")
            }
    return {}


class PackedElsewhere(ValueError):
    """Some of a box's line items are in a package that is not this box's alone."""


def package_of(parcel: Parcel, packed: Mapping[str, str]) -> str | None:
    """The package that already holds exactly this box's items, or None when none of them
    is in a package; raises PackedElsewhere when they are split over packages, or only
    some are packed (another box, or Seller Center, took them)."""
    items = [item.item_id for item in parcel.items]
    found = {packed[i] for i in items if i in packed}
    if not found:
        return None
    held = {item for item, package in packed.items() if package in found}
    if len(found) == 1 and held == set(items):
        return found.pop()
    raise PackedElsewhere(
        f"line items of box {parcel.box_id} are already in package(s) "
        f"{', '.join(sorted(found))} with other items: split them in TikTok Seller Center "
        "or pack the box again"
    )
