"""``GET /v1/labels/events`` on a real broker: a station sees its warehouses' labels (and,
when it asks, its own boxes), resumes after a drop without losing or repeating a label,
gets heartbeats, and a principal's streams are capped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from schemas.label import LabelResult
from schemas.topics import LABELS
from tests.integration.kafka_helpers import produce, provisioned
from tests.unit.factories import label_result
from workers.receiver.app import create_app
from workers.settings import Settings

TOKENS = {"station-a": "station-a-token-0123", "floor": "floor-token-012345678"}
PRINCIPALS = {
    "station-a": {"token": TOKENS["station-a"], "roles": ["labels"], "warehouses": ["A"]},
    "floor": {"token": TOKENS["floor"], "roles": ["labels"], "warehouses": ["A", "B"]},
}


def label(order_id: str, warehouse: str, station: str) -> LabelResult:
    made = label_result(order_id, f"{order_id}-B1", warehouse)
    parcel = made.parcels[0].model_copy(update={"station_id": station})
    return made.model_copy(update={"parcels": [parcel]})


async def events(
    url: str, who: str, headers: dict[str, str] | None = None, query: str = ""
) -> AsyncIterator[tuple[str, str, Any]]:
    """(event, id, data) of a stream, and ("ping", "", None) for each heartbeat."""
    auth = {"Authorization": f"Bearer {TOKENS[who]}"} | (headers or {})
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/labels/events{query}", headers=auth) as answer,
    ):
        assert answer.status == 200, await answer.text()
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        kind, ident, data = "message", "", ""
        async for raw in answer.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                yield "ping", "", None
            elif line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("id:"):
                ident = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data += line.partition(":")[2].strip()
            elif line == "" and data:
                yield kind, ident, orjson.loads(data)
                kind, ident, data = "message", "", ""


async def take(
    stream: AsyncIterator[tuple[str, str, Any]], count: int
) -> list[tuple[str, str, Any]]:
    got = []
    async with asyncio.timeout(30):
        async for item in stream:
            if item[0] != "ping":
                got.append(item)
                if len(got) == count:
                    return got
    return got


@pytest.fixture
async def receiver(make_settings: Callable[..., Settings], serve: Any) -> tuple[str, Settings]:
    settings = make_settings(
        principals=PRINCIPALS, label_events_per_principal=2, label_events_ping_s=0.3
    )
    await provisioned(settings)
    return await serve(create_app(settings)), settings


async def test_a_station_gets_its_labels_and_resumes_without_loss_or_repeat(
    receiver: tuple[str, Settings],
) -> None:
    url, settings = receiver
    stream = events(url, "station-a")
    [(kind, start, data)] = await take(stream, 1)
    assert kind == "ready" and data == {"position": start}
    for order_id, warehouse in (("L1", "A"), ("L2", "B"), ("L3", "A")):
        await produce(settings, LABELS, order_id, label(order_id, warehouse, "PACK-1"))
    first = await take(stream, 2)
    await stream.aclose()  # the station drops after two labels of its warehouse
    # its warehouse's only (orders of several partitions: in any order between them)
    assert {(k, d["order_id"]) for k, _, d in first} == {("label", "L1"), ("label", "L3")}
    [l1] = [d for _, _, d in first if d["order_id"] == "L1"]
    assert l1["parcels"] == [
        {
            "box_id": "L1-B1",
            "warehouse_id": "A",
            "station_id": "PACK-1",
            "tracking_id": "T-L1",
            "formats": ["pdf"],
            "document": "/v1/labels/job-L1/L1-B1",
        }
    ]
    # labels made while it was away; it comes back with the last id it saw
    for order_id in ("L4", "L5"):
        await produce(settings, LABELS, order_id, label(order_id, "A", "PACK-2"))
    again = events(url, "station-a", {"Last-Event-ID": first[-1][1]})
    resumed = await take(again, 3)
    await again.aclose()
    assert [k for k, _, _ in resumed] == ["ready", "label", "label"]
    assert sorted(d["order_id"] for _, _, d in resumed[1:]) == ["L4", "L5"]  # none lost or again

    # one station's boxes only, from the oldest label kept; heartbeats while idle
    mine = events(url, "floor", query="?station=PACK-2&from=start")
    got = await take(mine, 3)
    assert sorted(d["order_id"] for _, _, d in got[1:]) == ["L4", "L5"]
    async with asyncio.timeout(5):
        assert (await anext(mine))[0] == "ping"
    await mine.aclose()


async def test_streams_are_capped_per_principal(receiver: tuple[str, Settings]) -> None:
    url, _ = receiver
    held = [events(url, "floor") for _ in range(2)]
    for stream in held:
        await take(stream, 1)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{url}/v1/labels/events", headers={"Authorization": f"Bearer {TOKENS['floor']}"}
        ) as answer,
    ):
        assert answer.status == 429 and answer.headers["Retry-After"] == "10"
    for stream in held:
        await stream.aclose()
    async with aiohttp.ClientSession() as http:
        no_role = await http.get(f"{url}/v1/labels/events")
        assert no_role.status == 401
