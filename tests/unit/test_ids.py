"""Ids that validate are ids that work: properties over the schemas' whole id space.

Any id the schemas accept (1 to 128 printable characters after stripping, any unicode:
multi-byte, path characters) goes through the join, the auditor's replay, the Shipium request
builder and the label file names without an error, and every id derived from it fits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.box import BoxClosed, BoxItem
from schemas.codec import encode
from schemas.common import ID_MAX, Address, Dimensions, Weight, derived_id, printable
from schemas.label import LabelJob
from schemas.order import LineItem, Order, OrderStatus
from tests.unit.factories import job as make_job
from workers.auditor.audit import Audit, Ref
from workers.labeler import decide
from workers.labeler.shipium.request import build_label_request
from workers.labels.store import FolderStore, document_name, put_document
from workers.planner.join import OrderState, encode_step, on_event

SHIP_FROM = Address(name="WH", street1="1 Dock", city="Reno", state="NV", postal_code="89502")
ADVERSARIAL = st.sampled_from(
    ["é" * 128, "x" * 128, "../../../x", "/etc/passwd", "a/b", "a_b", "a\\b", ".", "..", "a\u200db"]
)


def valid_id(text: str) -> bool:
    try:
        printable(text)
    except ValueError:
        return False
    return 0 < len(text.strip()) <= ID_MAX and text == text.strip()


ids = (st.text(min_size=1, max_size=ID_MAX) | ADVERSARIAL).filter(valid_id)


def order_with(order_id: str, skus: list[str]) -> Order:
    items = [
        LineItem(item_id=f"{n}-{sku}"[:ID_MAX], sku_id=sku, product_id="p")
        for n, sku in enumerate(skus)
    ]
    return Order(
        event_id=order_id,
        order_id=order_id,
        shop_id=order_id,
        status=OrderStatus.AWAITING_SHIPMENT,
        line_items=items,
        update_time=1,
    )


def box_with(order_id: str, box_id: str, sku: str, last: bool) -> BoxClosed:
    return BoxClosed(
        event_id=box_id,
        box_id=box_id,
        order_id=order_id,
        station_id=box_id,
        items=[BoxItem(sku=sku, quantity=1)],
        weight=Weight(value=1),
        dimensions=Dimensions(length=1, width=1, height=1),
        last_box=last,
        closed_at_ms=1,
    )


@settings(max_examples=150, deadline=None)
@given(order_id=ids, box_ids=st.lists(ids, min_size=1, max_size=3, unique=True), sku=ids)
def test_any_valid_ids_join_into_plans_and_a_job_that_fit(
    order_id: str, box_ids: list[str], sku: str
) -> None:
    events: list[Order | BoxClosed] = [order_with(order_id, [sku] * len(box_ids))]
    events += [box_with(order_id, b, sku, last=False) for b in box_ids]
    state = OrderState(order_id=order_id)
    jobs: list[LabelJob] = []
    plan_ids: set[str] = set()
    audit = Audit(repair_after_ms=1, box_wait_ms=1, label_after_ms=1)
    for n, event in enumerate(events):
        encoded = encode_step(state, on_event(state, event, n), 1024 * 1024)
        state = encoded.step.state
        jobs += encoded.step.jobs
        plan_ids |= {p.event_id for p in encoded.step.plans}
        if isinstance(event, Order):
            audit.on_order(event, n, Ref(0, n))
        else:
            audit.on_box(event, order_id.encode(), encode(event), n, Ref(0, n))
    assert len(plan_ids) == len(box_ids)  # one plan id per box, never shared
    assert [sorted(p.box_id for p in j.parcels) for j in jobs] == [sorted(box_ids)]
    job = jobs[0]
    assert len(job.job_id) <= ID_MAX
    assert all(len(i) <= ID_MAX for i in plan_ids)
    # the auditor's replay agrees that every box should have a plan now
    assert {b for (_, b), w in audit.waiting.items() if w.due_since_ms is not None} == set(box_ids)
    # the labeler's records and request for that job
    body = orjson.dumps(build_label_request(job, None, SHIP_FROM))
    assert orjson.loads(body)["shipmentParameters"]["partnerShipmentId"] == job.job_id
    for record in (decide.attempt(job, 1), decide.cancellation(job, True, 1)):
        assert len(record.event_id) <= ID_MAX


@settings(max_examples=200, deadline=None)
@given(job_id=ids, box_a=ids, box_b=ids)
def test_label_file_names_are_digests_inside_the_folder_and_never_shared(
    job_id: str, box_a: str, box_b: str
) -> None:
    a, b = document_name(job_id, box_a, "pdf"), document_name(job_id, box_b, "pdf")
    assert (a == b) == (box_a == box_b)
    for name in (a, b):
        folder, file = name.split("/")
        assert len(folder) == 2 and len(file) == 64 + len(".pdf")
        assert all(c in "0123456789abcdef" for c in file.removesuffix(".pdf"))


def test_hostile_ids_and_formats_stay_in_the_label_folder_with_private_modes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "labels"
    written = set()
    for job_id, box_id, fmt in [
        ("../../../x", "a/b", "pdf"),
        ("/etc/passwd", "a_b", "../../sh"),
        ("x" * 128, "a\x00b", "PNG"),
        ("é" * 128, "é" * 128, "zpl"),
    ]:
        path = asyncio.run(put_document(FolderStore(root), job_id, box_id, fmt, b"%PDF-1.4 l")).uri
        assert Path(path).resolve().is_relative_to(root.resolve())
        assert Path(path).stat().st_mode & 0o777 == 0o600
        assert Path(path).parent.stat().st_mode & 0o777 == 0o700
        assert Path(path).suffix in {".pdf", ".png", ".zpl", ".bin"}
        written.add(path)
    assert len(written) == 4
    assert root.stat().st_mode & 0o777 == 0o700
    assert not list(tmp_path.glob("*.pdf")) and not Path("/etc/passwd.pdf").exists()


@given(parts=st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_derived_ids_always_fit_and_are_deterministic(parts: list[str]) -> None:
    made = derived_id("prefix", *parts)
    assert 0 < len(made) <= ID_MAX and made == derived_id("prefix", *parts)


def test_derived_ids_of_different_parts_differ() -> None:
    assert derived_id("plan", "a-b", "c") != derived_id("plan", "a", "b-c")
    assert derived_id("label", "short") == "label-short"
    assert derived_id("label", "x" * 128) != derived_id("label", "x" * 127 + "y")


def test_a_job_id_at_the_maximum_makes_records_that_validate() -> None:
    job = make_job("O1").model_copy(update={"job_id": "j" * 128})
    assert len(decide.failure(job, "http_400", "m" * 10_000, False, 1, 1).event_id) <= ID_MAX
    assert len(decide.failure(job, "http_400", "m" * 10_000, False, 1, 1).message) <= 2000
