"""The simulator's aiohttp app: TikTok Shop and Shipium on one port, plus /_sim admin routes.

Admin routes (devstack and tests only): ``PUT /_sim/tiktok/orders`` loads orders that
Get Order Detail will serve, ``PUT /_sim/tiktok/shops`` authorizes more shops (cipher ->
access token, refresh token, when the access token expires), ``GET /_sim/tiktok/shops``
shows each shop's live refresh token as a SHA-256 digest, ``POST /_sim/faults`` queues
scripted answers,
``GET /_sim/stats``, ``GET /_sim/shipium/requests`` and ``GET /_sim/tiktok/packages`` show
what was called and made.
Shipium's label lookup by partnerShipmentId is served too (404 none, 409 in progress), and
TikTok Shipping's packages, documents and handover (``tiktok_shipping.py``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiohttp import web

from devstack.simulator.faults import Fault, FaultQueue
from devstack.simulator.shipium import ShipiumState, create_label, find_label
from devstack.simulator.tiktok import TikTokState, order_detail, token_refresh
from devstack.simulator.tiktok_shipping import (
    ShippingState,
    create_packages,
    document,
    eligible_services,
    handover_time_slots,
    package_detail,
    ship_package,
    shipping_document,
)
from devstack.simulator.tiktok_shipping import stats as shipping_stats
from workers.labeler.shipium.request import LABEL_PATH, LOOKUP_PATH
from workers.labeler.tiktok_shipping import wire as shipping_wire
from workers.settings import Settings
from workers.tiktok import wire


@dataclass
class Simulator:
    tiktok: TikTokState
    shipium: ShipiumState
    faults: FaultQueue
    shipping: ShippingState = field(default_factory=ShippingState)

    @classmethod
    def from_settings(cls, settings: Settings) -> Simulator:
        sim = cls(
            tiktok=TikTokState(
                app_key=settings.tiktok_app_key,
                app_secret=settings.tiktok_app_secret.get_secret_value(),
                token_ttl_s=settings.sim_tiktok_token_ttl_s,
            ),
            shipium=ShipiumState(
                api_key=settings.shipium_api_key.get_secret_value(),
                latency_median_s=settings.sim_label_latency_median_s,
                latency_sigma=settings.sim_label_latency_sigma,
                per_parcel_s=settings.sim_label_per_parcel_s,
                tail_probability=settings.sim_label_tail_probability,
                tail_factor=settings.sim_label_tail_factor,
                rate_limit=settings.sim_label_rate_limit,
                render=settings.sim_label_render,
                capacity=settings.sim_label_capacity,
                rng=random.Random(settings.sim_seed),
            ),
            faults=FaultQueue(),
            shipping=ShippingState(
                latency_median_s=settings.sim_label_latency_median_s,
                rng=random.Random(settings.sim_seed),
            ),
        )
        sim.tiktok.add_shop(
            settings.tiktok_shop_cipher,
            settings.tiktok_access_token.get_secret_value(),
            settings.tiktok_refresh_token.get_secret_value(),
        )
        return sim

    def stats(self) -> dict[str, Any]:
        return {
            "tiktok": {
                "calls": self.tiktok.calls,
                "refreshes": self.tiktok.refreshes,
                "refused_refreshes": self.tiktok.refused_refreshes,
                "rejected_signatures": self.tiktok.rejected_signatures,
                "orders": len(self.tiktok.orders),
            },
            "shipium": {
                "labels": len(self.shipium.requests),
                "duplicate_partner_shipment_ids": self.shipium.duplicates,
                "peak_in_flight": self.shipium.peak_in_flight,
                "rate_limited": self.shipium.rate_limited,
                "in_flight": self.shipium.in_flight,
            },
            "tiktok_shipping": shipping_stats(self.shipping),
        }


SIM = web.AppKey("simulator", Simulator)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: orjson.dumps(o).decode())


def create_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIM] = sim

    async def detail(request: web.Request) -> web.Response:
        return await order_detail(request, sim.tiktok, sim.faults)

    async def refresh(request: web.Request) -> web.Response:
        return await token_refresh(request, sim.tiktok)

    async def label(request: web.Request) -> web.Response:
        return await create_label(request, sim.shipium, sim.faults)

    async def lookup(request: web.Request) -> web.Response:
        return await find_label(request, sim.shipium)

    async def packages(request: web.Request) -> web.Response:
        return await create_packages(request, sim.tiktok, sim.shipping, sim.faults)

    async def shipping_doc(request: web.Request) -> web.Response:
        return await shipping_document(request, sim.tiktok, sim.shipping, sim.faults)

    async def ship(request: web.Request) -> web.Response:
        return await ship_package(request, sim.tiktok, sim.shipping, sim.faults)

    async def eligible(request: web.Request) -> web.Response:
        return await eligible_services(request, sim.tiktok, sim.shipping, sim.faults)

    async def package(request: web.Request) -> web.Response:
        return await package_detail(request, sim.tiktok, sim.shipping)

    async def slots(request: web.Request) -> web.Response:
        return await handover_time_slots(request, sim.tiktok, sim.shipping)

    async def pdf(request: web.Request) -> web.Response:
        return await document(request, sim.shipping)

    app.router.add_get(wire.ORDER_DETAIL_PATH, detail)
    app.router.add_post(shipping_wire.PACKAGES_PATH, packages)
    app.router.add_get(shipping_wire.DOCUMENT_PATH, shipping_doc)
    app.router.add_post(shipping_wire.SHIP_PATH, ship)
    app.router.add_post(shipping_wire.ELIGIBLE_PATH, eligible)
    app.router.add_get(shipping_wire.PACKAGE_PATH, package)
    app.router.add_get(shipping_wire.HANDOVER_SLOTS_PATH, slots)
    app.router.add_get("/_sim/tiktok/documents/{name}", pdf)
    app.router.add_get(wire.TOKEN_REFRESH_PATH, refresh)
    app.router.add_post(LABEL_PATH, label)
    app.router.add_get(LOOKUP_PATH, lookup)
    app.router.add_put("/_sim/tiktok/orders", load_orders)
    app.router.add_put("/_sim/tiktok/shops", add_shops)
    app.router.add_get("/_sim/tiktok/shops", shops)
    app.router.add_post("/_sim/faults", faults)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_get("/_sim/shipium/requests", requests)
    app.router.add_get("/_sim/tiktok/packages", packages_made)
    app.router.add_get("/healthz", healthz)
    return app


# --- the devstack's admin routes (/_sim/...): what tests and demo traffic set and read ---


async def load_orders(request: web.Request) -> web.Response:
    orders = orjson.loads(await request.read())
    for order in orders:
        request.app[SIM].tiktok.orders[str(order["id"])] = order
    return json({"loaded": len(orders)})


async def add_shops(request: web.Request) -> web.Response:
    tiktok = request.app[SIM].tiktok
    for cipher, tokens in orjson.loads(await request.read()).items():
        shop = tiktok.add_shop(cipher, tokens["access_token"], tokens["refresh_token"])
        shop.access_expires_at = float(tokens.get("access_expires_at", 0))
    return json({"shops": len(tiktok.shops)})


async def shops(request: web.Request) -> web.Response:
    """Each shop's refresh token as a SHA-256 digest, never the token."""
    return json(
        {
            cipher: {"refresh_token_sha256": sha256(shop.refresh_token), "revoked": shop.revoked}
            for cipher, shop in request.app[SIM].tiktok.shops.items()
        }
    )


async def faults(request: web.Request) -> web.Response:
    raw = orjson.loads(await request.read())
    request.app[SIM].faults.push(raw["api"], [Fault.from_json(f) for f in raw["faults"]])
    return json({"queued": len(raw["faults"])})


async def stats(request: web.Request) -> web.Response:
    return json(request.app[SIM].stats())


async def requests(request: web.Request) -> web.Response:
    return json(request.app[SIM].shipium.requests)


async def packages_made(request: web.Request) -> web.Response:
    return json([asdict(p) for p in request.app[SIM].shipping.packages.values()])


async def healthz(request: web.Request) -> web.Response:
    return json({"status": "ok", "worker": "simulator"})


def run(settings: Settings) -> None:
    app = create_app(Simulator.from_settings(settings))
    web.run_app(
        app,
        host=settings.sim_host,
        port=settings.sim_port,
        print=None,
        access_log=None,
        shutdown_timeout=2.0,  # open connections of a stopped stack: closed, not waited on
    )
