"""The join of orders and boxes, as a pure state machine per order id.

``on_order`` and ``on_box`` take the order's state and one event and return the new
state and what to publish. Nothing here touches Kafka or Faust.

The rules:

- Boxes wait for their order. Once the order is known, a box with a SKU the order does
  not have, or with more units of a SKU than the whole order has, or packed in another
  warehouse than the one the order ships from, is rejected at once.
- A box is (warehouse, box id): its warehouse is the one it names, else its order's.
- The order is released when it is AWAITING_SHIPMENT and either every unit is in a box,
  or a box says ``last_box``. At release the boxes are allocated in box id order (so any
  arrival order gives the same plans), every box gets its plan, and one label job is
  published. A box that does not fit any more is rejected then.
- A complete order that may not ship yet is *held*, and each box gets a ``held`` plan
  saying until when: an old-flow TikTok order until its ``ship_after`` (the buyer's
  remorse window), an order whose buyer asked to cancel until TikTok answers (a newer
  order event). The planner's clock releases a hold that has ended (``release_due``).
- A box arriving after release is rejected; a cancellation before release rejects the
  waiting boxes (no label is bought), after release it publishes a cancel job for the
  labeler.
- A redelivered event changes nothing but publishes again what it had published, with
  the same event ids, so a crash between the state write and the publish loses nothing
  and consumers dedupe the repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, Field, model_validator

from schemas.box import BoxClosed
from schemas.codec import encode
from schemas.common import derived_id
from schemas.label import LabelJob, Parcel
from schemas.order import Order, OrderStatus
from schemas.plan import ParcelPlan
from workers.planner.allocate import (
    Allocation,
    allocate,
    foreign_skus,
    oversized_skus,
    units_by_sku,
)


class Hold(BaseModel):
    """Why a complete order waits, and until when (0: until a newer order event).

    A ``barrier`` hold is no rule of TikTok's: the order became complete while its orders
    topic partition was read only up to a time before its newest box (an unread order
    record could be a newer address). The planner resumes it (``resume``) once it has read
    that partition past the box's time, usually within a batch or two, and at the latest
    ``BARRIER_WAIT_MS`` after it began to wait, as it stands then (Kafka Streams keeps
    co-partitioned inputs in timestamp order alike, waiting at most max.task.idle.ms); on
    an idle stream, with no batch to resume it, its clock writes a release event to the
    orders partition, and reading it back releases the order."""

    until_ms: int = 0
    reason: str
    barrier: bool = False


BARRIER = "the orders topic was read only up to a time before the order's newest box"
# The longest a barrier waits for the orders partition (Kafka Streams' max.task.idle.ms):
# then the order is released as the planner holds it. Longer than an orders partition lags
# behind its boxes in practice (the address change that lost a race was 6 s ahead).
BARRIER_WAIT_MS = 10_000


def box_key(box: BoxClosed) -> str:
    """A box is (warehouse, box id): its key in an order's state (length-prefixed, so that
    no two pairs meet)."""
    return f"{len(box.warehouse_id)}:{box.warehouse_id}/{box.box_id}"


class OrderState(BaseModel):
    """Everything the planner keeps for one order id (a Faust table value)."""

    order_id: str
    order: Order | None = None
    boxes: dict[str, BoxClosed] = Field(default_factory=dict)
    plans: dict[str, ParcelPlan] = Field(default_factory=dict)
    job: LabelJob | None = None
    cancel_job: LabelJob | None = None
    first_box_at_ms: int | None = None
    hold: Hold | None = None
    latest_box_ms: int = 0  # the newest record timestamp of its boxes (Inputs.event_ms)
    # the warehouse that packs an order naming none: the first box that names one
    claimed_warehouse: str = ""

    @model_validator(mode="after")
    def _keyed(self) -> OrderState:
        """Boxes and plans keyed by ``box_key`` (states written before were keyed by box
        id alone)."""
        if all(key == box_key(box) for key, box in self.boxes.items()):
            return self
        by_id = {box.box_id: box_key(box) for box in self.boxes.values()}
        self.plans = {by_id.get(key, key): plan for key, plan in self.plans.items()}
        self.boxes = {box_key(box): box for box in self.boxes.values()}
        return self

    def owner(self) -> str:
        """The warehouse the order ships from: its own, else the one that claimed it."""
        if self.order is not None and self.order.warehouse_id:
            return self.order.warehouse_id
        return self.claimed_warehouse

    @property
    def released(self) -> bool:
        return self.job is not None


@dataclass
class Step:
    state: OrderState
    plans: list[ParcelPlan] = field(default_factory=list)
    jobs: list[LabelJob] = field(default_factory=list)
    refusal: str = ""  # the event may not change the order: dead-lettered with this reason


class TooLarge(ValueError):
    """A step whose state, plan or job would not fit one Kafka record."""


@dataclass
class Encoded:
    """A step's records, encoded once: what the planner writes."""

    step: Step
    plans: list[bytes]
    jobs: list[bytes]
    state: bytes | None  # None: the state did not change


def encode_step(before: OrderState, step: Step, max_bytes: int) -> Encoded:
    """The step's records, or TooLarge naming the first that exceeds ``max_bytes``.

    The planner dead-letters such an event and keeps the state from before it; the
    auditor, replaying the join, ignores the same event the same way.
    """
    state = None if step.state is before else step.state.model_dump_json().encode()
    encoded = Encoded(step, [encode(p) for p in step.plans], [encode(j) for j in step.jobs], state)
    for what, records in (
        ("a parcel plan", encoded.plans),
        ("the label job", encoded.jobs),
        ("the order's join state", [state] if state is not None else []),
    ):
        for record in records:
            if len(record) > max_bytes:
                raise TooLarge(
                    f"{what} would be {len(record)} bytes, over the {max_bytes}-byte record "
                    f"limit (too many units or boxes for order {before.order_id[:80]})"
                )
    return encoded


def restore(order_id: str, stored: bytes | None) -> OrderState:
    """An order's state from its stored JSON, or a fresh one."""
    if stored is None:
        return OrderState(order_id=order_id)
    return OrderState.model_validate_json(stored)


@dataclass(frozen=True)
class Inputs:
    """Where the planner's reading stands at one event (Kafka Streams' stream time): the
    event's record timestamp, and the time up to which the order's topic partition has
    been read (``READ_ALL``: every record the consumer knew of)."""

    event_ms: int
    orders_read_ms: int


READ_ALL = 2**62


def on_event(
    state: OrderState, event: Order | BoxClosed, now_ms: int, inputs: Inputs | None = None
) -> Step:
    """``on_order`` or ``on_box``, by the event's kind. ``inputs``: where the reading
    stands; None (replays, tests) takes the events as if in timestamp order."""
    if isinstance(event, Order):
        return on_order(state, event, now_ms, inputs)
    return on_box(state, event, now_ms, inputs)


def plan_event_id(order_id: str, box_id: str) -> str:
    """Deterministic per box, and an ``Id`` for any order and box id the schemas accept."""
    return derived_id("plan", order_id, box_id)


def job_id_for(order_id: str, box_ids: list[str]) -> str:
    return derived_id("job", order_id, *sorted(box_ids))


def _rejection(box: BoxClosed, reason: str, event_id: str | None = None) -> ParcelPlan:
    return ParcelPlan(
        event_id=event_id or plan_event_id(box.order_id, box.box_id),
        order_id=box.order_id,
        box_id=box.box_id,
        warehouse_id=box.warehouse_id,
        status="rejected",
        reason=reason,
        weight=box.weight,
        dimensions=box.dimensions,
    )


def on_order(state: OrderState, order: Order, now_ms: int, inputs: Inputs | None = None) -> Step:
    previous = state.order
    if previous is not None and order.event_id == previous.event_id:
        return _republish(state)
    if previous is not None and previous.source == "tiktok" and order.source != "tiktok":
        return Step(
            state,
            refusal=f"order {order.order_id[:80]} comes from TikTok: an upstream system may "
            "not change it (its recipient, warehouse or status)",
        )
    # TikTok's own record of the order replaces an upstream's, whatever its time
    takes_over = previous is not None and previous.source != order.source
    if previous is not None and not takes_over and order.update_time < previous.update_time:
        if state.hold is not None and state.hold.barrier:  # e.g. the barrier, read back
            return _evaluate(state, now_ms, inputs)  # the order as held, read further now
        return Step(state)  # an older update arriving late: keep the newer one
    if previous is not None and not order.line_items:
        order = order.model_copy(update={"line_items": previous.line_items})
    state = state.model_copy(update={"order": order})
    return _evaluate(state, now_ms, inputs)


def on_box(state: OrderState, box: BoxClosed, now_ms: int, inputs: Inputs | None = None) -> Step:
    key = box_key(box)
    known = state.boxes.get(key)
    if known is not None:
        if _same_contents(known, box):
            return _republish(state, key)
        reason = f"box id {box.box_id} was already closed with different contents"
        event_id = derived_id("plan", box.order_id, box.box_id, box.event_id)
        return Step(state, plans=[_rejection(box, reason, event_id)])
    if box.warehouse_id and not state.claimed_warehouse:
        state = state.model_copy(update={"claimed_warehouse": box.warehouse_id})
    if state.released:
        assert state.job is not None  # noqa: S101 (released means a job exists)
        reason = f"box arrived after label job {state.job.job_id} was emitted"
        plan = _rejection(box, reason)
        return Step(_with_box(state, box, plan, now_ms), plans=[plan])
    state = _with_box(state, box, None, now_ms)
    if inputs is not None and inputs.event_ms > state.latest_box_ms:
        state = state.model_copy(update={"latest_box_ms": inputs.event_ms})
    return _evaluate(state, now_ms, inputs)


def _same_contents(a: BoxClosed, b: BoxClosed) -> bool:
    fields = ("order_id", "warehouse_id", "items", "weight", "dimensions", "last_box")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def _with_box(
    state: OrderState, box: BoxClosed, plan: ParcelPlan | None, now_ms: int
) -> OrderState:
    plans = dict(state.plans)
    if plan is not None:
        plans[box_key(box)] = plan
    return state.model_copy(
        update={
            "boxes": {**state.boxes, box_key(box): box},
            "plans": plans,
            "first_box_at_ms": state.first_box_at_ms or now_ms,
        }
    )


def republish(state: OrderState) -> Step:
    """What the state has published (its plans and jobs), published again: a repair of
    an order whose state holds everything the repair names."""
    return _republish(state)


def _republish(state: OrderState, key: str | None = None) -> Step:
    plans = list(state.plans.values()) if key is None else []
    if key is not None and key in state.plans:
        plans = [state.plans[key]]
    jobs = [j for j in (state.job, state.cancel_job) if j is not None]
    return Step(state, plans=plans, jobs=jobs)


def _evaluate(state: OrderState, now_ms: int, inputs: Inputs | None = None) -> Step:
    order = state.order
    if order is None:
        return Step(state)
    if order.status is OrderStatus.CANCELLED:
        return _cancel(state, now_ms)
    if state.released:
        return Step(state)  # later updates (in transit, delivered...) change nothing

    step = Step(state)
    plans = dict(state.plans)
    units = units_by_sku(order.line_items)
    owner = state.owner()
    taken: set[str] = set()  # box ids of the boxes that may still belong to the order
    for key, box in sorted(state.boxes.items()):
        if key in plans:
            continue
        foreign = bool(box.warehouse_id and owner and box.warehouse_id != owner)
        reason = _misfit(order, owner, units, box)
        if not reason and box.box_id in taken:  # one box id twice (one naming no warehouse)
            reason = f"box id {box.box_id} was already closed with different contents"
        if reason:
            # a foreign box's plan has an id of its own: it must not shadow the real box's
            event_id = derived_id("plan", box.order_id, box.box_id, box.warehouse_id)
            plans[key] = _rejection(box, reason, event_id if foreign else None)
            step.plans.append(plans[key])
        else:
            taken.add(box.box_id)
    state = state.model_copy(update={"plans": plans})
    step.state = state
    if order.status is not OrderStatus.AWAITING_SHIPMENT:
        return step

    candidates = [b for key, b in sorted(state.boxes.items()) if key not in plans]
    allocation = allocate(order.line_items, candidates)
    short_shipment = any(b.last_box for b in candidates)
    if not (allocation.complete or short_shipment) or not allocation.assigned:
        return step
    hold = hold_of(order, now_ms)
    if hold is not None:
        return _held(step, candidates, hold)
    if inputs is not None and inputs.orders_read_ms <= state.latest_box_ms:
        return _barrier(step, now_ms)  # an order record older than a box may be unread
    return _release(step, state, plans, candidates, allocation, now_ms)


def _barrier(step: Step, now_ms: int) -> Step:
    """Wait, quietly, until the orders topic is read past the newest box (``Hold.barrier``)."""
    if step.state.hold is not None and step.state.hold.barrier:
        return step
    hold = Hold(until_ms=now_ms + BARRIER_WAIT_MS, reason=BARRIER, barrier=True)
    step.state = step.state.model_copy(update={"hold": hold})
    return step


def resume(state: OrderState, now_ms: int) -> Step:
    """An order held at a barrier, once its orders partition is read past its newest box:
    released as it stands now (or held for another reason)."""
    if state.hold is None or not state.hold.barrier:
        return Step(state)
    return _evaluate(state.model_copy(update={"hold": None}), now_ms)


def hold_of(order: Order, now_ms: int) -> Hold | None:
    """Why a complete order may not ship yet, or None. TikTok's references: Get Order
    Detail (``is_buyer_request_cancel``: "True when the buyer has a pending cancellation
    request") and the changelog "For US and UK markets: introducing On Hold order status"
    (old-flow orders wait an hour after payment; ``workers.tiktok.wire.ship_after``)."""
    if order.buyer_cancel_requested:
        return Hold(
            reason=f"the buyer of order {order.order_id} asked to cancel it: no label while "
            "the request is pending"
        )
    if order.ship_after * 1000 > now_ms:
        return Hold(
            until_ms=order.ship_after * 1000,
            reason=f"order {order.order_id} is in the buyer's remorse window (an old-flow "
            "TikTok order may not ship within an hour of payment)",
        )
    return None


def _held(step: Step, candidates: list[BoxClosed], hold: Hold) -> Step:
    """The order waits: each box gets a ``held`` plan, once per hold."""
    state = step.state
    if state.hold == hold:
        return step
    step.state = state.model_copy(update={"hold": hold})
    for box in candidates:
        step.plans.append(
            ParcelPlan(
                event_id=derived_id(
                    "plan", box.order_id, box.box_id, "held", str(hold.until_ms), hold.reason
                ),
                order_id=box.order_id,
                box_id=box.box_id,
                warehouse_id=box.warehouse_id,
                status="held",
                reason=hold.reason,
                release_at_ms=hold.until_ms,
                weight=box.weight,
                dimensions=box.dimensions,
            )
        )
    return step


def release_due(state: OrderState, now_ms: int) -> Order | None:
    """The order event that releases a held order whose hold has ended, or None.

    It is the order as the join holds it under a new event id: the planner writes it to
    the orders topic, so that the release is joined in order with the order's other
    events (a cancellation that came first wins), by whichever worker owns the order."""
    hold, order = state.hold, state.order
    if hold is None or order is None or state.released or not hold.until_ms:
        return None
    if hold.until_ms > now_ms or order.status is OrderStatus.CANCELLED:
        return None
    return order.model_copy(
        update={
            "event_id": derived_id("release", order.event_id, str(hold.until_ms)),
            "cause": f"planner: hold ended ({hold.reason})"[:512],
        }
    )


def _misfit(order: Order, owner: str, units: dict[str, int], box: BoxClosed) -> str:
    """Why a box cannot belong to the order whatever else arrives, or "" if it may."""
    foreign = foreign_skus(units, box)
    oversized = oversized_skus(units, box)
    if box.warehouse_id and owner and box.warehouse_id != owner:
        how = "ships from" if order.warehouse_id else "is packed by (its first box's)"
        return (
            f"box packed in warehouse {box.warehouse_id}, but order {order.order_id} "
            f"{how} warehouse {owner}: refused, it changes nothing"
        )
    if foreign:
        return f"SKU not in order {order.order_id}: {', '.join(foreign)}"
    if oversized:
        return f"box holds more units than order {order.order_id} has of: " + ", ".join(oversized)
    return ""


def _release(
    step: Step,
    state: OrderState,
    plans: dict[str, ParcelPlan],
    candidates: list[BoxClosed],
    allocation: Allocation,
    now_ms: int,
) -> Step:
    """The order is released: a plan per box (or its rejection) and the one label job."""
    order = state.order
    assert order is not None  # noqa: S101 (released orders have one)
    parcels: list[Parcel] = []
    for box in candidates:
        key = box_key(box)
        if box.box_id in allocation.rejected:
            plans[key] = _rejection(box, allocation.rejected[box.box_id])
        else:
            parcel = Parcel(
                box_id=box.box_id,
                warehouse_id=box.warehouse_id or state.owner(),
                station_id=box.station_id,
                items=allocation.assigned[box.box_id],
                weight=box.weight,
                dimensions=box.dimensions,
            )
            plans[key] = ParcelPlan(
                event_id=plan_event_id(order.order_id, box.box_id),
                order_id=order.order_id,
                box_id=box.box_id,
                warehouse_id=parcel.warehouse_id,
                status="planned",
                items=parcel.items,
                weight=box.weight,
                dimensions=box.dimensions,
            )
            parcels.append(parcel)
        step.plans.append(plans[key])
    job_id = job_id_for(order.order_id, [p.box_id for p in parcels])
    job = LabelJob(
        job_id=job_id,
        event_id=job_id,
        order_id=order.order_id,
        shop_id=order.shop_id,
        recipient=order.recipient,
        parcels=parcels,
        unpacked_items=allocation.unallocated,
        shipping_type=order.shipping_type,
        warehouse_id=state.owner(),
        created_at_ms=now_ms,
    )
    step.jobs.append(job)
    step.state = state.model_copy(update={"plans": plans, "job": job, "hold": None})
    return step


def _cancel(state: OrderState, now_ms: int) -> Step:
    step = Step(state)
    plans = dict(state.plans)
    reason = f"order {state.order_id} is cancelled"
    if state.hold is not None:
        reason += f" while held, before any label was bought ({state.hold.reason})"
    for key, box in sorted(state.boxes.items()):
        if key not in plans:
            plans[key] = _rejection(box, reason[:1000])
            step.plans.append(plans[key])
    update: dict[str, object] = {"plans": plans, "hold": None}
    if state.job is not None and state.cancel_job is None:
        cancel = state.job.model_copy(
            update={
                "kind": "cancel",
                "event_id": derived_id("cancel", state.job.job_id),
                "created_at_ms": now_ms,
            }
        )
        update["cancel_job"] = cancel
        step.jobs.append(cancel)
    step.state = state.model_copy(update=update)
    return step
