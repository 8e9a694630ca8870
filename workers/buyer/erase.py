"""Erasure of buyer data: an order's or a shop's, on request (GDPR art. 17, the CCPA).

An operator asks (``parcelflow erase``, or ``POST /v1/erasures`` on the receiver): an
``Erasure`` record with status ``requested`` on ``buyer.erasures.v1`` (who, what, when).
From that moment the labeler ends the target's label jobs as ``erased`` without calling a
provider, and the planner tombstones the target's join state. One labeler replica (a
consumer group of their own) then does the erasure, in this order:

1. a shop's data keys are destroyed: a tombstone for each on ``buyer.keys.v1``
   (crypto-shredding: every copy of its recipients, in every topic, dead letter and
   backup, no longer opens; the labeler drops the keys as it reads the tombstones);
2. the label documents are deleted from the label store, and each label's record is
   replaced by an ``ErasedLabel``: a fetch answers 410;
3. a record with status ``done`` (what was destroyed, when) follows the request.

Running it again is harmless: what was gone stays gone and a new record says so. Only the
labeler reads the data keys and the labels and deletes documents; the receiver and the
CLI only ask.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Literal

import structlog
from aiokafka import AIOKafkaProducer

from schemas.buyer import DataKey, Erasure
from schemas.codec import decode, encode
from schemas.common import derived_id, now_ms
from schemas.label import ErasedLabel, LabelJob, LabelResult
from schemas.topics import BUYER_KEYS, ERASURES, LABEL_JOBS, LABELS
from workers.kafka import Topics, make_consumer, read_to_end, started
from workers.labels.retention import stopped
from workers.labels.store import FORMATS, LabelStore, document_name, manifest_name
from workers.settings import KafkaSettings

log = structlog.get_logger(__name__)

Scope = Literal["order", "shop"]


@dataclass(frozen=True)
class Target:
    scope: Scope
    ident: str  # the order id or the shop id

    def owns(self, order_id: str, shop_id: str) -> bool:
        return (order_id if self.scope == "order" else shop_id) == self.ident


async def destroy_keys(settings: KafkaSettings, shop_id: str) -> list[bytes]:
    """The record keys of the shop's live data keys on ``buyer.keys.v1``."""
    live: dict[bytes, bool] = {}
    for record in await read_to_end(settings, Topics(settings)(BUYER_KEYS)):
        if record.key is None:
            continue
        if record.value is None:
            live.pop(record.key, None)
            continue
        key = decode(DataKey, record.value)
        if isinstance(key, DataKey) and key.shop_id == shop_id:
            live[record.key] = True
    return list(live)


async def labels_of(settings: KafkaSettings, target: Target) -> list[LabelResult]:
    """The labels on ``labels.v1`` of the target's orders (a label's shop is on it, or on
    its job for labels made before labels carried it)."""
    names = Topics(settings)
    shops: dict[str, str] = {}  # order id -> shop id
    if target.scope == "shop":
        for record in await read_to_end(settings, names(LABEL_JOBS)):
            job = decode(LabelJob, record.value)
            if isinstance(job, LabelJob):
                shops[job.order_id] = job.shop_id
    found: dict[str, LabelResult] = {}
    for record in await read_to_end(settings, names(LABELS)):
        label = decode(LabelResult, record.value)
        if isinstance(label, LabelResult):
            shop = label.shop_id or shops.get(label.order_id, "")
            if target.owns(label.order_id, shop):
                found[label.job_id] = label
    return list(found.values())


async def delete_label(store: LabelStore, label: LabelResult, at_ms: int) -> int:
    """Delete a label's documents and leave an ``ErasedLabel`` in its record's place."""
    deleted = 0
    for parcel in label.parcels:
        for fmt in sorted(FORMATS):
            deleted += await store.delete(document_name(label.job_id, parcel.box_id, fmt))
    marker = ErasedLabel(
        job_id=label.job_id,
        order_id=label.order_id,
        warehouse_ids=sorted({p.warehouse_id for p in label.parcels}),
        erased_at_ms=at_ms,
    )
    await store.put(manifest_name(label.job_id), encode(marker), "application/json")
    return deleted


def requested(target: Target, principal: str, reason: str) -> Erasure:
    """A request to erase ``target``, by ``principal``."""
    at = now_ms()
    event_id = derived_id("erasure", target.scope, target.ident, str(at))
    return Erasure(
        event_id=event_id,
        status="requested",
        request_id=event_id,
        scope=target.scope,
        shop_id=target.ident if target.scope == "shop" else "",
        order_id=target.ident if target.scope == "order" else "",
        principal=principal[:64],
        reason=reason[:512],
        at_ms=at,
    )


def target_of(erasure: Erasure) -> Target:
    if erasure.scope == "shop":
        return Target("shop", erasure.shop_id)
    return Target("order", erasure.order_id)


async def ask(producer: AIOKafkaProducer, settings: KafkaSettings, erasure: Erasure) -> None:
    """Write a request, or its cancellation (acknowledged)."""
    key = target_of(erasure).ident.encode()
    await producer.send_and_wait(Topics(settings)(ERASURES), encode(erasure), key=key)
    logged(erasure)


def logged(erasure: Erasure) -> None:
    """The log line of a request or cancellation written: who, what (the access log)."""
    log.warning(
        f"buyer_data_erasure_{erasure.status}",
        scope=erasure.scope,
        target=target_of(erasure).ident,
        principal=erasure.principal,
        request_id=erasure.request_id,
        not_before_ms=erasure.not_before_ms,
    )


async def erase(
    settings: KafkaSettings, store: LabelStore, producer: AIOKafkaProducer, request: Erasure
) -> Erasure:
    """Do what a request asks (see the module's text); the record that it was done."""
    target = target_of(request)
    names = Topics(settings)
    destroyed = []
    if target.scope == "shop":
        destroyed = await destroy_keys(settings, target.ident)
        for key in destroyed:
            await producer.send_and_wait(names(BUYER_KEYS), None, key=key)
    at = now_ms()
    labels = await labels_of(settings, target)
    documents = 0
    for label in labels:
        documents += await delete_label(store, label, at)
    done = request.model_copy(
        update={
            "event_id": derived_id("erased", request.request_id),
            "status": "done",
            "keys_destroyed": len(destroyed),
            "labels_deleted": len(labels),
            "at_ms": now_ms(),
        }
    )
    await producer.send_and_wait(names(ERASURES), encode(done), key=target.ident.encode())
    log.warning(
        "buyer_data_erased",
        scope=target.scope,
        target=target.ident,
        principal=request.principal,
        request_id=request.request_id,
        keys_destroyed=len(destroyed),
        labels_deleted=len(labels),
        documents_deleted=documents,
    )
    return done


async def outstanding(settings: KafkaSettings, now_ms: int) -> list[Erasure]:
    """Deferred requests in effect by now, neither done nor cancelled."""
    requests: dict[str, Erasure] = {}
    ended: set[str] = set()
    for record in await read_to_end(settings, Topics(settings)(ERASURES)):
        erasure = decode(Erasure, record.value)
        if not isinstance(erasure, Erasure):
            continue
        if erasure.status == "requested" and erasure.not_before_ms:
            requests[erasure.request_id] = erasure
        elif erasure.status in ("done", "cancelled"):
            ended.add(erasure.request_id)
    return [r for r in requests.values() if r.request_id not in ended and r.not_before_ms <= now_ms]


async def serve_deferred(
    settings: KafkaSettings,
    store: LabelStore,
    producer: AIOKafkaProducer,
    stop: asyncio.Event,
    every_s: float,
) -> None:
    """Do deferred requests (a de-authorization's, after its grace period) once in effect:
    every replica looks every ``every_s`` (jittered), and reads the topic again just
    before doing one, so that one done by another replica meanwhile is not done twice."""
    wait_s = every_s * random.uniform(0.1, 1.0)  # noqa: S311 (replicas started together)
    while not await stopped(stop, wait_s):
        try:
            for request in await outstanding(settings, now_ms()):
                still = {r.request_id for r in await outstanding(settings, now_ms())}
                if request.request_id in still:
                    await erase(settings, store, producer, request)
        except Exception as exc:  # noqa: BLE001 (the broker or the store away: next round)
            log.warning("deferred_erasures_failed", error=type(exc).__name__)
        wait_s = every_s * random.uniform(0.8, 1.2)  # noqa: S311


async def serve_erasures(
    settings: KafkaSettings, store: LabelStore, producer: AIOKafkaProducer, stop: asyncio.Event
) -> None:
    """Do requested erasures (one consumer group for every labeler replica) until ``stop``.
    A request whose erasure fails is not committed: it is done again after a restart."""
    names = Topics(settings)
    consumer = make_consumer(settings, names.group("parcelflow-labeler-erasures"))
    consumer.subscribe([names(ERASURES)])
    try:
        if not await started(consumer, stop):
            return
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    request = decode(Erasure, message.value)
                    if (
                        isinstance(request, Erasure)
                        and request.status == "requested"
                        and not request.not_before_ms  # deferred ones: serve_deferred
                    ):
                        await erase(settings, store, producer, request)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
