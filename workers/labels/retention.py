"""Label retention: what the label store holds is deleted ``PARCELFLOW_LABEL_RETENTION_DAYS``
after it was written, by parcelflow itself, in both stores (labels carry the buyer's
address). Every labeler replica sweeps every ``PARCELFLOW_LABEL_SWEEP_EVERY_S``: a delete
is idempotent, so replicas need no coordination. An S3 lifecycle rule with the same age
(docs/security.md) is a second net, not the mechanism."""

from __future__ import annotations

import asyncio
import random
import time

import structlog
from prometheus_client import Counter

from workers.labels.store import LabelStore
from workers.settings import LabelStoreSettings

log = structlog.get_logger(__name__)

SWEPT = Counter(
    "parcelflow_labels_retention_deleted",
    "Label documents, records and claims deleted past PARCELFLOW_LABEL_RETENTION_DAYS.",
)


async def sweep(store: LabelStore, retention_days: float, now_s: float | None = None) -> int:
    """Delete what was written more than ``retention_days`` ago; how many were deleted."""
    cutoff = (time.time() if now_s is None else now_s) - retention_days * 86_400
    deleted = 0
    async for name in store.older_than(cutoff):
        deleted += await store.delete(name)
    SWEPT.inc(deleted)
    if deleted:
        log.info("labels_past_retention_deleted", deleted=deleted, days=retention_days)
    return deleted


async def keep_sweeping(
    settings: LabelStoreSettings, store: LabelStore, stop: asyncio.Event
) -> None:
    """Sweep every ``label_sweep_every_s`` (jittered; the first a random part of it after
    the start, so that replicas started together do not sweep together) until ``stop``."""
    every = settings.label_sweep_every_s
    wait_s = every * random.uniform(0.1, 1.0)  # noqa: S311 (spreading, not security)
    while not await stopped(stop, wait_s):
        try:
            await sweep(store, settings.label_retention_days)
        except Exception as exc:  # noqa: BLE001 (a store away: the next sweep tries again)
            log.warning("labels_sweep_failed", error=type(exc).__name__)
        wait_s = every * random.uniform(0.9, 1.1)  # noqa: S311


async def stopped(stop: asyncio.Event, within_s: float) -> bool:
    """Wait up to ``within_s``; whether ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), within_s)
    except TimeoutError:
        return False
    return True
