"""Fake Shipium label API for carrier "TikTok Shop": slow, lognormal latency, real PDFs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BasicAuth, web

from devstack.simulator.faults import Fault, FaultQueue
from devstack.simulator.pdf import label_pdf
from devstack.simulator.render import RENDERERS, Label, address_lines

ITEM_REFERENCE_FIELD = "orderItemReferenceIdentifier"
TIKTOK_ORDER_ID_FIELD = "tikTokShopOrderId"


@dataclass
class ShipiumState:
    api_key: str
    latency_median_s: float
    latency_sigma: float
    per_parcel_s: float
    rng: random.Random
    tail_probability: float = 0.0
    tail_factor: float = 1.0
    rate_limit: float = 0.0  # calls per second; 0 means none
    render: bool = True  # real 4x6 labels (reportlab, Pillow); False: a tiny PDF (benchmarks)
    requests: list[dict[str, Any]] = field(default_factory=list)
    recent_calls: deque[float] = field(default_factory=deque)
    answers: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # None: in progress
    rate_limited: int = 0
    shipment_ids: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    # A capacity model (0: none): above ``capacity`` calls at once a call's latency grows
    # with the crowd (in flight / capacity, as a queue would); above twice the capacity
    # the call is refused with 429 and Retry-After. ``capacity_schedule`` changes it at
    # scripted times: (seconds after ``started``, capacity), in order.
    capacity: int = 0
    capacity_schedule: list[tuple[float, int]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    overloaded: int = 0  # calls refused by the capacity model
    calls: int = 0  # every create call answered or refused

    def capacity_now(self, now: float) -> int:
        capacity = self.capacity
        for at, value in self.capacity_schedule:
            if now - self.started >= at:
                capacity = value
        return capacity

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.shipment_ids.values() if n > 1)

    def latency(self, parcels: int) -> float:
        if self.latency_median_s <= 0:
            return 0.0
        base = self.latency_median_s * math.exp(self.rng.gauss(0, self.latency_sigma))
        if self.rng.random() < self.tail_probability:
            base *= self.tail_factor
        return base + self.per_parcel_s * max(0, parcels - 1)

    def over_rate(self, now: float) -> bool:
        """A sliding one-second window of accepted calls, like a per-key rate limit."""
        if self.rate_limit <= 0:
            return False
        while self.recent_calls and now - self.recent_calls[0] > 1.0:
            self.recent_calls.popleft()
        if len(self.recent_calls) >= self.rate_limit:
            self.rate_limited += 1
            return True
        self.recent_calls.append(now)
        return False


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message, "status": status}, status=status, headers=headers)


def tracking_id(partner_shipment_id: str, index: int) -> str:
    digest = hashlib.sha256(f"{partner_shipment_id}/{index}".encode()).hexdigest()[:18].upper()
    return f"TT{digest}"


def package_label(
    shipment: dict[str, Any],
    index: int,
    package: dict[str, Any],
    count: int,
    formats: list[str],
    render: bool,
) -> dict[str, Any]:
    """One package's label in each format the request asked for."""
    partner_id = str(shipment["partnerShipmentId"])
    tracking = tracking_id(partner_id, index)
    items = [q.get(ITEM_REFERENCE_FIELD, "?") for q in package.get("orderItemQuantities", [])]
    if not render:
        tiny = label_pdf(["TikTok Shop", f"Tracking {tracking}", *items[:8]])
        documents = dict.fromkeys(formats, tiny)
    else:
        weight = package.get("totalWeight") or {}
        label = Label(
            tracking=tracking,
            service="TikTok Shop Standard",
            order_id=str(shipment.get(TIKTOK_ORDER_ID_FIELD, "")),
            box_id=str(package.get("partnerPackageId") or ""),
            index=index + 1,
            count=count,
            weight=f"{weight.get('weight', '?')} {weight.get('weightUnit', '')}".strip(),
            ship_from=address_lines(shipment.get("shipFromAddress") or {}),
            ship_to=address_lines(shipment.get("destinationAddress") or {}),
            item_ids=[str(i) for i in items],
        )
        documents = {fmt: RENDERERS[fmt](label) for fmt in formats}
    return {
        "packageScannableId": tracking,
        "labelImages": [
            {"imageFormat": fmt, "imageContents": base64.b64encode(data).decode()}
            for fmt, data in documents.items()
        ],
    }


def label_formats(body: dict[str, Any]) -> list[str]:
    asked = (body.get("labelParameters") or {}).get("labelFormats") or ["pdf"]
    return [f for f in asked if f in RENDERERS] or ["pdf"]


def validate(body: dict[str, Any]) -> str:
    shipment = body.get("shipmentParameters")
    if not isinstance(shipment, dict):
        return "shipmentParameters is required"
    if not shipment.get("partnerShipmentId"):
        return "shipmentParameters.partnerShipmentId is required"
    packages = shipment.get("multiParcelShipmentParameters") or [shipment]
    for n, package in enumerate(packages):
        quantities = package.get("orderItemQuantities") or []
        if not quantities:
            return f"package {n}: orderItemQuantities is required for TikTok Shop"
        if any(not q.get(ITEM_REFERENCE_FIELD) for q in quantities):
            return f"package {n}: {ITEM_REFERENCE_FIELD} is required for every TikTok Shop item"
    return ""


async def create_label(
    request: web.Request, state: ShipiumState, faults: FaultQueue
) -> web.Response:
    refused = await refusal(request, state)
    if isinstance(refused, web.Response):
        return refused
    body = refused
    shipment = body["shipmentParameters"]
    packages = shipment.get("multiParcelShipmentParameters") or [shipment]
    partner_id = str(shipment["partnerShipmentId"])
    previous = state.answers.get(partner_id)
    state.answers[partner_id] = None  # in progress: a lookup now answers 409
    state.in_flight += 1
    state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
    try:
        fault = faults.next("shipium")
        failed = await work(state, fault, len(packages))
    finally:
        state.in_flight -= 1
    if failed is not None:  # a failed call made no shipment
        if previous is None:
            del state.answers[partner_id]
        else:
            state.answers[partner_id] = previous
        return failed
    answer = await make_answer(state, body, shipment, packages, partner_id)
    if fault is not None and fault.after == "created" and fault.status != 200:
        if fault.status == 0 and request.transport is not None:  # made, then the line drops
            request.transport.close()
        return error(fault.status or 502, fault.message)  # made, but answered an error
    return web.json_response(answer, dumps=lambda o: orjson.dumps(o).decode())


def unauthorized(request: web.Request, state: ShipiumState) -> web.Response | None:
    """401 unless the request carries the API key (HTTP Basic, the key as the user)."""
    try:
        auth = BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        return error(401, "missing or malformed API key")
    if not secrets.compare_digest(auth.login, state.api_key):
        return error(401, "invalid API key")
    return None


async def refusal(request: web.Request, state: ShipiumState) -> web.Response | dict[str, Any]:
    """The error answer for a request refused before any work (key, body, rate), or its
    body."""
    refused = unauthorized(request, state)
    if refused is not None:
        return refused
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "body is not JSON")
    problem = validate(body)
    if problem:
        return error(400, problem)
    if state.over_rate(time.monotonic()):
        return error(429, "rate limit exceeded", {"Retry-After": "1"})
    return dict(body)


async def work(state: ShipiumState, fault: Fault | None, parcels: int) -> web.Response | None:
    """The call's time (slower when crowded past capacity), or the error it ends in before
    a shipment is made: a scripted fault, or 429 when far over capacity."""
    if fault is not None:
        await asyncio.sleep(fault.delay_s)
        if fault.status != 200 and fault.after != "created":
            headers = (
                {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            )
            return error(fault.status, fault.message, headers)
    state.calls += 1
    capacity = state.capacity_now(time.monotonic())
    crowd = state.in_flight / capacity if capacity else 1.0
    if crowd > 2:
        state.overloaded += 1
        return error(429, "over capacity", {"Retry-After": "1"})
    await asyncio.sleep(state.latency(parcels) * max(1.0, crowd))
    return None


async def make_answer(
    state: ShipiumState,
    body: dict[str, Any],
    shipment: dict[str, Any],
    packages: list[dict[str, Any]],
    partner_id: str,
) -> dict[str, Any]:
    """The shipment is made: its labels rendered, its answer kept for lookups."""
    state.shipment_ids[partner_id] += 1
    state.requests.append(body)
    formats = label_formats(body)
    labels = await asyncio.to_thread(
        lambda: [
            package_label(shipment, n, p, len(packages), formats, state.render)
            for n, p in enumerate(packages)
        ]
    )
    answer: dict[str, Any] = {
        "shipiumShipmentId": f"shp_{hashlib.sha256(partner_id.encode()).hexdigest()[:16]}",
        "carrierSelectionId": f"cs_{secrets.token_hex(8)}",
        "shipiumLabelId": f"lbl_{secrets.token_hex(8)}",
        "carrier": "TikTok Shop",
        "serviceMethod": "TikTok Shop Standard",
        "partnerShipmentId": partner_id,
    }
    if len(packages) > 1:
        answer["multiParcelLabels"] = [{"carrierLabel": label} for label in labels]
    else:
        answer["carrierLabel"] = labels[0]
    state.answers[partner_id] = answer
    return answer


async def find_label(request: web.Request, state: ShipiumState) -> web.Response:
    """The label already made for a partnerShipmentId: 404 if none, 409 while in progress."""
    refused = unauthorized(request, state)
    if refused is not None:
        return refused
    partner_id = request.match_info["partner_shipment_id"]
    if partner_id not in state.answers:
        return error(404, f"no shipment {partner_id}")
    answer = state.answers[partner_id]
    if answer is None:
        return error(409, f"shipment {partner_id} is being labeled", {"Retry-After": "1"})
    return web.json_response(answer, dumps=lambda o: orjson.dumps(o).decode())
