"""The one registry of topics: names, what they hold, how they are keyed and kept.

Every topic is keyed by the TikTok order id (the shop id where an event has no order),
and every topic is created with the same partition count, so ``orders.v1`` and
``warehouse.boxes.v1`` are co-partitioned for the planner's join, and a label job's
label, attempt and failure sit in the partition number of the job. ``parcelflow topics
plan|apply|check`` (``workers/topics.py``) works from this registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from schemas.alert import Alert
from schemas.box import BoxClosed
from schemas.buyer import DataKey, Erasure
from schemas.label import LabelAttempt, LabelFailure, LabelJob, LabelResult
from schemas.limits import LimitReport
from schemas.order import Order
from schemas.plan import ParcelPlan
from schemas.rejected import RejectedRecord
from schemas.repair import RepairRequest
from schemas.replay import ReplayRequest
from schemas.session import SessionEnded
from schemas.tokens import SealedTokens
from schemas.webhook import ParkedWebhook, WebhookRecord

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[BaseModel]
    key: str
    description: str
    retention_ms: int = 14 * DAY_MS  # longer than the auditor's 7-day lookback
    cleanup_policy: str = "delete"

    def full_name(self, namespace: str = "") -> str:
        return f"{namespace}{self.name}"


WEBHOOKS = TopicSpec(
    "tiktok.webhooks.v1", WebhookRecord, "shop id", "Verified TikTok webhooks, as sent."
)
WEBHOOKS_PARKED = TopicSpec(
    "tiktok.webhooks.parked.v1",
    ParkedWebhook,
    "shop id",
    "Webhooks waiting for their shop to re-authorize, or for TikTok to answer again.",
)
ORDERS = TopicSpec("orders.v1", Order, "order id", "Orders with one line item per unit.")
BOXES = TopicSpec("warehouse.boxes.v1", BoxClosed, "order id", "Box-closed events.")
PLANS = TopicSpec("parcel-plans.v1", ParcelPlan, "order id", "Item ids per box, or rejection.")
LABEL_JOBS = TopicSpec("label-jobs.v1", LabelJob, "order id", "One shipment to label.")
# The labeler's ledger reads these back: a job redelivered within their retention is
# never labeled twice.
LABELS = TopicSpec("labels.v1", LabelResult, "order id", "Labels made.", 30 * DAY_MS)
LABEL_FAILURES = TopicSpec(
    "label-failures.v1", LabelFailure, "order id", "Label jobs that failed for good.", 30 * DAY_MS
)
LABEL_ATTEMPTS = TopicSpec(
    "label-attempts.v1",
    LabelAttempt,
    "order id",
    "Label calls started (crash recovery).",
    30 * DAY_MS,
)
ALERTS = TopicSpec("alerts.v1", Alert, "shop id", "Operational alerts.", 30 * DAY_MS)
# The enricher replicas' shared TikTok tokens: the latest record per shop is its tokens.
TOKENS = TopicSpec(
    "tiktok.tokens.v1",
    SealedTokens,
    "shop id (or * for the default tokens)",
    "TikTok access and refresh tokens per shop, encrypted; compacted.",
    retention_ms=-1,
    cleanup_policy="compact",
)

# Each labeler replica's adaptive limit every few seconds: a replica that starts (and every
# replica on a rebalance) takes its share of what the group learned.
LIMITS = TopicSpec(
    "labeler.limits.v1",
    LimitReport,
    "labeler replica (host:pid)",
    "Each labeler replica's adaptive limit, read by replicas that start.",
    retention_ms=DAY_MS,
)


def _rejected(source: TopicSpec) -> TopicSpec:
    base = source.name.removesuffix(".v1")
    return TopicSpec(
        f"{base}.rejected.v1",
        RejectedRecord,
        source.key,
        f"Dead letters of {source.name}.",
        30 * DAY_MS,
    )


# Dashboard sessions ended by a logout: every dashboard replica refuses their cookies.
SESSIONS = TopicSpec(
    "dashboard.sessions.v1",
    SessionEnded,
    "session id",
    "Dashboard sessions ended before their time (logout), read by every dashboard replica.",
    retention_ms=31 * DAY_MS,  # longer than any session lasts (30 days at most)
)
# Replays of failed label jobs an operator asked for (the dashboard asks, the labeler acts).
REPLAYS = TopicSpec(
    "label-replays.v1",
    ReplayRequest,
    "order id",
    "Replays of failed label jobs operators asked for, checked and sent by the labeler.",
)

# The auditor's requests that the planner join again records it missed (by offset).
REPAIRS = TopicSpec(
    "planner.repairs.v1",
    RepairRequest,
    "order id",
    "Orders and boxes the planner should have joined, named by offset by the auditor.",
)

# The buyer data keys, wrapped: written by the receiver and the enricher (who seal), read
# by the labeler (who opens). A key's tombstone is an erasure (crypto-shredding).
BUYER_KEYS = TopicSpec(
    "buyer.keys.v1",
    DataKey,
    "shop id/key id",
    "Buyer data keys, wrapped by the key-encryption key; compacted, tombstoned on erasure.",
    retention_ms=-1,
    cleanup_policy="compact",
)
# The audit trail of erasures (who asked, what, when): kept longer than a year.
ERASURES = TopicSpec(
    "buyer.erasures.v1",
    Erasure,
    "shop id (an order's erasure: order id)",
    "Erasures of buyer data (orders, shops): who asked, what, when, what was destroyed.",
    retention_ms=400 * DAY_MS,
)

WEBHOOKS_REJECTED = _rejected(WEBHOOKS)
ORDERS_REJECTED = _rejected(ORDERS)
BOXES_REJECTED = _rejected(BOXES)
LABEL_JOBS_REJECTED = _rejected(LABEL_JOBS)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    WEBHOOKS,
    WEBHOOKS_PARKED,
    ORDERS,
    BOXES,
    PLANS,
    LABEL_JOBS,
    LABELS,
    LABEL_FAILURES,
    LABEL_ATTEMPTS,
    ALERTS,
    TOKENS,
    LIMITS,
    SESSIONS,
    REPLAYS,
    REPAIRS,
    BUYER_KEYS,
    ERASURES,
    WEBHOOKS_REJECTED,
    ORDERS_REJECTED,
    BOXES_REJECTED,
    LABEL_JOBS_REJECTED,
)

# Topics that must have the same partition count (and key): the planner joins orders and
# boxes in one partition number, its table has that many partitions, and the labeler
# finds a job's label, attempt and failure in the job's partition number.
COPARTITIONED: tuple[TopicSpec, ...] = (
    ORDERS,
    BOXES,
    REPAIRS,
    PLANS,
    LABEL_JOBS,
    LABELS,
    LABEL_ATTEMPTS,
    LABEL_FAILURES,
)
