"""What the dashboard shows, folded from the topics' records. Pure: no I/O.

``Board.take`` is fed every record of the topics a dashboard reads (orders, boxes,
plans, label jobs, labels, label failures, alerts, parked webhooks), in any order, each
at most a few times (a record read twice counts once: everything is keyed by its id).
``Board.snapshot`` is the JSON the page draws: totals, counts per minute, latency
distributions, consumer lag (set from outside), failures, alerts, repairs.
Memory is bounded: per-id maps keep the newest ``keep`` entries, latency samples the
newest ``samples``.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from schemas.alert import Alert
from schemas.box import BoxClosed
from schemas.codec import decode
from schemas.label import LabelFailure, LabelJob, LabelResult
from schemas.order import Order
from schemas.plan import ParcelPlan
from schemas.repair import RepairRequest
from workers.auth import in_warehouses
from workers.labeler.codes import DECISIONS

KINDS = ("orders", "boxes", "plans", "jobs", "labels", "failures")
MEASURES = {
    "box_to_job": "box closed (stored) → label job",
    "job_to_label": "label job → label stored",
    "order_to_label": "order in → label stored",
}
SHORTEST_SPAN = 5  # minutes the per-minute plot spans at least
MINUTES = 60  # counts per minute kept for the plot
# reasons shops must act on, from the enricher (refresh refused) and the receiver (type 7)
REAUTHORIZE = {"shop_reauthorization_required", "seller_deauthorized"}


class Recent(OrderedDict[str, Any]):
    """A map that forgets its oldest keys past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass
class Board:
    keep: int = 200_000  # ids remembered per kind (dedupe and joins between topics)
    samples: int = 5_000  # latency samples kept per measure
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    rejected_plans: int = 0
    repairs: int = 0
    parked: int = 0
    lag: list[dict[str, Any]] = field(default_factory=list)  # set by the lag reader
    # the labelers' adaptive limit over time: (time ms, calls allowed in flight, summed
    # over the labelers whose /metrics the dashboard reads), the last hour
    limits: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=720))
    per_minute: dict[int, dict[str, int]] = field(default_factory=dict)  # minute -> counts

    def __post_init__(self) -> None:
        self.seen: dict[str, Recent] = {k: Recent(self.keep) for k in KINDS}
        self.order_in_ms = Recent(self.keep)  # order id -> first time seen
        self.box_closed_ms = Recent(self.keep)  # box id -> closed at
        # a job read before some of its boxes (the topics are read in no set order):
        # box id -> the job's id, and job id -> (job time, its box ids), until they come
        self.job_of_box = Recent(self.keep)
        self.early_jobs = Recent(self.keep)
        self.repaired = Recent(self.keep)
        self.latency: dict[str, deque[int]] = {m: deque(maxlen=self.samples) for m in MEASURES}
        self.failures = Recent(200)  # job id -> latest failure, while not labeled
        self.alerts = Recent(200)  # (kind, shop) -> latest alert
        self.held = Recent(self.keep)  # order id -> its held plan, until planned or rejected

    def take(self, topic: str, value: bytes | None, timestamp_ms: int) -> None:
        """One record of the named topic kind (a key of ``KINDS``, "alerts", "parked" or
        "repairs")."""
        if topic == "parked":
            self.parked += 1
        elif topic == "repairs":
            request = decode(RepairRequest, value)
            if isinstance(request, RepairRequest):
                self._repaired(request.order_id)
        elif topic == "orders":
            self._order(decode(Order, value), timestamp_ms)
        elif topic == "boxes":
            self._box(decode(BoxClosed, value), timestamp_ms)
        elif topic == "plans":
            self._plan(decode(ParcelPlan, value), timestamp_ms)
        elif topic == "jobs":
            self._job(decode(LabelJob, value), timestamp_ms)
        elif topic == "labels":
            self._label(decode(LabelResult, value), timestamp_ms)
        elif topic == "failures":
            self._failure(decode(LabelFailure, value), timestamp_ms)
        elif topic == "alerts":
            alert = decode(Alert, value)
            if isinstance(alert, Alert):
                self.alerts.put(f"{alert.kind}/{alert.shop_id}", alert)

    def _count(self, kind: str, key: str, timestamp_ms: int) -> bool:
        """Count a record once per id; False if its id was seen before."""
        if key in self.seen[kind]:
            return False
        self.seen[kind].put(key, True)
        self.totals[kind] += 1
        minute = timestamp_ms // 60_000
        counts = self.per_minute.setdefault(minute, dict.fromkeys(KINDS, 0))
        counts[kind] += 1
        while len(self.per_minute) > MINUTES:
            del self.per_minute[min(self.per_minute)]
        return True

    def _order(self, order: Order | str, timestamp_ms: int) -> None:
        if isinstance(order, str):
            return
        if self._count("orders", order.order_id, timestamp_ms):
            self.order_in_ms.put(order.order_id, timestamp_ms)

    def _box(self, box: BoxClosed | str, timestamp_ms: int) -> None:
        if isinstance(box, str):
            return
        if self._count("boxes", box.box_id, timestamp_ms):
            # when the receiver stored it (the 202), on the broker's clock, not the station's
            self.box_closed_ms.put(box.box_id, timestamp_ms)
            job_id = self.job_of_box.pop(box.box_id, None)
            if job_id in self.early_jobs:
                self._box_to_job(job_id, *self.early_jobs[job_id])

    def _repaired(self, order_id: str) -> None:
        if order_id not in self.repaired:
            self.repaired.put(order_id, True)
            self.repairs += 1

    def _plan(self, plan: ParcelPlan | str, timestamp_ms: int) -> None:
        if isinstance(plan, str) or not self._count("plans", plan.event_id, timestamp_ms):
            return
        if plan.status == "held":
            self.held.put(plan.order_id, plan)
            return
        self.held.pop(plan.order_id, None)
        if plan.status != "planned":
            self.rejected_plans += 1

    def _job(self, job: LabelJob | str, timestamp_ms: int) -> None:
        if isinstance(job, str) or job.kind != "create":
            return
        self.held.pop(job.order_id, None)
        if not self._count("jobs", job.job_id, timestamp_ms) or not job.parcels:
            return
        self._box_to_job(job.job_id, timestamp_ms, [p.box_id for p in job.parcels])

    def _box_to_job(self, job_id: str, job_ms: int, box_ids: list[str]) -> None:
        """The job's latency from its last box, once every box of it has been read."""
        missing = [b for b in box_ids if b not in self.box_closed_ms]
        if missing:
            self.early_jobs.put(job_id, (job_ms, box_ids))
            for box_id in missing:
                self.job_of_box.put(box_id, job_id)
            return
        self.early_jobs.pop(job_id, None)
        closed = max(self.box_closed_ms[b] for b in box_ids)
        self.latency["box_to_job"].append(max(0, job_ms - closed))

    def _label(self, label: LabelResult | str, timestamp_ms: int) -> None:
        if isinstance(label, str) or not self._count("labels", label.job_id, timestamp_ms):
            return
        self.failures.pop(label.job_id, None)  # a replayed failure that got its label
        self.latency["job_to_label"].append(label.latency_ms)
        order_in = self.order_in_ms.get(label.order_id)
        if order_in is not None:
            self.latency["order_to_label"].append(max(0, label.labeled_at_ms - order_in))

    def _failure(self, failure: LabelFailure | str, timestamp_ms: int) -> None:
        if isinstance(failure, str) or failure.job_id in self.seen["labels"]:
            return
        self._count("failures", failure.job_id, timestamp_ms)
        self.failures.put(failure.job_id, failure)

    def snapshot(self, now_ms: int, warehouses: frozenset[str] | None = None) -> dict[str, Any]:
        """The page's data; for an operator of some warehouses (``warehouses``), only what
        is theirs: their failures and held orders, the shops' alerts, and none of the
        counts, latencies and lag that add up every warehouse."""
        if warehouses is not None:
            return self.scoped(now_ms, warehouses)
        this_minute = now_ms // 60_000
        # the plot spans the run: from its first minute (at least the last 5) to now
        first = min(self.per_minute, default=this_minute)
        start = max(this_minute - MINUTES + 1, min(first, this_minute - SHORTEST_SPAN + 1))
        minutes = list(range(start, this_minute + 1))
        empty = dict.fromkeys(KINDS, 0)
        return {
            "at_ms": now_ms,
            "totals": self.totals | {"rejected_plans": self.rejected_plans},
            "per_minute": {
                "minutes": [m * 60_000 for m in minutes],
                **{k: [self.per_minute.get(m, empty)[k] for m in minutes] for k in KINDS},
            },
            "last_minute": self.per_minute.get(this_minute, empty),
            "latency": {m: distribution(self.latency[m], title) for m, title in MEASURES.items()},
            "lag": self.lag,
            "limit": {
                "times": [t for t, _ in self.limits],
                "values": [v for _, v in self.limits],
            },
            "failures": [failure_row(f) for f in reversed(self.failures.values())][:50],
            "failure_reasons": reasons(self.failures.values()),
            "alerts": [alert_row(a) for a in reversed(self.alerts.values())],
            "reauthorize": sorted(
                {a.shop_id for a in self.alerts.values() if a.kind in REAUTHORIZE and a.shop_id}
            ),
            "repairs": self.repairs,
            "parked": self.parked,
            "held": held_rows(self.held.values()),
        }

    def scoped(self, now_ms: int, warehouses: frozenset[str]) -> dict[str, Any]:
        full = self.snapshot(now_ms)
        failures = [f for f in self.failures.values() if in_warehouses(f.job, warehouses)]
        held = [p for p in self.held.values() if p.warehouse_id in warehouses]
        empty = dict.fromkeys(KINDS, 0)
        return full | {
            "scope": sorted(warehouses),
            "totals": empty | {"rejected_plans": 0},
            "per_minute": {"minutes": [], **{k: [] for k in KINDS}},
            "last_minute": empty,
            "latency": {m: distribution(deque(), title) for m, title in MEASURES.items()},
            "lag": [],
            "limit": {"times": [], "values": []},
            "failures": [failure_row(f) for f in reversed(failures)][:50],
            "failure_reasons": reasons(failures),
            "repairs": 0,
            "parked": 0,
            "held": held_rows(held),
        }


BUCKETS_MS = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000]


def distribution(values: deque[int], title: str) -> dict[str, Any]:
    """Percentiles and a histogram over fixed buckets (each bucket: values up to its
    bound; the last one, everything above)."""
    data = sorted(values)
    counts = [0] * (len(BUCKETS_MS) + 1)
    bucket = 0
    for v in data:
        while bucket < len(BUCKETS_MS) and v > BUCKETS_MS[bucket]:
            bucket += 1
        counts[bucket] += 1
    out: dict[str, Any] = {"title": title, "count": len(data), "buckets_ms": BUCKETS_MS}
    out["histogram"] = counts
    if len(data) >= 2:
        cuts = statistics.quantiles(data, n=100, method="inclusive")
        out |= {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": data[-1]}
    elif data:
        out |= dict.fromkeys(("p50", "p95", "p99", "max"), data[0])
    return out


def failure_row(failure: LabelFailure) -> dict[str, Any]:
    return {
        "job_id": failure.job_id,
        "order_id": failure.order_id,
        "reason": failure.error_code,
        "message": failure.message,
        "attempts": failure.attempts,
        "replayable": failure.error_code not in DECISIONS,
        "failed_at_ms": failure.failed_at_ms,
    }


def held_rows(plans: Any) -> dict[str, Any]:
    """Orders held before their label: how many, the next release, the 50 next."""
    rows = sorted(
        (
            {"order_id": p.order_id, "release_at_ms": p.release_at_ms, "reason": p.reason}
            for p in plans
        ),
        key=lambda row: (row["release_at_ms"] or 2**53, row["order_id"]),
    )
    timed = [row["release_at_ms"] for row in rows if row["release_at_ms"]]
    return {"orders": len(rows), "next_release_ms": min(timed, default=0), "rows": rows[:50]}


def reasons(failures: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for failure in failures:
        out[failure.error_code] = out.get(failure.error_code, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def alert_row(alert: Alert) -> dict[str, Any]:
    expires = alert.details.get("expiration_time")  # type 7: when the authorization ends
    return {
        "kind": alert.kind,
        "shop_id": alert.shop_id,
        "message": alert.message,
        "at_ms": alert.at_ms,
        "expires": expires,
    }
