"""Deferred erasures (a de-authorization's) on a real broker and a folder label store:
done once in effect, never before, never once cancelled; and what an erasure does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from schemas.buyer import Erasure
from schemas.codec import decode
from schemas.common import now_ms
from schemas.label import ErasedLabel
from schemas.topics import BUYER_KEYS, ERASURES, LABELS
from tests.integration.kafka_helpers import consume, models, produce, provisioned
from tests.unit.factories import TEST_KEY_ID, TEST_SHOP, label_result
from workers.buyer.erase import serve_deferred
from workers.kafka import Topics, make_producer, read_to_end
from workers.labels.store import FolderStore, document_name, manifest_name, put_document
from workers.settings import Settings


def request(rid: str, shop: str, not_before_ms: int) -> Erasure:
    return Erasure(
        event_id=rid,
        request_id=rid,
        scope="shop",
        shop_id=shop,
        principal="tiktok:deauthorization",
        at_ms=now_ms(),
        not_before_ms=not_before_ms,
    )


async def test_a_deferred_erasure_is_done_once_in_effect_and_never_when_cancelled(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    await provisioned(settings)  # the factories' data key of TEST_SHOP is on buyer.keys.v1
    store = FolderStore(tmp_path / "labels")
    label = label_result("D1").model_copy(update={"shop_id": TEST_SHOP})
    other = label_result("D2").model_copy(update={"shop_id": "shop-2"})
    for each in (label, other):
        await put_document(store, each.job_id, "BOX-1", "pdf", b"%PDF label")
        await store.put(manifest_name(each.job_id), each.model_dump_json().encode(), "x")
        await produce(settings, LABELS, each.order_id, each)
    past, future = now_ms() - 1_000, now_ms() + 3_600_000
    await produce(settings, ERASURES, TEST_SHOP, request("due", TEST_SHOP, past))
    await produce(settings, ERASURES, "shop-2", request("later", "shop-2", future))
    await produce(settings, ERASURES, "shop-2", request("called-off", "shop-2", past + 1))
    cancelled = request("called-off", "shop-2", past + 1).model_copy(
        update={"event_id": "c", "status": "cancelled"}
    )
    await produce(settings, ERASURES, "shop-2", cancelled)

    stop = asyncio.Event()
    producer = make_producer(settings)
    await producer.start()
    task = asyncio.create_task(serve_deferred(settings, store, producer, stop, every_s=0.2))
    try:
        done = models(
            Erasure,
            await consume(settings, ERASURES, lambda v: any(b'"status":"done"' in x for x in v)),
        )
        await asyncio.sleep(1.0)  # more rounds: nothing more is done
    finally:
        stop.set()
        await task
        await producer.stop()
    finished = [
        e
        for e in models(Erasure, await consume(settings, ERASURES, lambda v: False, 1))
        if e.status == "done"
    ]
    assert [(e.request_id, e.keys_destroyed, e.labels_deleted) for e in finished] == [("due", 1, 1)]
    assert done[-1].principal == "tiktok:deauthorization"
    # the shop's data key is tombstoned; its label gone, with a marker for a 410
    keys = [r for r in await read_to_end(settings, Topics(settings)(BUYER_KEYS))]
    assert keys[-1].key == f"{TEST_SHOP}/{TEST_KEY_ID}".encode() and keys[-1].value is None
    assert await store.get(document_name(label.job_id, "BOX-1", "pdf")) is None
    marker = decode(ErasedLabel, await store.get(manifest_name(label.job_id)))
    assert isinstance(marker, ErasedLabel) and marker.warehouse_ids == ["A"]
    # the other shop, whose erasure is yet to come (or was called off), is untouched
    assert await store.get(document_name(other.job_id, "BOX-1", "pdf")) == b"%PDF label"
