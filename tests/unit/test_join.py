"""The planner's join as a pure state machine: examples, then properties (hypothesis)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.box import BoxClosed
from schemas.label import LabelJob
from schemas.order import Order, OrderStatus
from schemas.plan import ParcelPlan
from tests.unit.factories import box, opened, order, sealed
from workers.planner.join import (
    BARRIER_WAIT_MS,
    Inputs,
    OrderState,
    on_box,
    on_event,
    release_due,
    resume,
)


def play(events: list[Order | BoxClosed]) -> tuple[OrderState, list[ParcelPlan], list[LabelJob]]:
    state = OrderState(order_id=events[0].order_id)
    plans: list[ParcelPlan] = []
    jobs: list[LabelJob] = []
    for n, event in enumerate(events):
        step = on_event(state, event, n)
        state = step.state
        plans += step.plans
        jobs += step.jobs
    return state, plans, jobs


def skus_of(plan: ParcelPlan) -> Counter[str]:
    return Counter(i.seller_sku for i in plan.items)


def test_order_then_boxes_releases_one_job_with_every_item_once() -> None:
    _state, plans, jobs = play(
        [order(skus={"A": 2, "B": 1}), box("B1", {"A": 1}), box("B2", {"A": 1, "B": 1})]
    )
    assert [j.kind for j in jobs] == ["create"]
    job = jobs[0]
    assert [p.box_id for p in job.parcels] == ["B1", "B2"]
    assert [i.item_id for i in job.parcels[0].items] == ["O1-001"]
    assert [i.item_id for i in job.parcels[1].items] == ["O1-002", "O1-003"]
    assert job.unpacked_items == []
    assert {p.box_id: p.status for p in plans} == {"B1": "planned", "B2": "planned"}
    assert opened("O1", job.recipient).city == "Austin"


def test_boxes_before_order_wait_then_release() -> None:
    _, plans, jobs = play([box("B1", {"A": 2}), box("B2", {"B": 1}), order()])
    assert len(jobs) == 1
    assert sorted(p.box_id for p in plans) == ["B1", "B2"]


def test_no_release_until_every_unit_is_packed() -> None:
    state, plans, jobs = play([order(), box("B1", {"A": 2})])
    assert jobs == [] and plans == []
    assert not state.released


def test_last_box_releases_a_short_shipment_naming_the_unpacked_units() -> None:
    _, _, jobs = play([order(), box("B1", {"A": 1}, last_box=True)])
    assert len(jobs) == 1
    assert [i.seller_sku for i in jobs[0].unpacked_items] == ["A", "B"]


def test_on_hold_order_is_not_released_until_awaiting_shipment() -> None:
    held = order(status=OrderStatus.ON_HOLD, update_time=1)
    _, _, jobs = play([held, box("B1", {"A": 2, "B": 1})])
    assert jobs == []
    _, _, jobs = play([held, box("B1", {"A": 2, "B": 1}), order(update_time=2)])
    assert len(jobs) == 1


def test_sku_not_in_order_is_rejected_and_other_boxes_go_on() -> None:
    _, plans, jobs = play([order(), box("B1", {"A": 2}), box("BX", {"Z": 1}), box("B2", {"B": 1})])
    by_box = {p.box_id: p for p in plans}
    assert by_box["BX"].status == "rejected"
    assert "SKU not in order O1: Z" in by_box["BX"].reason
    assert by_box["B1"].status == by_box["B2"].status == "planned"
    assert len(jobs) == 1


def test_more_units_than_the_order_has_is_rejected() -> None:
    _, plans, _ = play([order(), box("B1", {"A": 3})])
    assert plans[0].status == "rejected"
    assert "more units than order O1 has of: A" in plans[0].reason


def test_boxes_may_name_units_by_sku_id_and_a_unit_counts_once() -> None:
    same = order(skus={"A": 1, "B": 1})
    items = [same.line_items[0].model_copy(update={"sku_id": "A"}), same.line_items[1]]
    same = same.model_copy(update={"line_items": items})
    _, plans, _ = play([same, box("B1", {"A": 2})])
    assert plans[0].status == "rejected"  # seller SKU and SKU id both "A": still one unit
    _, plans, jobs = play([same, box("B1", {"A": 1}), box("B2", {"id-B": 1})])
    assert [p.status for p in plans] == ["planned", "planned"]
    assert [i.item_id for p in plans for i in p.items] == ["O1-001", "O1-002"]
    assert len(jobs) == 1


def test_an_item_id_the_order_repeats_goes_to_one_box_only() -> None:
    repeated = order(skus={"A": 2})
    items = [repeated.line_items[0], repeated.line_items[0]]
    repeated = repeated.model_copy(update={"line_items": items})
    _, plans, jobs = play([box("B1", {"A": 1}), box("B2", {"A": 1}), repeated])
    by_box = {p.box_id: p for p in plans}
    assert [i.item_id for i in by_box["B1"].items] == ["O1-001"]
    assert by_box["B2"].status == "rejected"
    assert "only 0 unallocated units" in by_box["B2"].reason
    assert len(jobs) == 1


def test_box_after_release_is_rejected() -> None:
    _, plans, jobs = play([order(), box("B1", {"A": 2, "B": 1}), box("B2", {"A": 1})])
    assert len(jobs) == 1
    late = next(p for p in plans if p.box_id == "B2")
    assert late.status == "rejected" and "after label job" in late.reason


def test_cancel_before_release_rejects_waiting_boxes() -> None:
    cancelled = order(status=OrderStatus.CANCELLED, update_time=200)
    _, plans, jobs = play([order(), box("B1", {"A": 1}), cancelled])
    assert jobs == []
    assert plans[0].status == "rejected" and "cancelled" in plans[0].reason


def test_cancel_after_release_emits_one_cancel_job() -> None:
    cancelled = order(status=OrderStatus.CANCELLED, update_time=200)
    _, _, jobs = play([order(), box("B1", {"A": 2, "B": 1}), cancelled, cancelled])
    # The second cancellation is a redelivery: it republishes the same two events.
    assert [j.kind for j in jobs] == ["create", "cancel", "create", "cancel"]
    assert len({j.event_id for j in jobs}) == 2
    assert jobs[1].job_id == jobs[0].job_id


def test_address_change_before_release_is_in_the_job() -> None:
    moved = order(update_time=150).model_copy(
        update={"event_id": "moved", "recipient": sealed("O1", city="Reno")}
    )
    _, _, jobs = play([order(), box("B1", {"A": 2}), moved, box("B2", {"B": 1})])
    assert opened("O1", jobs[0].recipient).city == "Reno"


def test_older_order_update_arriving_late_is_ignored() -> None:
    newer = order(update_time=300, status=OrderStatus.CANCELLED)
    state, _, _ = play([newer, order(update_time=100)])
    assert state.order is not None and state.order.status is OrderStatus.CANCELLED


def test_redelivered_box_republishes_the_same_plan_and_job() -> None:
    events: list[Order | BoxClosed] = [order(), box("B1", {"A": 2, "B": 1})]
    state, plans, jobs = play(events)
    step = on_box(state, box("B1", {"A": 2, "B": 1}), 99)
    assert step.state == state  # nothing changes
    assert [p.event_id for p in step.plans] == [plans[0].event_id]
    assert [j.event_id for j in step.jobs] == [jobs[0].event_id]


def test_box_id_reused_with_other_contents_is_rejected_without_touching_state() -> None:
    state, _, _ = play([order(), box("B1", {"A": 1})])
    step = on_box(state, box("B1", {"B": 1}), 5)
    assert step.state == state
    assert step.plans[0].status == "rejected" and "different contents" in step.plans[0].reason


# --- properties ---------------------------------------------------------------------------


@st.composite
def shipments(draw: st.DrawFn) -> tuple[Order, list[BoxClosed]]:
    """A random order and a random split of all its units into boxes."""
    skus = draw(st.dictionaries(st.sampled_from("ABCDE"), st.integers(1, 4), min_size=1))
    the_order = order("P1", skus=skus)
    units = [i.seller_sku for i in the_order.line_items]
    count = draw(st.integers(1, len(units)))
    owners = draw(st.lists(st.integers(0, count - 1), min_size=len(units), max_size=len(units)))
    contents: list[Counter[str]] = [Counter() for _ in range(count)]
    for sku, owner in zip(units, owners, strict=True):
        contents[owner][sku] += 1
    boxes = [box(f"P1-B{n}", dict(c), order_id="P1") for n, c in enumerate(contents) if c]
    return the_order, boxes


def final_plans(plans: list[ParcelPlan]) -> dict[str, ParcelPlan]:
    return {p.event_id: p for p in plans}


@settings(max_examples=200, deadline=None)
@given(shipments(), st.randoms(use_true_random=False), st.integers(0, 3))
def test_any_interleaving_and_duplication_gives_the_same_plans_and_one_job(
    shipment: tuple[Order, list[BoxClosed]], rng: object, duplicates: int
) -> None:
    the_order, boxes = shipment
    _reference_state, reference_plans, reference_jobs = play([the_order, *boxes])
    events: list[Order | BoxClosed] = [the_order, *boxes]
    events += [rng.choice(events) for _ in range(duplicates)]  # type: ignore[attr-defined]
    rng.shuffle(events)  # type: ignore[attr-defined]
    _, plans, jobs = play(events)

    assert final_plans(plans) == final_plans(reference_plans)
    assert {j.event_id for j in jobs} == {j.event_id for j in reference_jobs}
    assert len({j.job_id for j in jobs}) == 1
    job = jobs[0]
    assigned = [i.item_id for p in job.parcels for i in p.items]
    assert len(assigned) == len(set(assigned)), "an item id is in two boxes"
    assert sorted(assigned) == sorted(i.item_id for i in the_order.line_items)
    by_box = {b.box_id: b for b in boxes}
    for plan in final_plans(plans).values():
        assert plan.status == "planned"
        expected = Counter({i.sku: i.quantity for i in by_box[plan.box_id].items})
        assert skus_of(plan) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("ABC"), st.integers(1, 3), min_size=1),
    st.lists(
        st.dictionaries(st.sampled_from("ABCD"), st.integers(1, 3), min_size=1),
        min_size=1,
        max_size=5,
    ),
    st.booleans(),
)
def test_arbitrary_boxes_never_assign_an_item_twice_or_exceed_the_order(
    skus: dict[str, int], box_contents: list[dict[str, int]], last: bool
) -> None:
    the_order = order("Q1", skus=skus)
    boxes = [
        box(f"Q1-B{n}", c, order_id="Q1", last_box=last and n == len(box_contents) - 1)
        for n, c in enumerate(box_contents)
    ]
    _, plans, jobs = play([*boxes, the_order])
    planned = [p for p in final_plans(plans).values() if p.status == "planned"]
    ids = [i.item_id for p in planned for i in p.items]
    assert len(ids) == len(set(ids))
    assert len(ids) <= len(the_order.line_items)
    assert len({j.job_id for j in jobs}) <= 1
    for plan in final_plans(plans).values():
        assert plan.status == "planned" or plan.reason


# --- holds: TikTok's buyer remorse window and pending cancel requests ---


def step_all(
    state: OrderState, events: list[Order | BoxClosed], now_ms: int
) -> tuple[OrderState, list[ParcelPlan], list[LabelJob]]:
    plans: list[ParcelPlan] = []
    jobs: list[LabelJob] = []
    for event in events:
        step = on_event(state, event, now_ms)
        state, plans, jobs = step.state, plans + step.plans, jobs + step.jobs
    return state, plans, jobs


def test_old_flow_order_is_held_until_ship_after_then_released_by_its_release_event() -> None:
    old_flow = order().model_copy(update={"ship_after": 1_000})  # unix s: 1,000,000 ms
    state, plans, jobs = step_all(
        OrderState(order_id="O1"), [old_flow, box("B1", {"A": 2, "B": 1})], 999_000
    )
    assert jobs == []
    assert [(p.status, p.release_at_ms) for p in plans] == [("held", 1_000_000)]
    assert "remorse window" in plans[0].reason
    assert state.hold is not None and state.hold.until_ms == 1_000_000
    assert release_due(state, 999_999) is None  # not yet
    release = release_due(state, 1_000_000)
    assert release is not None and release.event_id != old_flow.event_id
    # the same release event again before its time changes nothing and publishes nothing
    early = on_event(state, release, 999_999)
    assert (early.plans, early.jobs) == ([], [])
    state, plans, jobs = step_all(state, [release], 1_000_000)
    assert [j.kind for j in jobs] == ["create"]
    assert [p.status for p in plans] == ["planned"]
    assert state.hold is None and release_due(state, 2_000_000) is None


def test_a_hold_publishes_its_held_plans_once() -> None:
    old_flow = order().model_copy(update={"ship_after": 1_000})
    state, plans, _ = step_all(OrderState(order_id="O1"), [old_flow, box("B1", {"A": 1})], 0)
    assert plans == []  # not complete: nothing to hold yet
    state, plans, _ = step_all(state, [box("B2", {"A": 1, "B": 1})], 0)
    assert sorted(p.box_id for p in plans if p.status == "held") == ["B1", "B2"]
    newer = old_flow.model_copy(update={"event_id": "ev-newer", "update_time": 101})
    _, plans, _ = step_all(state, [newer], 0)
    assert plans == []


def test_new_flow_order_ships_at_once() -> None:
    _, _, jobs = step_all(OrderState(order_id="O1"), [order(), box("B1", {"A": 2, "B": 1})], 0)
    assert len(jobs) == 1


def test_cancellation_while_held_buys_no_label_and_says_why() -> None:
    old_flow = order().model_copy(update={"ship_after": 1_000})
    state, _, _ = step_all(OrderState(order_id="O1"), [old_flow, box("B1", {"A": 2, "B": 1})], 0)
    cancelled = order(status=OrderStatus.CANCELLED, update_time=200)
    state, plans, jobs = step_all(state, [cancelled], 500_000)
    assert jobs == []
    assert [p.status for p in plans] == ["rejected"]
    assert "cancelled while held, before any label was bought" in plans[0].reason
    assert release_due(state, 2_000_000) is None


def test_pending_cancel_request_holds_until_tiktok_answers() -> None:
    asked = order().model_copy(update={"buyer_cancel_requested": True})
    state, plans, jobs = step_all(
        OrderState(order_id="O1"), [asked, box("B1", {"A": 2, "B": 1})], 0
    )
    assert jobs == [] and [(p.status, p.release_at_ms) for p in plans] == [("held", 0)]
    assert release_due(state, 10**12) is None  # no clock releases it: TikTok's answer does
    declined = order(update_time=300)
    _, _, jobs = step_all(state, [declined], 0)
    assert len(jobs) == 1


def test_a_box_read_before_the_orders_topic_caught_up_waits_for_it() -> None:
    """The last box is read while the order's topic is read only up to before the box (an
    unread record could be a new address): no job; the newer order, read past the box's
    time, releases it with its newer recipient; so does resuming once read past."""
    state, _, _ = step_all(OrderState(order_id="O1"), [order(), box("B1", {"A": 2})], 0)
    behind = Inputs(event_ms=1_000, orders_read_ms=900)
    step = on_event(state, box("B2", {"B": 1}), 10, behind)
    assert step.jobs == [] and step.plans == []
    held = step.state
    assert held.hold is not None and held.hold.barrier and held.latest_box_ms == 1_000
    assert release_due(held, 10 + BARRIER_WAIT_MS) is not None  # the clock's fallback
    assert opened("O1", resume(held, 20).jobs[0].recipient) == opened("O1", order().recipient)
    moved = order(update_time=150).model_copy(update={"recipient": sealed("O1", city="Boise")})
    read = on_event(held, moved, 20, Inputs(event_ms=950, orders_read_ms=950))
    assert read.jobs == []  # older than the box: order records up to the box may be unread
    assert [opened("O1", j.recipient).city for j in resume(read.state, 21).jobs] == ["Boise"]
    past = on_event(held, moved, 21, Inputs(event_ms=1_100, orders_read_ms=1_100))
    assert [opened("O1", j.recipient).city for j in past.jobs] == ["Boise"]


def test_a_release_event_read_back_releases_the_order_as_held_now() -> None:
    """The clock's fallback: its release event is older than a newer order read since, and
    still releases (it proves the orders are read past the box)."""
    state, _, _ = step_all(OrderState(order_id="O1"), [order(), box("B1", {"A": 2})], 0)
    held = on_event(state, box("B2", {"B": 1}), 10, Inputs(event_ms=1_000, orders_read_ms=0))
    release = release_due(held.state, 10 + BARRIER_WAIT_MS)
    assert release is not None
    moved = order(update_time=150).model_copy(update={"recipient": sealed("O1", city="Boise")})
    newer = on_event(held.state, moved, 11, Inputs(event_ms=900, orders_read_ms=900))
    assert newer.jobs == []
    back = on_event(newer.state, release, 12, Inputs(1_001, 1_001))
    assert [opened("O1", j.recipient).city for j in back.jobs] == ["Boise"]


def test_an_order_read_before_its_boxes_time_waits_for_the_orders_read_past_them() -> None:
    """The box came first (a later timestamp); the order's first version, read after it,
    may be followed by a newer one older than the box: it waits."""
    state = on_event(
        OrderState(order_id="O1"), box("B1", {"A": 2, "B": 1}), 0, Inputs(5_000, 0)
    ).state
    step = on_event(state, order(), 1, Inputs(event_ms=4_000, orders_read_ms=4_000))
    assert step.jobs == [] and step.state.hold is not None and step.state.hold.barrier
    newer = on_event(state, order(), 1, Inputs(event_ms=6_000, orders_read_ms=6_000))
    assert len(newer.jobs) == 1


def test_an_upstream_update_never_changes_a_tiktok_order() -> None:
    """TikTok's record is the truth: an upstream system cannot rewrite its recipient,
    warehouse or status (refused, with the reason, for the dead letter); TikTok's record
    replaces an upstream one whatever the times say."""
    tiktok = order().model_copy(update={"source": "tiktok"})
    state = on_event(OrderState(order_id="O1"), tiktok, 0).state
    spoof = order(status=OrderStatus.CANCELLED, update_time=999)  # source "upstream"
    step = on_event(state, spoof, 1)
    assert "comes from TikTok" in step.refusal and step.state is state
    upstream_first = on_event(OrderState(order_id="O1"), order(update_time=500), 0).state
    taken = on_event(upstream_first, tiktok, 1).state
    assert taken.order is not None and taken.order.source == "tiktok"


# --- tenancy: a box is (warehouse, box id) in the join too ---


def boxed(box_id: str, contents: dict[str, int], warehouse: str) -> BoxClosed:
    made = box(box_id, contents)
    return made.model_copy(
        update={"warehouse_id": warehouse, "event_id": f"ev-{warehouse}-{box_id}"}
    )


def of_warehouse(warehouse: str) -> Order:
    return order(skus={"A": 1}).model_copy(update={"warehouse_id": warehouse})


def test_another_warehouses_box_cannot_squat_a_box_id() -> None:
    """A station of WH-A posts box SQ for an order of WH-B: refused (its plan has an id of
    its own), and WH-B's real box SQ is then planned and labeled."""
    for squat_first in (True, False):  # before the order is known, or after
        squat, real = boxed("SQ", {"A": 1}, "WH-A"), boxed("SQ", {"A": 1}, "WH-B")
        events: list[Order | BoxClosed] = (
            [squat, of_warehouse("WH-B"), real]
            if squat_first
            else [of_warehouse("WH-B"), squat, real]
        )
        _, plans, jobs = play(events)
        refused = [p for p in plans if p.status == "rejected"]
        assert [(p.warehouse_id, "WH-A" in p.reason) for p in refused] == [("WH-A", True)]
        planned = [p for p in plans if p.status == "planned"]
        assert [p.warehouse_id for p in planned] == ["WH-B"]
        assert refused[0].event_id != planned[0].event_id
        assert [[p.warehouse_id for p in j.parcels] for j in jobs] == [["WH-B"]]


def test_an_order_naming_no_warehouse_is_packed_by_the_first_warehouse_that_boxes_it() -> None:
    state, plans, jobs = play(
        [order(skus={"A": 2}), boxed("B1", {"A": 1}, "WH-A"), boxed("B2", {"A": 1}, "WH-B")]
    )
    assert state.claimed_warehouse == "WH-A" and jobs == []
    assert [(p.box_id, p.status) for p in plans] == [("B2", "rejected")]
    _, _, jobs = play(
        [
            order(skus={"A": 2}),
            boxed("B1", {"A": 1}, "WH-A"),
            boxed("B2", {"A": 1}, "WH-B"),
            boxed("B3", {"A": 1}, "WH-A"),
        ]
    )
    assert [(j.warehouse_id, [p.box_id for p in j.parcels]) for j in jobs] == [
        ("WH-A", ["B1", "B3"])
    ]


def test_a_state_written_keyed_by_box_id_reads_keyed_by_warehouse_and_box() -> None:
    state, _, _ = play([of_warehouse("WH-B"), boxed("B1", {"A": 1}, "WH-B")])
    old = state.model_dump()
    old["boxes"] = {b["box_id"]: b for b in old["boxes"].values()}
    old["plans"] = {p["box_id"]: p for p in old["plans"].values()}
    again = OrderState.model_validate(old)
    assert again.boxes == state.boxes and again.plans == state.plans
