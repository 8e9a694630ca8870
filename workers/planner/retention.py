"""What the planner's state keeps of an order once its label job exists, and for how long.

- ``PARCELFLOW_PLANNER_FORGET_RECIPIENT_S`` (10 minutes) after an order's job was made,
  its state keeps no recipient (not even sealed): by then the job is on ``label-jobs.v1``
  (its batch was acknowledged, or the planner failed and joined it again), and a
  republished job of the order carries none (the labeler labels a job id once).
- ``PARCELFLOW_PLANNER_STATE_RETENTION_S`` (14 days, the input topics' retention) after
  it, the order's state is tombstoned in the table and its changelog.
- An erasure (``buyer.erasures.v1``) tombstones the state of the order, or of every order
  of the shop, at once; later events of an erased order or shop are not joined.

``Finished`` indexes the finished states of this worker (key -> when the job was made,
whether a recipient is still kept) so that the clock reads a few states, not the table;
it is kept by every batch that writes a state and rebuilt after each recovery.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter

from schemas.buyer import Erasure
from schemas.codec import decode
from schemas.topics import ERASURES
from workers.buyer.registry import Erasures
from workers.kafka import Topics, groupless_consumer, start_on_all
from workers.planner.join import OrderState
from workers.settings import PlannerSettings

log = structlog.get_logger(__name__)

FORGOTTEN = Counter(
    "parcelflow_planner_recipients_forgotten",
    "Finished orders whose state no longer keeps the (sealed) recipient.",
)
TOMBSTONED = Counter(
    "parcelflow_planner_states_tombstoned",
    "Order states tombstoned, by why: retention, erasure.",
    ["why"],
)
SHOP = re.compile(rb'"shop_id":"((?:[^"\\]|\\.)*)"')


class Table(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def stored(self) -> list[tuple[bytes, bytes]]: ...

    def partition_of(self, key: bytes) -> int | None: ...


@dataclass
class Finished:
    """Finished states of this worker: key -> (job made at ms, keeps a recipient)."""

    done: dict[bytes, tuple[int, bool]] = field(default_factory=dict)

    def note(self, key: bytes, state: OrderState) -> None:
        job = state.job or state.cancel_job
        if job is None:
            self.done.pop(key, None)
            return
        keeps = bool((state.order and state.order.recipient) or (state.job and state.job.recipient))
        self.done[key] = (job.created_at_ms, keeps)

    def rebuild(self, table: Table) -> None:
        self.done.clear()
        for key, value in table.stored():
            if value and (b'"job":{' in value or b'"cancel_job":{' in value):
                self.note(key, OrderState.model_validate_json(value))

    def due(
        self, now_ms: int, forget_after_ms: int, keep_ms: int
    ) -> tuple[list[bytes], list[bytes]]:
        """(keys whose recipient goes now, keys whose state goes now)."""
        forget, drop = [], []
        for key, (made_ms, keeps) in self.done.items():
            if now_ms - made_ms >= keep_ms:
                drop.append(key)
            elif keeps and now_ms - made_ms >= forget_after_ms:
                forget.append(key)
        return forget, drop


def without_recipient(state: OrderState) -> OrderState:
    update: dict[str, Any] = {}
    if state.order is not None and state.order.recipient is not None:
        update["order"] = state.order.model_copy(update={"recipient": None})
    if state.job is not None and state.job.recipient is not None:
        update["job"] = state.job.model_copy(update={"recipient": None})
    return state.model_copy(update=update)


@dataclass
class Erased(Erasures):
    """The erasures this worker knows of (read whole at start, then followed), and which
    of those in effect it has applied to its table (all again after a recovery)."""

    applied: set[str] = field(default_factory=set)  # request ids

    def unapplied(self, now_ms: int) -> list[Erasure]:
        """The requests in effect by now that the table has not had yet; noted as had."""
        new = [r for r in self.due(now_ms) if r.request_id not in self.applied]
        self.applied.update(r.request_id for r in new)
        return new

    def matching(self, table: Table, erasures: list[Erasure]) -> list[bytes]:
        """The keys of ``table`` these erasures name (a shop's: read from each state)."""
        keys = [e.order_id.encode() for e in erasures if e.scope == "order"]
        keys = [k for k in keys if table.get(k) is not None]
        shops = {e.shop_id for e in erasures if e.scope == "shop"}
        if shops:
            for key, value in table.stored():
                found = SHOP.search(value or b"")
                if found and found.group(1).decode(errors="replace") in shops:
                    keys.append(key)
        return keys


async def follow_erasures(settings: PlannerSettings, erased: Erased, stop: asyncio.Event) -> None:
    """Read ``buyer.erasures.v1`` into ``erased`` until ``stop``."""
    # a quiet topic, read beside the join on the same brokers: few fetch requests
    consumer: AIOKafkaConsumer = groupless_consumer(settings, idle_wait_ms=5000)
    try:
        tps = await start_on_all(consumer, Topics(settings)(ERASURES))
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            for messages in (await consumer.getmany(timeout_ms=5000)).values():
                for message in messages:
                    erasure = decode(Erasure, message.value)
                    if isinstance(erasure, Erasure):
                        erased.take(erasure)
    finally:
        await consumer.stop()
