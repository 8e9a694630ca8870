"""Fake TikTok Shipping (Fulfillment API 202309): Get Eligible Shipping Service, Create
Packages, Get Package Detail, Get Package Shipping Document, Get Package Handover Time
Slots, Ship Package, and the label documents their URLs point at. Each behaves as its
TikTok API reference page describes it (codes from its "Error Code" section):

- every call is checked as TikTok checks it (signature, shop cipher, token);
- a line item is in one live package at most: creating a package for an item already
  packed answers 21022025 ("A shipping label has already been purchased"), so a client
  that creates twice for a box shows as ``refused_packed``;
- Get Order Detail lists an order's packages (``packages[].id``) but shows a line item's
  ``package_id`` only once its package has shipped ("For local sellers in the US and UK
  markets, the package_id ... will not be returned before the package is shipped");
- no service takes a package over 150 lb (21011037 "There are no available shipping
  services for this request");
- a document is still being generated for the first ``document_pending_calls`` calls after
  its package is made (11034037); a cancelled package's document answers 21023059, a
  picked-up one's 21042102;
- Ship Package with PICKUP needs a slot from Get Package Handover Time Slots (21011054
  without one, 21011053 outside every slot); shipping twice answers 21011040;
- an ON_HOLD order is refused (21011044); packages made while the buyer had a pending
  cancel request, or for an old-flow order inside the buyer's remorse hour, are counted
  (``created_with_cancel_request``, ``created_in_remorse_window``): parcelflow makes none.

Scripted faults apply per API: ``tiktok_shipping`` to Create Packages (an error before any
work, or ``after: created``: the package is made, then the answer is an error, or with
status 0 the connection drops), ``tiktok_document`` to Get Package Shipping Document,
``tiktok_eligible`` to Get Eligible Shipping Service, ``tiktok_ship`` to Ship Package.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from devstack.simulator.faults import FaultQueue
from devstack.simulator.pdf import label_pdf
from devstack.simulator.tiktok import TikTokState, admitted, answer, checked, injected
from workers.labeler.tiktok_shipping import wire
from workers.tiktok.wire import OK, ORDER_ON_HOLD

# Answer codes as TikTok's API reference pages list them (section "Error Code"):
INVALID_PARAMETERS = 21001001  # Create Packages, Ship Package, ...: "Invalid parameters"
LABEL_ALREADY_PURCHASED = 21022025  # Create Packages: "A shipping label has already been purchased"
ALREADY_SHIPPED = 21011040  # Ship Package: "Package has already been shipped."
NO_SERVICE = 21011037  # Create Packages, Get Eligible Shipping Service
DOCUMENT_PENDING = 11034037  # Get Package Shipping Document: "still being generated"
PACKAGE_CANCELLED = 21023059  # Get Package Shipping Document: "already been cancelled"
PICKED_UP = 21042102  # Get Package Shipping Document: "after the package has been pickup"
SLOT_MISSING = 21011054  # Ship Package: "missing pick-up time slot"
SLOT_OUTSIDE = 21011053  # Ship Package: "outside of the pick-up time slot"
MAX_POUNDS = 150.0
REMORSE_WINDOW_S = 3600  # the old flow's hour after payment (the On Hold changelog)
SERVICE = "USPS Ground Advantage"
# TikTok's changelog "For US and UK markets: introducing On Hold order status", Error Codes
ON_HOLD_MESSAGE = (
    "Order status is on hold. Please process when order status update to awaiting shipment"
)


@dataclass
class Package:
    package_id: str
    order_id: str
    items: list[str]
    tracking_number: str
    weight: dict[str, Any]
    shipped: str = ""  # the handover method once Ship Package was called
    status: str = "PROCESSING"  # PROCESSING, FULFILLING (picked up), CANCELLED
    document_calls: int = 0
    pickup_slot: dict[str, int] = field(default_factory=dict)


@dataclass
class ShippingState:
    latency_median_s: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    packages: dict[str, Package] = field(default_factory=dict)
    creates: int = 0  # Create Packages calls that reached the work (faults aside)
    refused_packed: int = 0  # creates refused: an item was already in a package
    documents: int = 0  # label documents downloaded
    document_pending_calls: int = 1  # document calls answered "still being generated"
    eligible_queries: int = 0
    created_with_cancel_request: int = 0
    created_in_remorse_window: int = 0

    def latency(self) -> float:
        if self.latency_median_s <= 0:
            return 0.0
        return self.latency_median_s * self.rng.lognormvariate(0, 0.25)


def package_id_of(order_id: str, n: int) -> str:
    digest = hashlib.sha256(f"{order_id}/{n}".encode()).hexdigest()
    return "11" + str(int(digest[:15], 16))[:16].zfill(16)


def new_package(state: ShippingState, order: dict[str, Any], body: dict[str, Any]) -> Package:
    order_id = str(order["id"])
    package_id = package_id_of(order_id, len(state.packages) + 1)
    tracking = "9400" + str(int(hashlib.sha256(package_id.encode()).hexdigest()[:16], 16))[:18]
    items = [str(i) for i in body["order_line_item_ids"]]
    package = Package(package_id, order_id, items, tracking, body.get("weight") or {})
    state.packages[package_id] = package
    order.setdefault("packages", []).append({"id": package_id})
    if order.get("is_buyer_request_cancel"):
        state.created_with_cancel_request += 1
    paid = int(order.get("paid_time") or 0)
    if order.get("is_on_hold_order") is False and paid and time.time() < paid + REMORSE_WINDOW_S:
        state.created_in_remorse_window += 1
    return package


def live_items(state: ShippingState, order_id: str) -> set[str]:
    """The order's line items in a package that is not cancelled."""
    return {
        item
        for p in state.packages.values()
        if p.order_id == order_id and p.status != "CANCELLED"
        for item in p.items
    }


def pounds(weight: object) -> float:
    """A request's weight in pounds (0 when unreadable)."""
    if not isinstance(weight, dict):
        return 0.0
    try:
        value = float(weight.get("value") or 0)
    except (TypeError, ValueError):
        return 0.0
    return value / 453.592 if weight.get("unit") == "GRAM" else value


def refused_create(order: dict[str, Any] | None, body: dict[str, Any]) -> web.Response | None:
    """TikTok's refusals of a Create Packages request, before any work."""
    if order is None:
        return answer(INVALID_PARAMETERS, "Invalid parameters: order not found")
    if order.get("status") == "ON_HOLD":  # the status, not is_on_hold_order (the flow)
        return answer(ORDER_ON_HOLD, ON_HOLD_MESSAGE)
    wanted = body.get("order_line_item_ids")
    if not isinstance(wanted, list) or not wanted:
        return answer(INVALID_PARAMETERS, "Invalid parameters: order_line_item_ids is empty")
    known = {str(item.get("id")): item for item in order.get("line_items") or []}
    if any(str(i) not in known for i in wanted):
        return answer(INVALID_PARAMETERS, "Invalid parameters: a line item is not in the order")
    return None


async def create_packages(
    request: web.Request, tiktok: TikTokState, state: ShippingState, faults: FaultQueue
) -> web.Response:
    fault, shop = await admitted(request, tiktok, faults, "tiktok_shipping")
    if isinstance(shop, web.Response):
        return shop
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return answer(INVALID_PARAMETERS, "Invalid parameters: body is not JSON")
    order = tiktok.orders.get(str(body.get("order_id", "")))
    refused = refused_create(order, body)
    if refused is not None:
        return refused
    assert order is not None  # noqa: S101 (refused_create checked it)
    if pounds(body.get("weight")) > MAX_POUNDS:
        return answer(NO_SERVICE, "There are no available shipping services for this request.")
    state.creates += 1
    await asyncio.sleep(state.latency())
    items = {str(i) for i in body["order_line_item_ids"]}
    if items & live_items(state, str(order["id"])):
        state.refused_packed += 1
        return answer(LABEL_ALREADY_PURCHASED, "A shipping label has already been purchased.")
    package = new_package(state, order, body)
    if fault is not None and fault.after == "created":
        if fault.status == 0 and request.transport is not None:  # made, then the line drops
            request.transport.close()
        return web.Response(status=fault.status or 502)
    data = {
        "package_id": package.package_id,
        "order_id": package.order_id,
        "order_line_item_ids": package.items,
        "shipping_service_info": {"id": "7208502187360519982", "name": SERVICE},
        "weight": package.weight,
    }
    return answer(OK, "Success", data)


async def checked_package(
    request: web.Request, tiktok: TikTokState, state: ShippingState
) -> Package | web.Response:
    """The package a signed call names in its path, or TikTok's refusal."""
    shop = await checked(request, tiktok)
    if isinstance(shop, web.Response):
        return shop
    package = state.packages.get(request.match_info["package_id"])
    return (
        answer(INVALID_PARAMETERS, "Invalid parameters: package not found")
        if package is None
        else package
    )


async def shipping_document(
    request: web.Request, tiktok: TikTokState, state: ShippingState, faults: FaultQueue
) -> web.Response:
    _, replaced = await injected(faults, "tiktok_document")
    if replaced is not None:
        return replaced
    package = await checked_package(request, tiktok, state)
    if isinstance(package, web.Response):
        return package
    if request.query.get("document_type") != wire.DOCUMENT_TYPE:
        return answer(INVALID_PARAMETERS, "Invalid parameters: document_type")
    if package.status == "CANCELLED":
        return answer(PACKAGE_CANCELLED, "Package has already been cancelled.")
    if package.status != "PROCESSING":
        return answer(PICKED_UP, "Documents couldn't be printed after the package has been pickup.")
    package.document_calls += 1
    if package.document_calls <= state.document_pending_calls:
        return answer(
            DOCUMENT_PENDING,
            "The shipping document is still being generated by the logistics provider, "
            "please try again later.",
        )
    url = f"{request.url.origin()}/_sim/tiktok/documents/{package.package_id}.pdf"
    return answer(OK, "Success", {"doc_url": url, "tracking_number": package.tracking_number})


async def ship_package(
    request: web.Request, tiktok: TikTokState, state: ShippingState, faults: FaultQueue
) -> web.Response:
    _, replaced = await injected(faults, "tiktok_ship")
    if replaced is not None:
        return replaced
    package = await checked_package(request, tiktok, state)
    if isinstance(package, web.Response):
        return package
    if package.shipped:
        return answer(ALREADY_SHIPPED, "Package has already been shipped.")
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return answer(INVALID_PARAMETERS, "Invalid parameters: body is not JSON")
    method = str(body.get("handover_method") or "PICKUP")
    if method == "PICKUP":
        slot = body.get("pickup_slot")
        if not isinstance(slot, dict):
            return answer(SLOT_MISSING, "missing pick-up time slot")
        if slot not in pickup_slots(package):
            return answer(SLOT_OUTSIDE, "shipment time is outside of the pick-up time slot")
        package.pickup_slot = slot
    package.shipped = method
    order = tiktok.orders.get(package.order_id)
    for item in (order or {}).get("line_items") or []:  # shown once shipped (US local sellers)
        if str(item.get("id")) in package.items:
            item["package_id"] = package.package_id
    return answer(OK, "Success", {})


def pickup_slots(package: Package) -> list[dict[str, int]]:
    """Two hour-long slots from the next full hour after the package was made."""
    start = (int(time.time()) // 3600 + 1) * 3600
    return [{"start_time": start + n * 3600, "end_time": start + (n + 1) * 3600} for n in (0, 1)]


async def handover_time_slots(
    request: web.Request, tiktok: TikTokState, state: ShippingState
) -> web.Response:
    package = await checked_package(request, tiktok, state)
    if isinstance(package, web.Response):
        return package
    slots = [{**slot, "avaliable": True} for slot in pickup_slots(package)]  # TikTok's spelling
    data = {"can_pickup": True, "can_drop_off": True, "pickup_slots": slots}
    return answer(OK, "Success", data)


async def package_detail(
    request: web.Request, tiktok: TikTokState, state: ShippingState
) -> web.Response:
    package = await checked_package(request, tiktok, state)
    if isinstance(package, web.Response):
        return package
    data = {
        "package_id": package.package_id,
        "orders": [{"id": package.order_id}],
        "package_status": package.status,
        "shipping_type": "TIKTOK",
        "tracking_number": package.tracking_number,
        "order_line_item_ids": package.items,
        "handover_method": package.shipped,
        "pickup_slot": package.pickup_slot,
    }
    return answer(OK, "Success", data)


async def eligible_services(
    request: web.Request, tiktok: TikTokState, state: ShippingState, faults: FaultQueue
) -> web.Response:
    _, shop = await admitted(request, tiktok, faults, "tiktok_eligible")
    if isinstance(shop, web.Response):
        return shop
    state.eligible_queries += 1
    order = tiktok.orders.get(request.match_info["order_id"])
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return answer(INVALID_PARAMETERS, "Invalid parameters: body is not JSON")
    if order is None or not isinstance(body, dict):
        return answer(INVALID_PARAMETERS, "Invalid parameters: order not found")
    if pounds(body.get("weight")) > MAX_POUNDS:
        return answer(NO_SERVICE, "There are no available shipping services for this request.")
    service = {"id": "7208502187360519982", "name": SERVICE, "is_default": True}
    return answer(OK, "Success", {"order_id": order["id"], "shipping_services": [service]})


async def document(request: web.Request, state: ShippingState) -> web.Response:
    """The label PDF a doc_url points at (4x6; any unknown name is a 404)."""
    name = request.match_info["name"]
    package = state.packages.get(name.removesuffix(".pdf"))
    if package is None or not name.endswith(".pdf"):
        raise web.HTTPNotFound
    state.documents += 1
    lines = [
        "TikTok Shipping",
        SERVICE,
        f"Tracking {package.tracking_number}",
        f"Order {package.order_id}",
        *[f"Item {i}" for i in package.items[:8]],
    ]
    return web.Response(body=label_pdf(lines), content_type="application/pdf")


def stats(state: ShippingState) -> dict[str, Any]:
    return {
        "packages": len(state.packages),
        "creates": state.creates,
        "refused_packed": state.refused_packed,
        "documents": state.documents,
        "shipped": sum(1 for p in state.packages.values() if p.shipped),
        "eligible_queries": state.eligible_queries,
        "created_with_cancel_request": state.created_with_cancel_request,
        "created_in_remorse_window": state.created_in_remorse_window,
    }
