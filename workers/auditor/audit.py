"""What the auditor concludes from what it has seen. Pure: no Kafka, time passed in.

The auditor replays the planner's own pure join (``workers.planner.join``) over the
orders and boxes it reads, so it knows which boxes *should* have a parcel plan by now.
A box that should have one, and whose plan has not appeared on ``parcel-plans.v1``
``repair_after_ms`` after it became plannable, is a box the planner missed (Faust can
skip offsets at rebalances): the auditor republishes it, and the idempotent planner
plans it. The repair republishes the order's last order event and all its boxes, in the
order they came: a worker that lost the order's table state (a restart that skipped
part of its changelog) rebuilds it, and the join's deterministic allocation gives the
same item ids as before; where the state was intact, the planner only republishes what
it had published, with the same event ids. A box whose order has not arrived
``box_wait_ms`` after the box closed is dead-lettered with the reason
``order never arrived`` and raises an alert, once. A label job without a label or
failure after ``label_after_ms`` is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.box import BoxClosed
from schemas.label import LabelJob
from schemas.order import Order
from schemas.plan import ParcelPlan
from workers.planner.join import OrderState, on_box, on_order

ORDER_NEVER_ARRIVED = "order never arrived"


@dataclass
class Box:
    box: BoxClosed
    key: bytes | None
    raw: bytes
    seen_at_ms: int
    due_since_ms: int | None = None  # when the join first said it should have a plan
    repairs: int = 0
    expired: bool = False


@dataclass(frozen=True)
class Repair:
    order_id: str
    messages: list[tuple[bytes | None, bytes, str]]  # key, value, "order" | "box"
    boxes: list[str]  # the boxes that should have had a plan


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
    order_events: dict[str, tuple[bytes | None, bytes]] = field(default_factory=dict)
    box_events: dict[str, dict[str, tuple[bytes | None, bytes]]] = field(default_factory=dict)
    waiting: dict[tuple[str, str], Box] = field(default_factory=dict)  # boxes without a plan
    planned: set[tuple[str, str]] = field(default_factory=set)
    jobs: dict[str, tuple[LabelJob, int]] = field(default_factory=dict)  # job id -> seen at
    reported: set[str] = field(default_factory=set)
    finished_jobs: set[str] = field(default_factory=set)

    def on_order(
        self, order: Order, now_ms: int, key: bytes | None = None, raw: bytes = b""
    ) -> None:
        state = self.orders.get(order.order_id) or OrderState(order_id=order.order_id)
        step = on_order(state, order, now_ms)
        if step.state.order is order:  # the join took this event as the order's latest
            self.order_events[order.order_id] = (key, raw)
        self._update(step.state, now_ms)

    def on_box(self, box: BoxClosed, key: bytes | None, raw: bytes, now_ms: int) -> None:
        self.box_events.setdefault(box.order_id, {}).setdefault(box.box_id, (key, raw))
        ident = (box.order_id, box.box_id)
        if ident not in self.planned and ident not in self.waiting:
            self.waiting[ident] = Box(box, key, raw, now_ms)
        state = self.orders.get(box.order_id) or OrderState(order_id=box.order_id)
        self._update(on_box(state, box, now_ms).state, now_ms)

    def on_plan(self, plan: ParcelPlan) -> None:
        ident = (plan.order_id, plan.box_id)
        self.planned.add(ident)
        self.waiting.pop(ident, None)

    def on_job(self, job: LabelJob, now_ms: int) -> None:
        if job.kind == "create" and job.job_id not in self.finished_jobs:
            self.jobs.setdefault(job.job_id, (job, now_ms))

    def on_label_result(self, job_id: str) -> None:
        self.finished_jobs.add(job_id)
        self.jobs.pop(job_id, None)

    def _update(self, state: OrderState, now_ms: int) -> None:
        self.orders[state.order_id] = state
        for box_id in state.plans:
            waiting = self.waiting.get((state.order_id, box_id))
            if waiting is not None and waiting.due_since_ms is None:
                waiting.due_since_ms = now_ms

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
        for order_id, box_ids in to_repair.items():
            actions.append(self._repair(order_id, box_ids))
        for job_id, (job, seen_at) in self.jobs.items():
            waited = now_ms - seen_at
            if waited >= self.label_after_ms and job_id not in self.reported:
                self.reported.add(job_id)
                actions.append(Unlabeled(job_id, job.order_id, waited))
        return actions

    def _repair(self, order_id: str, box_ids: list[str]) -> Repair:
        messages: list[tuple[bytes | None, bytes, str]] = []
        if order_id in self.order_events:
            key, raw = self.order_events[order_id]
            messages.append((key, raw, "order"))
        for key, raw in self.box_events.get(order_id, {}).values():
            messages.append((key, raw, "box"))
        return Repair(order_id, messages, sorted(box_ids))
