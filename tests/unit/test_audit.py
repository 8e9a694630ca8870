"""The auditor's conclusions, from the planner's own join rules. Pure, time passed in."""

from __future__ import annotations

from schemas.codec import encode
from schemas.order import OrderStatus
from schemas.plan import ParcelPlan
from tests.unit.factories import box, order
from workers.auditor.audit import Audit, Expire, Ref, Repair, Unlabeled
from workers.planner.join import OrderState, on_box, on_order


def audit() -> Audit:
    return Audit(repair_after_ms=100, box_wait_ms=1000, label_after_ms=500)


def plan_of(order_id: str, box_id: str) -> ParcelPlan:
    return ParcelPlan(
        event_id=f"plan-{order_id}-{box_id}", order_id=order_id, box_id=box_id, status="planned"
    )


def test_a_plannable_box_without_its_plan_is_repaired_once_per_period() -> None:
    a = audit()
    b = box("B1", {"A": 2})
    o = order(skus={"A": 2})
    a.on_order(o, 0, Ref(2, 40))
    a.on_box(b, b"key", encode(b), 10, Ref(2, 7))
    assert a.due(50) == []
    actions = a.due(110)
    assert [type(x) for x in actions] == [Repair]
    assert isinstance(actions[0], Repair)
    assert actions[0].order == Ref(2, 40) and actions[0].boxes_at == [Ref(2, 7)]
    assert actions[0].boxes == ["B1"]
    assert a.due(150) == []  # not again within the period
    assert [type(x) for x in a.due(210)] == [Repair]
    a.on_plan(plan_of(b.order_id, "B1"))
    job = on_box(on_order(OrderState(order_id=o.order_id), o, 0).state, b, 0).jobs[0]
    a.on_job(job, 220)
    a.on_label_result(job.job_id, 230)
    assert a.due(10_000) == []


def test_a_box_that_waits_legitimately_is_not_repaired() -> None:
    a = audit()
    a.on_order(order(skus={"A": 3}), 0)
    first = box("B1", {"A": 2})  # one unit still to pack: the planner rightly waits
    a.on_box(first, None, encode(first), 0)
    assert a.due(999) == []
    on_hold = audit()
    on_hold.on_order(order(skus={"A": 2}, status=OrderStatus.ON_HOLD), 0)
    on_hold.on_box(first, None, encode(first), 0)
    assert on_hold.due(999) == []


def test_a_box_whose_order_never_arrives_is_expired_once() -> None:
    a = audit()
    b = box("B9", {"A": 1})
    a.on_box(b, None, encode(b), 0)
    assert a.due(999) == []
    actions = a.due(1000)
    assert [type(x) for x in actions] == [Expire] and actions[0].box.box.box_id == "B9"
    assert a.due(5000) == []


def test_a_job_without_label_is_reported_once_and_a_labeled_one_never() -> None:
    a = audit()
    state = on_order(OrderState(order_id="O1"), order(skus={"A": 1}), 0).state
    job = on_box(state, box("B1", {"A": 1}), 0).jobs[0]
    a.on_job(job, 0)
    assert a.due(400) == []
    assert [type(x) for x in a.due(500)] == [Unlabeled]
    assert a.due(900) == []
    b = audit()
    b.on_job(job, 0)
    b.on_label_result(job.job_id)
    assert b.due(10_000) == []


def released(a: Audit, order_id: str, boxes: dict[str, dict[str, int]], at: int) -> None:
    """Feed an order, its boxes and their plans: the order is released and all planned."""
    o = order(order_id, skus={sku: n for b in boxes.values() for sku, n in b.items()})
    a.on_order(o, at, Ref(0, at))
    for n, (box_id, items) in enumerate(boxes.items()):
        b = box(box_id, items, order_id=order_id)
        a.on_box(b, order_id.encode(), encode(b), at, Ref(0, at + n))
    state = on_order(OrderState(order_id=order_id), o, at).state
    for box_id, items in boxes.items():
        step = on_box(state, box(box_id, items, order_id=order_id), at)
        state = step.state
        for job in step.jobs:
            a.on_job(job, at)
            a.on_label_result(job.job_id, at)
    for box_id in boxes:
        a.on_plan(plan_of(order_id, box_id), at)


def test_finished_orders_are_forgotten_but_their_id_is_kept_for_the_lookback() -> None:
    a = audit()
    a.lookback_ms = 10_000
    for n in range(500):
        released(a, f"F{n}", {f"F{n}-B1": {"A": 1}, f"F{n}-B2": {"B": 1}}, at=n)
    open_order = order("OPEN", skus={"A": 2})
    a.on_order(open_order, 0, Ref(0, 9))
    assert set(a.orders) == {"OPEN"} and not a.box_events and not a.planned
    assert set(a.order_events) == {"OPEN"} and len(a.released) == 500
    a.forget_old(9_999)
    assert len(a.released) == 500  # within the lookback
    a.forget_old(10_600)
    assert a.released == {} and a.orders == {}  # OPEN had no event for the lookback either


def test_a_box_after_release_is_due_at_once_and_repaired_alone() -> None:
    a = audit()
    released(a, "L1", {"L1-B1": {"A": 1}}, at=0)
    later = order("L1", skus={"A": 1}, status=OrderStatus.IN_TRANSIT)
    a.on_order(later, 5, Ref(0, 5))
    assert "L1" not in a.orders  # an update of a finished order is not replayed
    late = box("L1-B2", {"A": 1}, order_id="L1")
    a.on_box(late, b"L1", encode(late), 10, Ref(0, 6))
    actions = a.due(110)
    assert [type(x) for x in actions] == [Repair]
    assert isinstance(actions[0], Repair)
    assert actions[0].order is None and actions[0].boxes_at == [Ref(0, 6)]
    a.on_plan(plan_of("L1", "L1-B2"), 120)  # the planner's rejection
    assert a.due(10_000) == [] and not a.box_events and not a.waiting


def test_a_cancelled_order_with_every_box_rejected_is_forgotten() -> None:
    a = audit()
    b = box("X1-B1", {"A": 1}, order_id="X1")
    a.on_box(b, b"X1", encode(b), 0)
    a.on_order(order("X1", skus={"A": 1}, status=OrderStatus.CANCELLED), 1)
    assert "X1" in a.orders
    a.on_plan(plan_of("X1", "X1-B1"), 2)
    assert "X1" not in a.orders and "X1" in a.released


def test_a_released_order_whose_job_never_came_is_repaired_until_it_does() -> None:
    a = audit()
    o = order("J1", skus={"A": 1})
    b = box("J1-B1", {"A": 1}, order_id="J1")
    a.on_order(o, 0, Ref(1, 3))
    a.on_box(b, b"J1", encode(b), 10, Ref(1, 4))
    a.on_plan(plan_of("J1", "J1-B1"), 20)  # the plan came, the job did not
    assert "J1" in a.orders and a.due(109) == []
    actions = a.due(110)
    assert len(actions) == 1 and isinstance(actions[0], Repair)
    assert actions[0].job_missing and actions[0].boxes == []
    assert actions[0].order == Ref(1, 3) and actions[0].boxes_at == [Ref(1, 4)]
    assert a.due(150) == []  # once per period
    assert [type(x) for x in a.due(210)] == [Repair]
    job = on_box(on_order(OrderState(order_id="J1"), o, 0).state, b, 0).jobs[0]
    a.on_job(job, 220)
    a.on_label_result(job.job_id, 230)
    assert a.due(10_000) == []
    assert "J1" not in a.orders and "J1" in a.released  # finished: forgotten


def test_an_unreleased_order_needs_no_job() -> None:
    a = audit()
    a.on_order(order("W1", skus={"A": 2}), 0)
    half = box("W1-B1", {"A": 1}, order_id="W1")
    a.on_box(half, None, encode(half), 0)
    assert a.due(10_000) == []


def test_a_plan_read_before_its_box_prevents_a_repair_whatever_the_reading_order() -> None:
    """The auditor reads plans and boxes from two topics: after release it may meet a late
    box's plan (the planner's rejection) before the box itself. No repair is due."""
    a = audit()
    released(a, "P1", {"P1-B1": {"A": 1}}, at=0)
    late = box("P1-B2", {"A": 1}, order_id="P1")
    a.on_plan(plan_of("P1", "P1-B2"), 5)  # the plan first...
    a.on_box(late, b"P1", encode(late), 10)  # ...then its box
    assert a.due(10_000) == [] and not a.waiting and not a.box_events
    assert a.early_plans == {}
    a.on_plan(plan_of("P1", "P1-B9"), 20)  # a plan whose box never comes is forgotten
    a.forget_old(20 + a.lookback_ms + 1)
    assert a.early_plans == {}
