"""What the auditor concludes from what it has seen. Pure: no Kafka, time passed in.

The auditor replays the planner's own pure join (``workers.planner.join``) over the
orders and boxes it reads, so it knows which boxes *should* have a parcel plan by now.
A box that should have one, and whose plan has not appeared on ``parcel-plans.v1``
``repair_after_ms`` after it became plannable, is a box the planner missed (Faust can
skip offsets at rebalances): the auditor asks the planner to join it again
(``Repair``), and the idempotent planner plans it. A repair names the order's last order
event and all its boxes by their offsets (``Ref``), in the order they came, and the
planner reads those records itself: the auditor can point at records, never write one. A
worker that lost the order's table state (a restart that skipped part of its changelog)
rebuilds it, and the join's deterministic allocation gives the same item ids as before;
where the state was intact, the planner only republishes what it had published, with the
same event ids. A box whose order has not arrived
``box_wait_ms`` after the box closed is dead-lettered with the reason
``order never arrived`` and raises an alert, once. An order that the join released
whose label job has not appeared on ``label-jobs.v1`` ``repair_after_ms`` later (the
planner wrote its state but its job never reached the broker) is repaired the same
way: the planner republishes the job it had made. A label job without a label or
failure after ``label_after_ms`` is reported.

Memory is bounded by what is unfinished: once an order is released, its job seen and
every box of it has its plan, the audit forgets its state and events and keeps only the
order id (with the time), for ``lookback_ms``. Later events of that order are not
replayed: an order update changes nothing the auditor checks, and a box after release
must get a plan (the planner rejects it) like any other, so it is due at once and
repaired alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.box import BoxClosed
from schemas.label import LabelJob
from schemas.order import Order, OrderStatus
from schemas.plan import ParcelPlan
from workers.planner.join import OrderState, Step, TooLarge, encode_step, on_box, on_order

ORDER_NEVER_ARRIVED = "order never arrived"


@dataclass(frozen=True)
class Ref:
    """Where a record is: its partition and offset (orders and boxes are co-partitioned)."""

    partition: int
    offset: int


@dataclass
class Box:
    box: BoxClosed
    key: bytes | None
    raw: bytes  # for its dead letter, should its order never arrive
    seen_at_ms: int
    due_since_ms: int | None = None  # when the join first said it should have a plan
    repairs: int = 0
    expired: bool = False


@dataclass(frozen=True)
class Repair:
    order_id: str
    order: Ref | None  # the order's latest event the join took
    boxes_at: list[Ref]  # its boxes, in the order they came
    boxes: list[str]  # the boxes that should have had a plan
    job_missing: bool = False  # the order was released and no label job came


@dataclass(frozen=True)
class Expire:
    box: Box


@dataclass(frozen=True)
class Unlabeled:
    job_id: str
    order_id: str
    waited_ms: int


@dataclass
class Audit:
    repair_after_ms: int
    box_wait_ms: int
    label_after_ms: int
    orders: dict[str, OrderState] = field(default_factory=dict)
    order_events: dict[str, Ref] = field(default_factory=dict)
    box_events: dict[str, dict[str, Ref]] = field(default_factory=dict)
    waiting: dict[tuple[str, str], Box] = field(default_factory=dict)  # boxes without a plan
    planned: set[tuple[str, str]] = field(default_factory=set)
    jobs: dict[str, tuple[LabelJob, int]] = field(default_factory=dict)  # job id -> seen at
    reported: set[str] = field(default_factory=set)
    finished_jobs: dict[str, int] = field(default_factory=dict)  # job id -> labeled at
    lookback_ms: int = 7 * 86_400_000
    released: dict[str, int] = field(default_factory=dict)  # forgotten order id -> when
    touched: dict[str, int] = field(default_factory=dict)  # order id -> last event at
    job_seen: dict[str, int] = field(default_factory=dict)  # order id -> its job seen at
    job_due: dict[str, int] = field(default_factory=dict)  # released order -> job due since
    max_bytes: int = 1024 * 1024  # the planner's record limit: what it refuses, so do we
    # Plans of forgotten orders, read before their box (another topic, read in any order):
    # that box has its plan and must not wait. Kept for the lookback.
    early_plans: dict[tuple[str, str], int] = field(default_factory=dict)

    def _fits(self, before: OrderState, step: Step) -> bool:
        """The planner dead-letters an event whose records would not fit: ignore it too."""
        try:
            encode_step(before, step, self.max_bytes)
        except TooLarge:
            return False
        return True

    def on_order(self, order: Order, now_ms: int, at: Ref | None = None) -> None:
        if order.order_id in self.released:
            return
        state = self.orders.get(order.order_id) or OrderState(order_id=order.order_id)
        step = on_order(state, order, now_ms)
        if not self._fits(state, step):
            return
        if step.state.order is order and at is not None:  # the join took it as the latest
            self.order_events[order.order_id] = at
        self._update(step.state, now_ms)

    def on_box(
        self, box: BoxClosed, key: bytes | None, raw: bytes, now_ms: int, at: Ref | None = None
    ) -> None:
        ident = (box.order_id, box.box_id)
        if box.order_id in self.released:  # after release: the planner rejects it at once
            if self.early_plans.pop(ident, None) is not None:
                return  # its plan came first
            if at is not None:
                self.box_events.setdefault(box.order_id, {}).setdefault(box.box_id, at)
            if ident not in self.waiting:
                self.waiting[ident] = Box(box, key, raw, now_ms, due_since_ms=now_ms)
            return
        state = self.orders.get(box.order_id) or OrderState(order_id=box.order_id)
        step = on_box(state, box, now_ms)
        if not self._fits(state, step):
            return
        if at is not None:
            self.box_events.setdefault(box.order_id, {}).setdefault(box.box_id, at)
        if ident not in self.planned and ident not in self.waiting:
            self.waiting[ident] = Box(box, key, raw, now_ms)
        self._update(step.state, now_ms)

    def on_plan(self, plan: ParcelPlan, now_ms: int = 0) -> None:
        if plan.status == "held":  # a note that the order waits: the box's plan is to come
            return
        ident = (plan.order_id, plan.box_id)
        was_waiting = self.waiting.pop(ident, None) is not None
        if plan.order_id in self.released:
            if not was_waiting and plan.box_id not in self.box_events.get(plan.order_id, {}):
                self.early_plans[ident] = now_ms
            events = self.box_events.get(plan.order_id, {})
            events.pop(plan.box_id, None)
            if not events:
                self.box_events.pop(plan.order_id, None)
            return
        self.planned.add(ident)
        state = self.orders.get(plan.order_id)
        if state is not None:
            self._forget_if_done(state, now_ms)

    def on_job(self, job: LabelJob, now_ms: int) -> None:
        if job.kind != "create":
            return
        if job.job_id not in self.finished_jobs:
            self.jobs.setdefault(job.job_id, (job, now_ms))
        if job.order_id not in self.released:
            self.job_seen.setdefault(job.order_id, now_ms)
            self.job_due.pop(job.order_id, None)
            state = self.orders.get(job.order_id)
            if state is not None:
                self._forget_if_done(state, now_ms)

    def on_label_result(self, job_id: str, now_ms: int = 0) -> None:
        self.finished_jobs[job_id] = now_ms
        self.jobs.pop(job_id, None)
        self.reported.discard(job_id)

    def _update(self, state: OrderState, now_ms: int) -> None:
        self.orders[state.order_id] = state
        self.touched[state.order_id] = now_ms
        if state.released and state.order_id not in self.job_seen:
            self.job_due.setdefault(state.order_id, now_ms)
        for plan in state.plans.values():
            waiting = self.waiting.get((state.order_id, plan.box_id))
            if waiting is not None and waiting.due_since_ms is None:
                waiting.due_since_ms = now_ms
        self._forget_if_done(state, now_ms)

    def _forget_if_done(self, state: OrderState, now_ms: int) -> None:
        """Released with its job seen (or cancelled unreleased), every box planned: keep
        only the order id."""
        order_id = state.order_id
        cancelled = state.order is not None and state.order.status is OrderStatus.CANCELLED
        if not (state.released or cancelled):
            return
        if state.released and order_id not in self.job_seen:
            return
        if any((order_id, b.box_id) not in self.planned for b in state.boxes.values()):
            return
        self._drop(state)
        self.released[order_id] = now_ms

    def _drop(self, state: OrderState) -> None:
        for box in state.boxes.values():
            self.planned.discard((state.order_id, box.box_id))
        del self.orders[state.order_id]
        self.touched.pop(state.order_id, None)
        self.order_events.pop(state.order_id, None)
        self.box_events.pop(state.order_id, None)
        self.job_seen.pop(state.order_id, None)
        self.job_due.pop(state.order_id, None)

    def forget_old(self, now_ms: int) -> None:
        """Drop what is older than the lookback: forgotten orders, labeled jobs, and orders
        with no event since and no box waiting (never packed, or packed elsewhere)."""
        horizon = now_ms - self.lookback_ms
        for remembered in (self.released, self.finished_jobs, self.job_seen):
            for old in [k for k, at in remembered.items() if at < horizon]:
                del remembered[old]
        for plan in [k for k, at in self.early_plans.items() if at < horizon]:
            del self.early_plans[plan]
        waiting_orders = {order_id for order_id, _ in self.waiting}
        for order_id in [k for k, at in self.touched.items() if at < horizon]:
            if order_id not in waiting_orders:
                self._drop(self.orders[order_id])

    def due(self, now_ms: int) -> list[Repair | Expire | Unlabeled]:
        """What to do now: repairs and expiries (each box once per period), reports."""
        actions: list[Repair | Expire | Unlabeled] = []
        to_repair: dict[str, list[str]] = {}
        for waiting in self.waiting.values():
            order_known = (
                self.orders.get(waiting.box.order_id) is not None
                and self.orders[waiting.box.order_id].order is not None
            )
            if waiting.due_since_ms is not None:
                if now_ms - waiting.due_since_ms >= self.repair_after_ms:
                    waiting.repairs += 1
                    waiting.due_since_ms = now_ms  # next repair one period later
                    to_repair.setdefault(waiting.box.order_id, []).append(waiting.box.box_id)
            elif not order_known and not waiting.expired:
                if now_ms - waiting.seen_at_ms >= self.box_wait_ms:
                    waiting.expired = True
                    actions.append(Expire(waiting))
        jobless: set[str] = set()
        for order_id, since in self.job_due.items():
            if now_ms - since >= self.repair_after_ms:
                self.job_due[order_id] = now_ms  # next repair one period later
                jobless.add(order_id)
                to_repair.setdefault(order_id, [])
        for order_id, box_ids in to_repair.items():
            actions.append(self._repair(order_id, box_ids, order_id in jobless))
        for job_id, (job, seen_at) in self.jobs.items():
            waited = now_ms - seen_at
            if waited >= self.label_after_ms and job_id not in self.reported:
                self.reported.add(job_id)
                actions.append(Unlabeled(job_id, job.order_id, waited))
        return actions

    def _repair(self, order_id: str, box_ids: list[str], job_missing: bool) -> Repair:
        order_at = self.order_events.get(order_id)
        boxes_at = list(self.box_events.get(order_id, {}).values())
        return Repair(order_id, order_at, boxes_at, sorted(box_ids), job_missing)
