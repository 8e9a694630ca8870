"""parcelflow's reading of TikTok's API held against another one: the MIT-licensed
``tiktok-shop-api`` package, generated from TikTok's OpenAPI documents.

Where both model the same API version (the signer, the webhook verifier, the Fulfillment
calls of 202309), parcelflow's requests and the simulator's answers must parse into the
package's models with no field it does not know. Where the package models a newer version
(Create Packages 202512, Get Order Detail 202507), only the fields parcelflow reads are
compared.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import attrs
import orjson
from hypothesis import given
from hypothesis import strategies as st
from tiktok_shop_api.generated.models import (
    GetEligibleShippingServicesRequest,
    GetEligibleShippingServicesResponse,
    GetOrderDetailResponseDataOrder,
    GetPackageDetailResponse,
    GetPackageHandoverTimeSlotsResponse,
    GetPackageShippingDocumentResponse,
    ShipPackageRequest,
)
from tiktok_shop_api.signing import Signer
from tiktok_shop_api.webhooks import Webhooks

from devstack.demo_data import make_demo
from devstack.simulator.app import Simulator, create_app
from tests.conftest import FAKE_SECRETS
from tests.unit.factories import job
from workers.labeler.tiktok_shipping import wire
from workers.settings import Settings
from workers.tiktok.signing import api_signature, webhook_signature
from workers.tiktok.wire import ACCESS_TOKEN_HEADER, parse_order

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@given(
    secret=texts.filter(bool),
    path=texts.map(lambda t: "/" + t),
    params=st.dictionaries(texts.filter(bool), texts, max_size=6),
    body=texts,
)
def test_the_api_signature_is_the_packages(
    secret: str, path: str, params: dict[str, str], body: str
) -> None:
    theirs = Signer.sign(
        path=path,
        query=list(params.items()),
        content_type="application/json",
        body=body.encode(),
        app_secret=secret,
    )
    assert api_signature(secret, path, params, body.encode()) == theirs


@given(key=texts, secret=texts.filter(bool), body=st.binary(max_size=200))
def test_the_webhook_signature_is_the_packages(key: str, secret: str, body: bytes) -> None:
    signature = webhook_signature(key, secret, body)
    assert Webhooks.verify(app_key=key, app_secret=secret, raw_body=body, signature=signature)


def unknown_fields(model: Any, where: str = "") -> list[str]:
    """Fields of a parsed model (at any depth) that the package's model does not know."""
    if isinstance(model, list):
        return [f for n, item in enumerate(model) for f in unknown_fields(item, f"{where}[{n}]")]
    if not attrs.has(type(model)):
        return []
    found = [f"{where}.{k}" for k in getattr(model, "additional_properties", {})]
    for field in attrs.fields(type(model)):
        if field.init:
            found += unknown_fields(getattr(model, field.name), f"{where}.{field.name}")
    return found


def test_parcelflows_requests_are_the_packages_models() -> None:
    parcel = job("577").parcels[0]
    eligible = GetEligibleShippingServicesRequest.from_dict(wire.package_attributes(parcel))
    assert unknown_fields(eligible) == []
    ship = ShipPackageRequest.from_dict(wire.ship_body("PICKUP", {"start_time": 1, "end_time": 2}))
    assert unknown_fields(ship) == []


def test_the_order_fields_parcelflow_reads_are_the_packages() -> None:
    """Get Order Detail: the package models 202507, parcelflow calls 202309; the fields
    parcelflow reads have the same names and types in both."""
    for demo in make_demo(20, seed=3, run_id=1, now_s=1_700_000_000, flows=True):
        theirs = GetOrderDetailResponseDataOrder.from_dict(demo.tiktok)
        ours = parse_order(demo.tiktok, "shop", "ev")
        assert ours.order_id == theirs.id and ours.status == theirs.status
        assert ours.paid_time == theirs.paid_time
        assert ours.buyer_cancel_requested == theirs.is_buyer_request_cancel
        flow_on_hold = theirs.is_on_hold_order
        assert (ours.ship_after == 0) == (flow_on_hold is True)
        assert [i.item_id for i in ours.line_items] == [li.id for li in theirs.line_items]
        assert ours.warehouse_id == theirs.warehouse_id


async def test_the_simulators_fulfillment_answers_are_the_packages_models(serve: Any) -> None:
    """Each 202309 Fulfillment answer the simulator gives parses into the package's
    response model without a field it does not know."""
    settings = Settings(**FAKE_SECRETS)
    sim = Simulator.from_settings(settings)
    sim.shipping.document_pending_calls = 0
    url = await serve(create_app(sim))
    j = job("577")
    items = [item for parcel in j.parcels for item in parcel.items]
    sim.tiktok.orders[j.order_id] = {
        "id": j.order_id,
        "status": "AWAITING_SHIPMENT",
        "is_on_hold_order": True,
        "line_items": [{"id": i.item_id, "sku_id": i.sku_id} for i in items],
    }
    secret = settings.tiktok_app_secret.get_secret_value()

    async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
        raw = orjson.dumps(body) if body is not None else b""
        params = {
            "app_key": settings.tiktok_app_key,
            "timestamp": str(int(time.time())),
            "shop_cipher": settings.tiktok_shop_cipher,
        }
        if path.endswith("shipping_documents"):
            params |= wire.document_params()
        params["sign"] = api_signature(secret, path, params, raw)
        headers = {ACCESS_TOKEN_HEADER: settings.tiktok_access_token.get_secret_value()}
        async with http.request(
            method, url + path, params=params, data=raw or None, headers=headers
        ) as response:
            answer = await response.json()
        assert answer["code"] == 0, answer
        return answer

    async with aiohttp.ClientSession() as http:
        path = wire.ELIGIBLE_PATH.format(order_id=j.order_id)
        eligible = await call(http, "POST", path, wire.package_attributes(j.parcels[0]))
        created = await call(
            http, "POST", wire.PACKAGES_PATH, wire.create_package_body(j, j.parcels[0])
        )
        package = created["data"]["package_id"]
        answers = {
            "eligible": (GetEligibleShippingServicesResponse, eligible),
            "detail": (
                GetPackageDetailResponse,
                await call(http, "GET", wire.PACKAGE_PATH.format(package_id=package)),
            ),
            "slots": (
                GetPackageHandoverTimeSlotsResponse,
                await call(http, "GET", wire.HANDOVER_SLOTS_PATH.format(package_id=package)),
            ),
            "document": (
                GetPackageShippingDocumentResponse,
                await call(http, "GET", wire.DOCUMENT_PATH.format(package_id=package)),
            ),
        }
    for name, (model, answer) in answers.items():
        parsed = model.from_dict(answer)
        assert unknown_fields(parsed) == [], name
    detail = answers["detail"][1]["data"]
    assert wire.items_of_package(detail) == [i.item_id for i in j.parcels[0].items]
    slot = wire.first_pickup_slot(answers["slots"][1]["data"], int(time.time()))
    assert slot is not None
