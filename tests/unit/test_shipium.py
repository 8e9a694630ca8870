"""Shipium request builder and response parser: golden tests, no I/O."""

from __future__ import annotations

import base64

import pytest

from schemas.common import Address
from tests.unit.factories import BUYER, job
from workers.labeler.shipium.request import (
    ITEM_REFERENCE_FIELD,
    LABEL_PATH,
    METHOD,
    TIKTOK_ORDER_ID_FIELD,
    build_label_request,
)
from workers.labeler.shipium.response import (
    ShipiumError,
    parse_error,
    parse_label_response,
)

SHIP_FROM = Address(name="WH", street1="1 Dock", city="Reno", state="NV", postal_code="89502")


def test_url_and_method() -> None:
    assert (METHOD, LABEL_PATH) == ("POST", "/api/v1/shipment/carrierselection/label")


def test_single_parcel_request_carries_item_references() -> None:
    body = build_label_request(job("O9", parcels=1), BUYER, SHIP_FROM)
    shipment = body["shipmentParameters"]
    assert body["generateLabel"] is True
    assert body["labelParameters"]["labelFormats"] == ["pdf"]
    assert shipment["partnerShipmentId"] == "job-O9"
    assert shipment[TIKTOK_ORDER_ID_FIELD] == "O9"
    assert shipment["orderItemQuantities"] == [
        {ITEM_REFERENCE_FIELD: "O9-001", "productId": "prod-A", "quantity": 1},
        {ITEM_REFERENCE_FIELD: "O9-002", "productId": "prod-A", "quantity": 1},
    ]
    assert "multiParcelShipmentParameters" not in shipment
    assert shipment["destinationAddress"]["city"] == "Austin"
    assert shipment["shipFromAddress"]["postalCode"] == "89502"
    assert shipment["packagingType"]["linearDimensions"] == {
        "length": 10.0,
        "width": 8.0,
        "height": 4.0,
        "linearUnit": "in",
    }


def test_multi_parcel_request_has_one_entry_per_box_with_its_own_items() -> None:
    body = build_label_request(job("O9", parcels=3), BUYER, SHIP_FROM)
    packages = body["shipmentParameters"]["multiParcelShipmentParameters"]
    assert [p["partnerPackageId"] for p in packages] == ["O9-B0", "O9-B1", "O9-B2"]
    refs = [[q[ITEM_REFERENCE_FIELD] for q in p["orderItemQuantities"]] for p in packages]
    assert refs == [["O9-001", "O9-002"], ["O9-003", "O9-004"], ["O9-005", "O9-006"]]


def test_parse_multi_parcel_response() -> None:
    pdf = base64.b64encode(b"%PDF-1.4 x").decode()
    body = {
        "shipiumShipmentId": "shp_1",
        "shipiumLabelId": "lbl_1",
        "carrier": "TikTok Shop",
        "serviceMethod": "Standard",
        "multiParcelLabels": [
            {
                "carrierLabel": {
                    "packageScannableId": f"T{n}",
                    "labelImages": [{"imageFormat": "pdf", "imageContents": pdf}],
                }
            }
            for n in range(2)
        ],
    }
    parsed = parse_label_response(body, parcels=2)
    assert [p.tracking_id for p in parsed.packages] == ["T0", "T1"]
    assert parsed.packages[0].document == b"%PDF-1.4 x"
    assert (parsed.carrier, parsed.shipment_id) == ("TikTok Shop", "shp_1")


def test_parse_response_with_wrong_parcel_count_is_an_error() -> None:
    body = {"shipiumShipmentId": "s", "carrierLabel": {"packageScannableId": "T"}}
    with pytest.raises(ShipiumError) as info:
        parse_label_response(body, parcels=2)
    assert not info.value.retriable


@pytest.mark.parametrize(
    ("status", "retriable", "code"),
    [
        (400, False, "http_400"),
        (422, False, "http_422"),
        (429, True, "rate_limited"),
        (500, True, "http_500"),
        (503, True, "http_503"),
        (401, True, "unauthorized"),
    ],
)
def test_errors_carry_their_verdict(status: int, retriable: bool, code: str) -> None:
    err = parse_error(status, {"message": "bad destinationAddress.postalCode"}, retry_after_s=2.0)
    assert (err.retriable, err.code, err.status) == (retriable, code, status)
    assert err.message == "bad destinationAddress.postalCode"
    assert err.retry_after_s == 2.0
