"""Demo traffic: signed TikTok webhooks and box-closed events over HTTP, then watch labels.

``send`` plays the orders against a running stack; ``watch`` follows labels.v1 and
label-failures.v1 until every order has one or the time is up, printing progress;
``Summary`` is what ``parcelflow run`` prints at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from devstack.demo_data import (
    CANCEL_ACCEPTED,
    CANCEL_DECLINED,
    DemoOrder,
    answered,
    cancellation_webhook,
    webhook,
)
from schemas.codec import decode, encode
from schemas.label import LabelFailure, LabelResult
from schemas.plan import ParcelPlan
from schemas.topics import LABEL_FAILURES, LABELS, PLANS
from workers.kafka import Topics, make_reader
from workers.settings import Settings
from workers.tiktok.signing import webhook_signature

RETRIED = frozenset({429, 500, 502, 503, 504})  # statuses a sender tries again


@dataclass
class Progress:
    expected: set[str]
    labels: dict[str, LabelResult] = field(default_factory=dict)
    failures: dict[str, LabelFailure] = field(default_factory=dict)
    plans: dict[str, ParcelPlan] = field(default_factory=dict)
    duplicate_labels: int = 0
    # orders cancelled before their label (no label may come): order id -> its boxes
    # rejected (every box's plan says so once the planner has it)
    cancelled: dict[str, int] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)  # orders that had a held plan

    @classmethod
    def of(cls, orders: list[DemoOrder]) -> Progress:
        return cls(
            expected={o.order_id for o in orders if o.labeled},
            cancelled={o.order_id: len(o.boxes) for o in orders if not o.labeled},
        )

    @property
    def pending(self) -> int:
        waiting = len(self.expected - self.labels.keys() - self.failures.keys())
        return waiting + sum(1 for n in self.cancelled.values() if n > 0)

    @property
    def labeled_cancelled(self) -> int:
        """Labels bought for orders cancelled before their label: must be 0."""
        return sum(1 for order_id in self.cancelled if order_id in self.labels)


@dataclass
class Summary:
    orders: int
    boxes: int
    progress: Progress
    wall_s: float
    sent_s: float
    restarts: dict[str, int] = field(default_factory=dict)  # worker -> restarts

    def lines(self) -> list[str]:
        p = self.progress
        latencies = sorted(r.latency_ms for r in p.labels.values())

        def pct(q: int) -> str:
            if len(latencies) < 2:
                return f"{latencies[0] / 1000:.2f}s" if latencies else "n/a"
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            return f"{cuts[q - 1] / 1000:.2f}s"

        planned = sum(1 for x in p.plans.values() if x.status == "planned")
        rejected = sum(1 for x in p.plans.values() if x.status == "rejected")
        rate = len(p.labels) / self.wall_s if self.wall_s else 0.0
        return [
            f"orders sent:        {self.orders} (in {self.sent_s:.1f}s)",
            f"boxes sent:         {self.boxes}",
            f"parcel plans:       {planned} planned, {rejected} rejected",
            f"held, then labeled: {len(p.held & p.labels.keys())} of {len(p.held)} held "
            "(buyer remorse window, cancel requests)",
            f"cancelled unlabeled:{len(p.cancelled) - p.labeled_cancelled:>3} of "
            f"{len(p.cancelled)} cancelled before their label",
            f"labels:             {len(p.labels)} ({rate:.1f} labels/s over the run)",
            f"label failures:     {len(p.failures)}",
            f"duplicate labels:   {p.duplicate_labels}",
            f"label latency:      p50 {pct(50)}, p95 {pct(95)} (job created -> label stored)",
            f"worker restarts:    {restarts_text(self.restarts)}",
            f"wall time:          {self.wall_s:.1f}s",
            f"summary: orders={self.orders} labels={len(p.labels)} "
            f"failures={len(p.failures) + p.labeled_cancelled} pending={p.pending}",
        ]


def restarts_text(restarts: dict[str, int]) -> str:
    if not restarts:
        return "0"
    detail = ", ".join(f"{name} {n}" for name, n in sorted(restarts.items()))
    return f"{sum(restarts.values())} ({detail})"


async def send(
    orders: list[DemoOrder],
    settings: Settings,
    receiver_url: str,
    simulator_url: str,
    ingest_token: str,
    concurrency: int = 32,
    retry_for_s: float = 120.0,
    stored: dict[str, float] | None = None,
) -> None:
    """Load the orders into the fake TikTok, then send their webhooks and boxes.
    ``stored``: order id -> when its last box was stored (unix s), filled as they are.

    Like TikTok and an upstream system, a request that got no answer, a 429 or a 5xx is
    sent again (with backoff, for up to ``retry_for_s``): only a 200 or 202 means stored.
    """
    secret = settings.tiktok_app_secret.get_secret_value()
    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        body = orjson.dumps([o.tiktok for o in orders])
        async with http.put(f"{simulator_url}/_sim/tiktok/orders", data=body) as response:
            response.raise_for_status()

        async def post(url: str, data: bytes, headers: dict[str, str]) -> None:
            async with limit:
                deadline = time.monotonic() + retry_for_s
                for attempt in itertools.count(1):
                    try:
                        async with http.post(url, data=data, headers=headers) as response:
                            if response.status in (200, 202):
                                return
                            why = f"answered {response.status}: {await response.text()}"
                            if response.status not in RETRIED:
                                raise RuntimeError(f"{url} {why}")
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        why = f"no answer ({type(exc).__name__})"
                    if time.monotonic() >= deadline:
                        raise RuntimeError(f"{url}: {why}, after {attempt} tries")
                    await asyncio.sleep(min(5.0, 0.25 * 2**attempt))

        async def one(order: DemoOrder) -> None:
            raw = orjson.dumps(webhook(order, int(time.time())))
            signature = webhook_signature(settings.tiktok_app_key, secret, raw)
            await post(f"{receiver_url}/webhooks/tiktok", raw, {"Authorization": signature})
            bearer = {"Authorization": f"Bearer {ingest_token}", "content-type": "application/json"}
            for box in order.boxes:
                await post(f"{receiver_url}/v1/boxes", encode(box), bearer)
            if stored is not None:
                stored[order.order_id] = time.time()
            if order.flow in (CANCEL_DECLINED, CANCEL_ACCEPTED):  # the seller answers later
                await asyncio.sleep(5.0)
                now_s = int(time.time())
                body = orjson.dumps([answered(order.tiktok, order.flow, now_s)])
                async with http.put(f"{simulator_url}/_sim/tiktok/orders", data=body) as r:
                    r.raise_for_status()
                raw = orjson.dumps(cancellation_webhook(order, now_s))
                signature = webhook_signature(settings.tiktok_app_key, secret, raw)
                await post(f"{receiver_url}/webhooks/tiktok", raw, {"Authorization": signature})

        await asyncio.gather(*(one(o) for o in orders))


async def watch(
    settings: Settings, progress: Progress, timeout_s: float, every_s: float = 2.0, out: bool = True
) -> None:
    """Follow the result topics until nothing is pending or the time is up."""
    names = Topics(settings)
    consumer = make_reader(
        settings,
        names(LABELS),
        names(LABEL_FAILURES),
        names(PLANS),
    )
    await consumer.start()
    started = time.monotonic()
    last_print = 0.0
    try:
        while progress.pending and time.monotonic() - started < timeout_s:
            batches = await consumer.getmany(timeout_ms=250)
            for messages in batches.values():
                for m in messages:
                    take(progress, m.topic, m.value, names)
            now = time.monotonic()
            if out and now - last_print >= every_s:
                last_print = now
                done = len(progress.labels) + len(progress.failures)
                print(
                    f"  [{now - started:5.1f}s] labels "
                    f"{len(progress.labels)}/{len(progress.expected)}"
                    f"  failures {len(progress.failures)}  plans {len(progress.plans)}"
                    f"  pending {len(progress.expected) - done}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        await consumer.stop()


def take(progress: Progress, topic: str, value: bytes | None, names: Topics) -> None:
    if topic == names(LABELS):
        label = decode(LabelResult, value)
        if isinstance(label, LabelResult):
            known = progress.labels.get(label.order_id)
            if known is not None and known.shipment_id != label.shipment_id:
                progress.duplicate_labels += 1
            progress.labels[label.order_id] = label
    elif topic == names(LABEL_FAILURES):
        failure = decode(LabelFailure, value)
        if isinstance(failure, LabelFailure):
            progress.failures[failure.order_id] = failure
    else:
        plan = decode(ParcelPlan, value)
        if isinstance(plan, ParcelPlan) and plan.event_id not in progress.plans:
            progress.plans[plan.event_id] = plan
            if plan.status == "held":
                progress.held.add(plan.order_id)
            elif plan.status == "rejected" and plan.order_id in progress.cancelled:
                progress.cancelled[plan.order_id] -= 1
