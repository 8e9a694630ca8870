"""Fake TikTok Shipping (Fulfillment API 202309): Create Packages, Get Package Shipping
Document, Ship Package, and the label documents their URLs point at.

Checked as TikTok checks every Open API call (signature, shop cipher, token). A line item
is in one package at most: creating a package for an item already packed is refused, as
TikTok refuses it, so a client that creates twice for a box shows as ``refused_packed``.
Scripted faults (``api: tiktok_shipping``) apply to Create Packages: an error before any
work, or ``after: created`` (the package is made, then the answer is an error, or with
status 0 the connection drops).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from devstack.simulator.faults import FaultQueue
from devstack.simulator.pdf import label_pdf
from devstack.simulator.tiktok import TikTokState, answer, checked, injected
from workers.labeler.tiktok_shipping import wire
from workers.tiktok.wire import OK, ORDER_ON_HOLD

ORDER_NOT_FOUND = 21001001
ITEMS_ALREADY_PACKED = 21011017
PACKAGE_NOT_FOUND = 21001006
BAD_DOCUMENT_TYPE = 21001010
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


@dataclass
class ShippingState:
    latency_median_s: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    packages: dict[str, Package] = field(default_factory=dict)
    creates: int = 0  # Create Packages calls that reached the work (faults aside)
    refused_packed: int = 0  # creates refused: an item was already in a package
    documents: int = 0  # label documents downloaded

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
    for item in order.get("line_items") or []:
        if str(item.get("id")) in items:
            item["package_id"] = package_id
    order.setdefault("packages", []).append({"id": package_id})
    return package


def refused_create(order: dict[str, Any] | None, body: dict[str, Any]) -> web.Response | None:
    """TikTok's refusals of a Create Packages request, before any work."""
    if order is None:
        return answer(ORDER_NOT_FOUND, "order not found")
    if order.get("status") == "ON_HOLD":  # the status, not is_on_hold_order (the flow)
        return answer(ORDER_ON_HOLD, ON_HOLD_MESSAGE)
    wanted = body.get("order_line_item_ids")
    if not isinstance(wanted, list) or not wanted:
        return answer(36009003, "order_line_item_ids must list the package's line items")
    known = {str(item.get("id")): item for item in order.get("line_items") or []}
    if any(str(i) not in known for i in wanted):
        return answer(36009003, "a line item is not in the order")
    return None


async def create_packages(
    request: web.Request, tiktok: TikTokState, state: ShippingState, faults: FaultQueue
) -> web.Response:
    fault, replaced = await injected(faults, "tiktok_shipping")
    if replaced is not None:
        return replaced
    shop = await checked(request, tiktok)
    if isinstance(shop, web.Response):
        return shop
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return answer(36009003, "body is not JSON")
    order = tiktok.orders.get(str(body.get("order_id", "")))
    refused = refused_create(order, body)
    if refused is not None:
        return refused
    assert order is not None  # noqa: S101 (refused_create checked it)
    state.creates += 1
    await asyncio.sleep(state.latency())
    items = {str(i) for i in body["order_line_item_ids"]}
    if any(str(li.get("id")) in items and li.get("package_id") for li in order["line_items"]):
        state.refused_packed += 1
        return answer(ITEMS_ALREADY_PACKED, "a line item is already in a package")
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
    return answer(PACKAGE_NOT_FOUND, "package not found") if package is None else package


async def shipping_document(
    request: web.Request, tiktok: TikTokState, state: ShippingState
) -> web.Response:
    package = await checked_package(request, tiktok, state)
    if isinstance(package, web.Response):
        return package
    if request.query.get("document_type") != wire.DOCUMENT_TYPE:
        return answer(BAD_DOCUMENT_TYPE, "document_type must be SHIPPING_LABEL here")
    url = f"{request.url.origin()}/_sim/tiktok/documents/{package.package_id}.pdf"
    return answer(OK, "Success", {"doc_url": url, "tracking_number": package.tracking_number})


async def ship_package(
    request: web.Request, tiktok: TikTokState, state: ShippingState
) -> web.Response:
    package = await checked_package(request, tiktok, state)
    if isinstance(package, web.Response):
        return package
    if package.shipped:
        return answer(wire.PACKAGE_ALREADY_SHIPPED, "package already shipped")
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return answer(36009003, "body is not JSON")
    package.shipped = str(body.get("handover_method") or "PICKUP")
    return answer(OK, "Success", {})


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
    }
