"""Labels that look like labels, the right request per order, and where labels are kept."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pypdf import PdfReader

from devstack.simulator.render import Label, address_lines, pdf, png, zpl
from devstack.simulator.shipium import package_label
from schemas.common import Address
from tests.unit.factories import BUYER, LABEL, job
from workers.labeler import decide
from workers.labeler.codes import DECISIONS, FailureCode
from workers.labeler.shipium.request import (
    ITEM_REFERENCE_FIELD,
    TIKTOK_ORDER_ID_FIELD,
    build_label_request,
)
from workers.labeler.shipium.response import parse_label_response
from workers.labels.store import FolderStore, claim_name, manifest_name, put_document
from workers.settings import Settings, Warehouse
from workers.terminal import UsageError

RENO = Address(name="Dock 4", street1="1 Dock Rd", city="Reno", state="NV", postal_code="89502")


def test_the_pdf_is_a_4x6_label_with_the_tracking_id_addresses_and_item_ids() -> None:
    reader = PdfReader(io.BytesIO(pdf(LABEL)))
    (page,) = reader.pages
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (288, 432)
    text = page.extract_text()
    for wanted in (
        "TikTok Shop",
        "TT0123456789ABCDEF01",
        "Austin, TX 73301",
        "Reno, NV 89502",
        "Order 576460000000000001",
        "Box 576460000000000001-B2",
        "(2 of 3)",
        "2.4 lb",
        "576460000000000001000",
        "+2 more",
    ):
        assert wanted in text, wanted


def test_a_label_without_a_box_id_names_no_box() -> None:
    """Shipium's single-parcel request carries no package id: the label says which parcel
    it is, and never an invented "Box 1"."""
    single = Label(**{**LABEL.__dict__, "box_id": "", "index": 1, "count": 1})
    (page,) = PdfReader(io.BytesIO(pdf(single))).pages
    text = page.extract_text()
    assert "Parcel 1 of 1" in text and "Box" not in text
    assert "^FDParcel 1 of 1^FS" in zpl(single).decode()


def test_png_and_zpl_are_what_thermal_printers_take() -> None:
    image = Image.open(io.BytesIO(png(LABEL)))
    assert image.size == (812, 1218)  # 4x6 in at 203 dpi
    assert image.getextrema() == (0, 255)  # black on white: something is drawn
    text = zpl(LABEL).decode()
    assert text.startswith("^XA") and text.rstrip().endswith("^XZ")
    assert "^BCN,160,Y,N,N^FDTT0123456789ABCDEF01^FS" in text  # a Code128 barcode
    assert "Austin, TX 73301" in text
    assert zpl(Label(**{**LABEL.__dict__, "order_id": "a^XZb~c"})).count(b"^XZ") == 1


def test_the_simulator_answers_every_format_asked_and_the_labeler_reads_them() -> None:
    body = build_label_request(
        job("O7", parcels=2), BUYER, RENO, label_formats=["pdf", "zpl", "png"]
    )
    shipment = body["shipmentParameters"]
    packages = shipment["multiParcelShipmentParameters"]
    answer = {
        "shipiumShipmentId": "shp_1",
        "multiParcelLabels": [
            {"carrierLabel": package_label(shipment, n, p, 2, ["pdf", "zpl", "png"], True)}
            for n, p in enumerate(packages)
        ],
    }
    parsed = parse_label_response(answer, 2)
    assert [list(p.documents) for p in parsed.packages] == [["pdf", "zpl", "png"]] * 2
    text = PdfReader(io.BytesIO(parsed.packages[1].documents["pdf"])).pages[0].extract_text()
    assert "O7-B1" in text and "(2 of 2)" in text and "Austin" in text
    assert address_lines(shipment["destinationAddress"])[-2].startswith("Austin, TX")


def test_a_seller_shipped_order_never_gets_a_tiktok_shop_request() -> None:
    seller = job("S1").model_copy(update={"shipping_type": "SELLER"})
    refused = decide.routing_failure(seller, Settings(), 1)
    assert refused is not None and refused.error_code == FailureCode.SELLER_SHIPPED
    assert refused.message.startswith("seller-shipped order")
    assert FailureCode.SELLER_SHIPPED in DECISIONS  # a decision: never replayed
    assert decide.routing_failure(job("T1"), Settings(), 1) is None

    ordinary = Settings(seller_shipped="carrier-selection")
    assert decide.routing_failure(seller, ordinary, 1) is None
    shipment = build_label_request(seller, None, RENO, tiktok=False)["shipmentParameters"]
    assert TIKTOK_ORDER_ID_FIELD not in shipment
    assert all(ITEM_REFERENCE_FIELD not in q for q in shipment["orderItemQuantities"])


def test_the_orders_warehouse_picks_ship_from_and_context_and_an_unknown_one_fails() -> None:
    from workers.labeler.shipium.client import ShipiumClient

    east = Address(name="East", street1="9 Pier", city="Newark", state="NJ", postal_code="07114")
    settings = Settings(
        warehouses={"WH-E": Warehouse(ship_from=east, fulfillment_context={"site": "east"})}
    )
    client = ShipiumClient(None, settings)  # type: ignore[arg-type]
    shipment = client.request(job("W1").model_copy(update={"warehouse_id": "WH-E"}))
    assert shipment["shipmentParameters"]["shipFromAddress"]["city"] == "Newark"
    assert shipment["shipmentParameters"]["fulfillmentContext"] == {"site": "east"}
    unknown = decide.routing_failure(
        job("W2").model_copy(update={"warehouse_id": "X"}), settings, 1
    )
    assert unknown is not None and unknown.error_code == FailureCode.UNKNOWN_WAREHOUSE
    assert FailureCode.UNKNOWN_WAREHOUSE not in DECISIONS  # replayable once configured


def test_the_folder_store_names_everything_by_digest(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "labels")

    async def go() -> tuple[Any, bytes | None, bytes | None]:
        stored = await put_document(store, "../job", "box/1", "pdf", b"%PDF-1.4 x")
        await store.put(claim_name("../wh", "box/1"), json.dumps({"job_id": "../job"}).encode(), "")
        return (
            stored,
            await store.get(claim_name("../wh", "box/1")),
            await store.get(manifest_name("none")),
        )

    stored, pointer, missing = asyncio.run(go())
    assert Path(stored.uri).is_relative_to((tmp_path / "labels").resolve())
    assert stored.size == 10 and len(stored.sha256) == 64
    assert json.loads(pointer or b"{}") == {"job_id": "../job"}
    assert missing is None
    assert all(".." not in p.name and "/" not in p.name for p in tmp_path.rglob("*"))
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left behind
    for name in ("../x.json", f"jobs/../../{'a' * 64}.json", "jobs/short.json", "x/" + "a" * 64):
        with pytest.raises(ValueError, match="not a label store name"):
            asyncio.run(store.put(name, b"{}", "application/json"))


def test_prune_removes_only_what_is_older_than_asked(tmp_path: Path) -> None:
    import argparse
    import os
    import time

    from workers.tools import duration_s, labels_prune

    root = tmp_path / "labels"
    store = FolderStore(root)
    old = asyncio.run(put_document(store, "j1", "b1", "pdf", b"%PDF old"))
    new = asyncio.run(put_document(store, "j2", "b2", "pdf", b"%PDF new"))
    month_ago = time.time() - 31 * 86_400
    os.utime(old.uri, (month_ago, month_ago))
    settings = Settings(label_dir=root)
    assert labels_prune(settings, argparse.Namespace(older_than="30d")) == 0
    assert not Path(old.uri).exists() and Path(new.uri).exists()
    with pytest.raises(UsageError, match="works on the folder store"):
        labels_prune(Settings(label_store="s3://bucket/p"), argparse.Namespace(older_than="1d"))
    assert (duration_s("12h"), duration_s("90m"), duration_s("45")) == (43_200, 5_400, 45)
