"""TikTok Shipping's wire format (golden), the package look-up and the typed outcomes."""

from __future__ import annotations

import pytest

from schemas.common import Dimensions, Weight
from tests.unit.factories import job
from workers.errors import VendorCode, http_code
from workers.labeler import decide
from workers.labeler.codes import AMBIGUOUS, FailureCode
from workers.labeler.tiktok_shipping import wire
from workers.labeler.tiktok_shipping.client import label_error
from workers.settings import Settings
from workers.tiktok.client import TikTokCode, TikTokError
from workers.tiktok.wire import ORDER_ON_HOLD


def test_create_packages_body_names_the_box_items_weight_and_size() -> None:
    j = job("577", parcels=2)
    assert wire.create_package_body(j, j.parcels[1]) == {
        "order_id": "577",
        "order_line_item_ids": ["577-003", "577-004"],
        "weight": {"value": "2", "unit": "POUND"},
        "dimension": {"length": "10", "width": "8", "height": "4", "unit": "INCH"},
    }


def test_units_are_tiktoks_ounces_become_pounds_and_kilograms_grams() -> None:
    j = job("578")
    ounces = j.parcels[0].model_copy(update={"weight": Weight(value=24, unit="oz")})
    metric = j.parcels[0].model_copy(
        update={
            "weight": Weight(value=1.25, unit="kg"),
            "dimensions": Dimensions(length=30.5, width=20, height=10.25, unit="cm"),
        }
    )
    assert wire.create_package_body(j, ounces)["weight"] == {"value": "1.5", "unit": "POUND"}
    body = wire.create_package_body(j, metric)
    assert body["weight"] == {"value": "1250", "unit": "GRAM"}
    assert body["dimension"] == {
        "length": "30.5",
        "width": "20",
        "height": "10.25",
        "unit": "CM",
    }


def test_document_request_asks_for_a_4x6_pdf_label() -> None:
    assert wire.document_params() == {
        "document_type": "SHIPPING_LABEL",
        "document_size": "A6",
        "document_format": "PDF",
    }


def test_answers_are_read_and_an_answer_without_its_fields_is_refused() -> None:
    created = wire.parse_created(
        {"package_id": "1152", "shipping_service_info": {"name": "USPS Ground Advantage"}}
    )
    assert created == wire.Created("1152", "USPS Ground Advantage")
    doc = wire.parse_document({"doc_url": "https://x/1.pdf", "tracking_number": "9400"})
    assert doc == wire.Document("https://x/1.pdf", "9400")
    with pytest.raises(wire.BadAnswer):
        wire.parse_created({"order_id": "577"})
    with pytest.raises(wire.BadAnswer):
        wire.parse_document({"doc_url": "file:///etc/passwd"})
    # a package id goes into a request path: only TikTok's decimal ids are taken
    for hostile in ("../../order/202309/orders", "12/ship", "1?x=1", "1" * 33):
        with pytest.raises(wire.BadAnswer):
            wire.parse_created({"package_id": hostile})
        with pytest.raises(wire.BadAnswer):
            wire.packages_by_item(order_detail({"577-001": hostile}), "577")


def order_detail(packages: dict[str, str]) -> list[dict[str, object]]:
    items = [f"577-00{n}" for n in range(1, 5)]
    return [
        {"id": "other", "line_items": [{"id": "577-001", "package_id": "1199"}]},
        {"id": "577", "line_items": [{"id": i, "package_id": packages.get(i, "")} for i in items]},
    ]


def test_the_package_of_a_box_is_read_from_the_orders_line_items() -> None:
    j = job("577", parcels=2)
    none = wire.packages_by_item(order_detail({}), "577")
    assert none == {} and wire.package_of(j.parcels[0], none) is None
    first = wire.packages_by_item(order_detail({"577-001": "1101", "577-002": "1101"}), "577")
    assert wire.package_of(j.parcels[0], first) == "1101"
    assert wire.package_of(j.parcels[1], first) is None


@pytest.mark.parametrize(
    "packages",
    [
        {"577-001": "1101"},  # half the box packed
        {"577-001": "1101", "577-002": "1102"},  # split over two packages
        {"577-001": "1101", "577-002": "1101", "577-003": "1101"},  # with another box's item
    ],
)
def test_a_box_whose_items_are_packed_otherwise_is_refused(packages: dict[str, str]) -> None:
    j = job("577", parcels=2)
    with pytest.raises(wire.PackedElsewhere, match="577-B0"):
        wire.package_of(j.parcels[0], wire.packages_by_item(order_detail(packages), "577"))


def err(code: object, retriable: bool = False, status: int | None = None) -> TikTokError:
    return TikTokError("m", code=code, retriable=retriable, status=status)  # type: ignore[arg-type]


def test_tiktoks_answers_become_typed_outcomes() -> None:
    limited = label_error(err(VendorCode("36009002"), True), 60)
    assert (limited.code, limited.retriable) == (FailureCode.RATE_LIMITED, True)
    assert label_error(err(http_code(429), True), 60).code == FailureCode.RATE_LIMITED
    held = label_error(err(VendorCode(str(ORDER_ON_HOLD))), 45)
    assert (held.code, held.retriable, held.retry_after_s) == (FailureCode.ON_HOLD, True, 45)
    for code in (VendorCode("105002"), TikTokCode.REFRESH_ELSEWHERE):
        expired = label_error(err(code, True), 60)
        assert (expired.code, expired.retriable) == (FailureCode.TOKEN_EXPIRED, True)
    gone = label_error(err(TikTokCode.SHOP_UNAUTHORIZED), 60)
    assert (gone.code, gone.retriable) == (FailureCode.SHOP_UNAUTHORIZED, False)
    dropped = label_error(err(TikTokCode.CONNECTION, True), 60)
    assert dropped.code in AMBIGUOUS and dropped.retriable
    unknown = label_error(err(http_code(504), True, 504), 60)
    assert unknown.code in AMBIGUOUS and unknown.retriable
    refused = label_error(err(VendorCode("21011017")), 60)
    assert (refused.code, refused.retriable) == ("21011017", False)
    # TikTok's reference decides: already bought is looked up, no service ends the box
    bought = label_error(err(VendorCode("21022025")), 60)
    assert (bought.code, bought.retriable) == (FailureCode.ALREADY_DONE, True)
    none = label_error(err(VendorCode("21011037")), 60)
    assert (none.code, none.retriable) == (FailureCode.NO_SHIPPING_SERVICE, False)
    gone = label_error(err(VendorCode("21042102")), 60)
    assert (gone.code, gone.retriable) == (FailureCode.DOCUMENT_GONE, False)


def test_the_provider_is_chosen_per_shop_and_seller_shipped_orders_never_reach_tiktok() -> None:
    settings = Settings(label_provider="shipium", label_providers={"shop-1": "tiktok"})
    tiktok_job, other = job("577"), job("578").model_copy(update={"shop_id": "shop-2"})
    assert decide.provider_of(tiktok_job, settings) == "tiktok"
    assert decide.provider_of(other, settings) == "shipium"
    selection = settings.model_copy(update={"seller_shipped": "carrier-selection"})
    seller = {"shipping_type": "SELLER"}
    refused = decide.routing_failure(tiktok_job.model_copy(update=seller), selection, 1)
    assert refused is not None and refused.error_code == FailureCode.SELLER_SHIPPED
    assert decide.routing_failure(other.model_copy(update=seller), selection, 1) is None


def test_weights_and_sizes_are_rounded_up_never_under_declared() -> None:
    assert wire.amount(1 / 16) == "0.07"  # 1 oz in lb: 0.0625
    assert wire.amount(0.1) == "0.1" and wire.amount(2.0) == "2" and wire.amount(0.011) == "0.02"
    ounce = job("577").parcels[0]
    ounce = ounce.model_copy(update={"weight": ounce.weight.model_copy(update={"value": 1.0})})
    ounce = ounce.model_copy(update={"weight": ounce.weight.model_copy(update={"unit": "oz"})})
    assert wire.package_attributes(ounce)["weight"] == {"value": "0.07", "unit": "POUND"}


def test_the_first_bookable_pickup_slot_is_taken() -> None:
    slots = {
        "pickup_slots": [
            {"start_time": 300, "end_time": 400, "avaliable": True},
            {"start_time": 100, "end_time": 200, "avaliable": True},  # ended
            {"start_time": 250, "end_time": 300, "avaliable": False},
            {"start_time": "x", "end_time": 1, "available": True},
        ]
    }
    assert wire.first_pickup_slot(slots, now_s=220) == {"start_time": 300, "end_time": 400}
    assert wire.first_pickup_slot({}, now_s=0) is None
    assert wire.ship_body("PICKUP", {"start_time": 1, "end_time": 2}) == {
        "handover_method": "PICKUP",
        "pickup_slot": {"start_time": 1, "end_time": 2},
    }


def test_a_cancelled_package_holds_no_items() -> None:
    detail = {"package_status": "CANCELLED", "order_line_item_ids": ["1", "2"]}
    assert wire.items_of_package(detail) == []
    assert wire.items_of_package({**detail, "package_status": "PROCESSING"}) == ["1", "2"]


def test_the_codes_table_in_the_docs_is_current() -> None:
    """docs/tiktok.md lists every documented code as workers/tiktok/codes.py handles it."""
    from pathlib import Path

    from devstack.docs import codes_table

    text = (Path(__file__).parents[2] / "docs" / "tiktok.md").read_text()
    assert codes_table() in text, "docs/tiktok.md is stale: run `make docs`"
