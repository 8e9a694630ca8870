"""The dashboard's board: what the page shows, folded from topic records."""

from __future__ import annotations

from schemas.alert import Alert
from schemas.codec import encode
from schemas.label import LabelFailure, LabelResult, ParcelLabel
from schemas.plan import ParcelPlan
from schemas.repair import RepairRequest
from tests.unit.factories import box, job, order
from workers.dashboard.board import Board

T = 1_800_000_000_000  # a minute boundary


def label(order_id: str, latency_ms: int, labeled_at_ms: int) -> bytes:
    return encode(
        LabelResult(
            event_id=f"label-job-{order_id}",
            job_id=f"job-{order_id}",
            order_id=order_id,
            carrier="TikTok Shop",
            service="std",
            shipment_id="s",
            parcels=[ParcelLabel(box_id=f"{order_id}-B0", tracking_id="t")],
            attempts=1,
            latency_ms=latency_ms,
            call_ms=latency_ms,
            labeled_at_ms=labeled_at_ms,
        )
    )


def failure(order_id: str, code: str = "http_400") -> bytes:
    return encode(
        LabelFailure(
            event_id=f"failure-job-{order_id}",
            job_id=f"job-{order_id}",
            order_id=order_id,
            error_code=code,
            message="destinationAddress.postalCode invalid",
            retriable=False,
            attempts=1,
            job=job(order_id),
            failed_at_ms=T,
        )
    )


def test_counts_each_id_once_and_measures_each_stage() -> None:
    board = Board()
    for n in range(3):
        oid = f"O{n}"
        board.take("orders", encode(order(oid)), T)
        board.take("orders", encode(order(oid)), T + 5)  # read twice: counted once
        board.take("boxes", encode(box(f"{oid}-B0", {"A": 2}, order_id=oid)), T + 1_000)
        board.take("jobs", encode(job(oid)), T + 1_100)
        board.take("labels", label(oid, latency_ms=400 + n, labeled_at_ms=T + 1_500), T + 1_500)
    board.take("plans", b"not json", T)  # undecodable records are skipped, not fatal
    snap = board.snapshot(T + 59_000)
    assert snap["totals"] | {"rejected_plans": 0} == {
        "orders": 3,
        "boxes": 3,
        "plans": 0,
        "jobs": 3,
        "labels": 3,
        "failures": 0,
        "rejected_plans": 0,
    }
    assert snap["last_minute"]["labels"] == 3 and snap["per_minute"]["labels"][-1] == 3
    box_to_job = snap["latency"]["box_to_job"]
    assert (box_to_job["count"], box_to_job["p50"], box_to_job["max"]) == (3, 100, 100)
    assert snap["latency"]["job_to_label"]["max"] == 402
    assert snap["latency"]["order_to_label"]["p99"] == 1_500
    board.limits.append((T, 16.0))
    assert board.snapshot(T)["limit"] == {"times": [T], "values": [16.0]}
    assert sum(snap["latency"]["job_to_label"]["histogram"]) == 3


def test_a_job_read_before_its_boxes_is_measured_when_the_last_box_comes() -> None:
    board = Board()
    board.take("boxes", encode(box("J1-B0", {"A": 2}, order_id="J1")), T + 1_000)
    board.take("jobs", encode(job("J1", parcels=2)), T + 1_300)  # before its box B1
    board.take("jobs", encode(job("J2")), T + 2_000)  # its box never comes
    assert board.snapshot(T + 3_000)["latency"]["box_to_job"]["count"] == 0
    board.take("boxes", encode(box("J1-B1", {"A": 2}, order_id="J1")), T + 1_200)
    box_to_job = board.snapshot(T + 3_000)["latency"]["box_to_job"]
    assert (box_to_job["count"], box_to_job["max"]) == (1, 100)  # from the later box
    assert list(board.early_jobs) == ["job-J2"] and list(board.job_of_box) == ["J2-B0"]


def test_failures_show_until_a_replay_labels_them_and_alerts_name_the_shops() -> None:
    board = Board()
    board.take("failures", failure("F1"), T)
    board.take("failures", failure("F2", code="seller_shipped"), T)
    snap = board.snapshot(T)
    assert [(f["job_id"], f["replayable"]) for f in snap["failures"]] == [
        ("job-F2", False),  # a decision: not replayable
        ("job-F1", True),
    ]
    assert snap["failure_reasons"] == {"http_400": 1, "seller_shipped": 1}
    board.take("labels", label("F1", 10, T), T + 1)  # the replayed job got its label
    assert [f["job_id"] for f in board.snapshot(T)["failures"]] == ["job-F2"]

    for kind in ("shop_reauthorization_required", "authorization_expiring"):
        alert = Alert(event_id=f"a-{kind}", kind=kind, shop_id="S9", message="m", at_ms=T)
        board.take("alerts", encode(alert), T)
    repair = RepairRequest(
        event_id="r-1", order_id="R", partition=0, order_offset=3, requested_at_ms=T
    )
    board.take("repairs", encode(repair), T)
    board.take("repairs", encode(repair.model_copy(update={"event_id": "r-2"})), T)
    board.take("parked", b"{}", T)
    snap = board.snapshot(T)
    assert snap["reauthorize"] == ["S9"]
    assert len(snap["alerts"]) == 2
    assert (snap["repairs"], snap["parked"]) == (1, 1)


def test_memory_is_bounded_by_its_limits() -> None:
    board = Board(keep=10, samples=5)
    for n in range(100):
        board.take("orders", encode(order(f"O{n}")), T + n * 60_000)
        board.take("labels", label(f"O{n}", 1, T), T + n * 60_000)
    assert len(board.seen["orders"]) == 10 and len(board.order_in_ms) == 10
    assert len(board.latency["job_to_label"]) == 5
    assert len(board.per_minute) == 60
    assert board.totals["orders"] == 100


def test_the_per_minute_plot_spans_the_run_not_an_hour() -> None:
    board = Board()
    board.take("orders", encode(order("O1")), T + 10_000)
    minutes = board.snapshot(T + 30_000)["per_minute"]["minutes"]
    assert len(minutes) == 5 and minutes[-1] == T  # a short run: the last 5 minutes
    board.take("orders", encode(order("O2")), T - 20 * 60_000)
    minutes = board.snapshot(T + 30_000)["per_minute"]["minutes"]
    assert (minutes[0], len(minutes)) == (T - 20 * 60_000, 21)  # from the first minute
    late = board.snapshot(T + 3 * 3_600_000)["per_minute"]["minutes"]
    assert len(late) == 60  # at most the last hour


def test_held_orders_are_shown_until_their_plan_or_job_comes() -> None:
    from workers.labeler.operations import still_held

    held = ParcelPlan(
        event_id="plan-held-1",
        order_id="H1",
        box_id="B1",
        status="held",
        reason="remorse window",
        release_at_ms=5_000,
    )
    other = held.model_copy(update={"event_id": "plan-held-2", "order_id": "H2"})
    board = Board()
    board.take("plans", encode(held), 1)
    board.take("plans", encode(other), 1)
    snap = board.snapshot(10)["held"]
    assert (snap["orders"], snap["next_release_ms"]) == (2, 5_000)
    planned = held.model_copy(update={"event_id": "plan-1", "status": "planned"})
    board.take("plans", encode(planned), 2)
    assert [r["order_id"] for r in board.snapshot(10)["held"]["rows"]] == ["H2"]
    assert board.snapshot(10)["totals"]["rejected_plans"] == 0
    assert still_held([held, other, planned]) == [other]
