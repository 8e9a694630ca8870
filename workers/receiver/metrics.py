"""The receiver's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ReceiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "parcelflow_receiver_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            "parcelflow_receiver_broker_ack_seconds",
            "Time from send to the broker's ack (acks=all) of one event.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.broker_unavailable = Counter(
            "parcelflow_receiver_broker_unavailable",
            "Events answered 503 because the broker did not ack in time.",
            registry=r,
        )
        self.bad_signatures = Counter(
            "parcelflow_receiver_bad_signatures",
            "Webhooks refused for a missing or wrong signature (counted, never stored).",
            registry=r,
        )
        self.duplicates = Counter(
            "parcelflow_receiver_duplicate_webhooks",
            "Webhooks answered 200 without storing: notification id already stored.",
            registry=r,
        )
        self.rejected = Counter(
            "parcelflow_receiver_rejected",
            "Signed or authenticated requests refused and kept, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self.webhooks = Counter(
            "parcelflow_receiver_webhooks",
            "Webhooks stored, by TikTok type number (unknown types included).",
            ["type"],
            registry=r,
        )
        self.authorization_alerts = Counter(
            "parcelflow_receiver_authorization_alerts",
            "Seller deauthorizations (type 6) and upcoming expirations (type 7), by shop.",
            ["kind", "shop_id"],
            registry=r,
        )
