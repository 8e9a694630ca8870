"""TikTok Shipping through the Fulfillment API (202309): request builders and answer
parsers. Pure.

A label is a package: Create Packages puts a box's line items (one id per unit) in one
package and buys its label, Get Package Shipping Document gives the label's URL and
tracking number. The US flow, as TikTok's "Fulfillment API overview" and the changelog
"US market: TikTok Shipping label allocation" describe it, per box: Get Eligible Shipping
Service (nothing is bought when no service fits), Create Packages, Get Package Shipping
Document, and Ship Package where the warehouse hands packages over (with a pick-up time
slot from Get Package Handover Time Slots for PICKUP).

Create Packages has no idempotency key, so which items are already in a package is looked
up before creating: Get Order Detail lists the order's packages (``packages[].id``), and
Get Package Detail each package's ``order_line_item_ids`` and ``package_status``. A line
item's own ``package_id`` is not enough: Get Order Detail's reference page says it "will
not be returned before the package is shipped" for US and UK local sellers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.label import LabelJob, Parcel

PACKAGES_PATH = "/fulfillment/202309/packages"
DOCUMENT_PATH = "/fulfillment/202309/packages/{package_id}/shipping_documents"
SHIP_PATH = "/fulfillment/202309/packages/{package_id}/ship"
PACKAGE_PATH = "/fulfillment/202309/packages/{package_id}"  # Get Package Detail
ELIGIBLE_PATH = "/fulfillment/202309/orders/{order_id}/shipping_services/query"
HANDOVER_SLOTS_PATH = "/fulfillment/202309/packages/{package_id}/handover_time_slots"
CANCELLED = "CANCELLED"  # a package_status: "Package has been canceled", it holds nothing

CARRIER = "TikTok Shipping"
DOCUMENT_TYPE = "SHIPPING_LABEL"
DOCUMENT_SIZE = "A6"  # 4x6 in, what thermal label printers take
DOCUMENT_FORMAT = "PDF"

WEIGHT_UNITS = {
    "lb": ("POUND", 1.0),
    "oz": ("POUND", 1 / 16),
    "kg": ("GRAM", 1000.0),
    "g": ("GRAM", 1.0),
}
LENGTH_UNITS = {"in": "INCH", "cm": "CM"}


def amount(value: float) -> str:
    """TikTok's numbers are strings: two decimals, rounded *up* (a package is never
    declared lighter or smaller than it is: 1 oz is 0.07 lb, not 0.06), without trailing
    zeros."""
    cents = math.ceil(round(value * 100, 6))  # round() first: 0.1 * 100 is 10.000000000000002
    return f"{cents / 100:.2f}".rstrip("0").rstrip(".")


def package_attributes(parcel: Parcel) -> dict[str, Any]:
    """A box's line item ids, weight and size, as Create Packages and Get Eligible
    Shipping Service take them."""
    unit, factor = WEIGHT_UNITS[parcel.weight.unit]
    d = parcel.dimensions
    return {
        "order_line_item_ids": [item.item_id for item in parcel.items],
        "weight": {"value": amount(parcel.weight.value * factor), "unit": unit},
        "dimension": {
            "length": amount(d.length),
            "width": amount(d.width),
            "height": amount(d.height),
            "unit": LENGTH_UNITS[d.unit],
        },
    }


def create_package_body(job: LabelJob, parcel: Parcel) -> dict[str, Any]:
    """Create Packages for one box: its order, its line item ids, weight and size.
    ``shipping_service_id`` is left out: TikTok picks the service (for US sellers with
    label allocation it ignores the field anyway)."""
    return {"order_id": job.order_id, **package_attributes(parcel)}


def eligible_services(data: Mapping[str, Any]) -> list[str]:
    """The names of the shipping services Get Eligible Shipping Service offers."""
    services = data.get("shipping_services") or []
    return [str(s.get("name") or s.get("id") or "") for s in services if isinstance(s, dict)]


def document_params() -> dict[str, str]:
    return {
        "document_type": DOCUMENT_TYPE,
        "document_size": DOCUMENT_SIZE,
        "document_format": DOCUMENT_FORMAT,
    }


def ship_body(handover: str, slot: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Ship Package: the handover method, and for PICKUP the time slot (21011054 "missing
    pick-up time slot" otherwise)."""
    body: dict[str, Any] = {"handover_method": handover}
    if slot:
        body["pickup_slot"] = {"start_time": slot["start_time"], "end_time": slot["end_time"]}
    return body


def first_pickup_slot(data: Mapping[str, Any], now_s: int) -> dict[str, int] | None:
    """The earliest slot of Get Package Handover Time Slots that can be booked and has not
    ended (TikTok spells the flag ``avaliable``; ``available`` is taken too)."""
    slots = []
    for slot in data.get("pickup_slots") or []:
        if not isinstance(slot, dict) or not (slot.get("avaliable") or slot.get("available")):
            continue
        try:
            start, end = int(slot["start_time"]), int(slot["end_time"])
        except (KeyError, TypeError, ValueError):
            continue
        if end > now_s:
            slots.append({"start_time": start, "end_time": end})
    return min(slots, key=lambda s: s["start_time"], default=None)


class BadAnswer(ValueError):
    """An answer without the fields the flow needs."""


# TikTok's ids are decimal strings; a package id goes into a request path, so anything
# else in an answer is refused rather than sent on.
PACKAGE_ID = re.compile(r"[0-9]{1,32}")


def order_id(value: object) -> str:
    """A TikTok order id, checked before it goes into a request path."""
    text = str(value or "")
    if not PACKAGE_ID.fullmatch(text):
        raise BadAnswer(f"not a TikTok order id: {text[:40]!r}")
    return text


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


def order_of(orders: list[dict[str, Any]], order_id: str) -> dict[str, Any] | None:
    """The order of Get Order Detail's answer with this id."""
    return next((o for o in orders if str(o.get("id")) == order_id), None)


def packages_by_item(orders: list[dict[str, Any]], order_id: str) -> dict[str, str]:
    """Line item id -> the package that holds it, as far as Get Order Detail's answer
    shows it (items in no package are left out; US and UK local sellers see a line item's
    package only once shipped); raises BadAnswer for a package id that is not one."""
    order = order_of(orders, order_id)
    if order is None:
        return {}
    return {
        str(item["id"]): package_id(item["package_id"])
        for item in order.get("line_items") or []
        if item.get("id") and item.get("package_id")
    }


def package_ids(order: Mapping[str, Any]) -> list[str]:
    """The order's packages as Get Order Detail lists them (``packages[].id``)."""
    return [package_id(p.get("id")) for p in order.get("packages") or [] if isinstance(p, dict)]


def items_of_package(data: Mapping[str, Any]) -> list[str]:
    """The line items Get Package Detail says a package holds; none when it is
    CANCELLED (a cancelled package holds nothing and does not block a new one)."""
    if str(data.get("package_status") or "") == CANCELLED:
        return []
    return [str(i) for i in data.get("order_line_item_ids") or []]


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
