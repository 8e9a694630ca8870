"""The receiver's answers to each caller: roles, warehouses and the label fetch.

A real receiver on the test broker, a folder label store filled as the labeler fills it
(claims, label records, documents), and one principal per kind of caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from schemas.box import BoxClosed
from schemas.codec import encode
from schemas.order import Order
from schemas.topics import BOXES, ORDERS
from tests.integration.kafka_helpers import consume, models, open_recipient
from tests.unit.factories import BUYER, box, label_result, posted
from workers.labels import claims
from workers.labels.store import FolderStore, manifest_name, put_document
from workers.receiver.app import create_app
from workers.settings import Settings

TOKENS = {
    "oms": "oms-token-0123456789",
    "station-a": "station-a-token-0123",
    "station-b": "station-b-token-0123",
    "floor": "floor-token-012345678",  # a station of both warehouses
    "ops": "ops-token-0123456789",
    "oms-a": "oms-a-token-012345678",  # an upstream system of warehouse A only
    "oms-ab": "oms-ab-token-01234567",  # of warehouses A and B
}
PRINCIPALS = {
    "oms": {"token": TOKENS["oms"], "roles": ["orders"]},
    "station-a": {"token": TOKENS["station-a"], "roles": ["boxes", "labels"], "warehouses": ["A"]},
    "station-b": {"token": TOKENS["station-b"], "roles": ["boxes", "labels"], "warehouses": ["B"]},
    "floor": {"token": TOKENS["floor"], "roles": ["boxes", "labels"], "warehouses": ["A", "B"]},
    "ops": {"token": TOKENS["ops"], "roles": ["operator"]},
    "oms-a": {"token": TOKENS["oms-a"], "roles": ["orders"], "warehouses": ["A"]},
    "oms-ab": {"token": TOKENS["oms-ab"], "roles": ["orders"], "warehouses": ["A", "B"]},
}
DAY_MS = 86_400_000


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


async def label_as_the_labeler_does(store: FolderStore, order: str, box_id: str, wh: str) -> bool:
    """Claim the box, and when it is ours store the label: what the labeler does."""
    wanted = claims.Claim(
        warehouse_id=wh, box_id=box_id, order_id=order, job_id=f"job-{order}", claimed_at_ms=1
    )
    if await claims.claim(store, wanted, DAY_MS) is not None:
        return False
    await put_document(store, f"job-{order}", box_id, "pdf", f"%PDF label of {order}".encode())
    await store.put(manifest_name(f"job-{order}"), encode(label_result(order, box_id, wh)), "")
    return True


@pytest.fixture
async def receiver(
    make_settings: Callable[..., Settings], serve: Any, tmp_path: Path
) -> tuple[str, Settings, FolderStore]:
    settings = make_settings(principals=PRINCIPALS, receiver_request_timeout_s=1.0)
    store = FolderStore(settings.label_dir)
    return await serve(create_app(settings)), settings, store


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as r:
        body = await r.read()
        kind = r.headers.get("Content-Type", "")
        return r.status, orjson.loads(body) if "json" in kind else body


async def test_each_route_answers_by_role_and_warehouse(
    receiver: tuple[str, Settings, FolderStore],
) -> None:
    url, settings, _ = receiver
    order = {
        "event_id": "o-1",
        "order_id": "O-1",
        "shop_id": "S",
        "status": "AWAITING_SHIPMENT",
        "update_time": 1,
        "warehouse_id": "A",
    }
    assert (await call("POST", f"{url}/v1/orders", json=order))[0] == 401
    status, body = await call("POST", f"{url}/v1/orders", json=order, headers=auth("station-a"))
    assert (status, body["error"]) == (403, "forbidden")
    assert "does not have the role orders" in body["detail"]
    assert (await call("POST", f"{url}/v1/orders", json=order, headers=auth("oms")))[0] == 202

    plain = orjson.loads(encode(box("BX-1", {"A": 1}, order_id="O-1")))
    assert (await call("POST", f"{url}/v1/boxes", json=plain, headers=auth("oms")))[0] == 403
    foreign = plain | {"warehouse_id": "B"}
    status, body = await call("POST", f"{url}/v1/boxes", json=foreign, headers=auth("station-a"))
    assert status == 403
    assert body["fields"] == [
        {
            "field": "warehouse_id",
            "problem": "principal station-a may not post boxes of this warehouse",
        }
    ]
    status, body = await call("POST", f"{url}/v1/boxes", json=plain, headers=auth("floor"))
    assert (status, body["fields"][0]["field"]) == (400, "warehouse_id")
    assert (await call("POST", f"{url}/v1/boxes", json=plain, headers=auth("station-a")))[0] == 202
    stored = models(BoxClosed, await consume(settings, BOXES, lambda v: len(v) >= 1))
    assert [(b.box_id, b.warehouse_id) for b in stored] == [("BX-1", "A")]  # filled in

    status, body = await call("POST", f"{url}/v1/labels/job-1/void", headers=auth("station-a"))
    assert status == 403
    status, body = await call("POST", f"{url}/v1/labels/job-1/void", headers=auth("ops"))
    assert (status, body["error"]) == (409, "void_not_supported")


@pytest.mark.parametrize(
    "value",
    [
        "\u202eevil",  # a bidi override
        "box\x1b[2J",  # an escape sequence
        "\u200b\u200b",  # only invisible characters
        "a\x00b",
    ],
)
async def test_an_id_that_is_not_printable_text_is_400_naming_the_field(
    receiver: tuple[str, Settings, FolderStore], value: str
) -> None:
    url, _, _ = receiver
    body = orjson.loads(encode(box("BX-1", {"A": 1}))) | {"box_id": value}
    status, answer = await call("POST", f"{url}/v1/boxes", json=body, headers=auth("station-a"))
    assert status == 400
    assert answer["fields"][0]["field"] == "box_id"
    assert "printable text" in answer["fields"][0]["problem"]


async def raw_request(url: str, head: bytes, body_chunks: list[bytes], pause_s: float) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def drip() -> None:
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause_s)

    writer.write(head)
    dripping = asyncio.create_task(drip())
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.close()


@pytest.mark.parametrize(
    "request_line", [b"GET /v1/labels/job-1", b"POST /v1/boxes", b"POST /webhooks/tiktok"]
)
@pytest.mark.parametrize("value", [b"Bearer \xc3\xa9\xe2\x80\xae-token", b"Bearer \xff\xfe"])
async def test_a_non_ascii_authorization_header_is_401_not_an_error(
    receiver: tuple[str, Settings, FolderStore], request_line: bytes, value: bytes
) -> None:
    url, _, _ = receiver
    head = (
        request_line + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Authorization: " + value + b"\r\nConnection: close\r\n\r\n{}"
    )
    answer = await raw_request(url, head, [], 0)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


async def test_a_body_dripped_byte_by_byte_is_cut_off_at_the_request_deadline(
    receiver: tuple[str, Settings, FolderStore],
) -> None:
    url, _, _ = receiver
    body = b'{"event_id": "slow"}' * 3
    head = (
        b"POST /v1/boxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKENS['station-a']}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    started = asyncio.get_running_loop().time()
    answer = await raw_request(url, head, [body[i : i + 1] for i in range(len(body))], 0.2)
    took = asyncio.get_running_loop().time() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert took < 5, f"the connection was held {took:.1f} s"


async def test_a_station_gets_its_own_box_label_and_nothing_of_another_warehouse(
    receiver: tuple[str, Settings, FolderStore],
) -> None:
    url, _, store = receiver
    assert await label_as_the_labeler_does(store, "O-A", "BOX-7", "A")
    assert await label_as_the_labeler_does(store, "O-B", "BOX-7", "B")  # same id, other floor
    box_url = f"{url}/v1/boxes/BOX-7/label"
    status, pdf = await call("GET", box_url, headers=auth("station-a"))
    assert (status, pdf) == (200, b"%PDF label of O-A")
    status, pdf = await call("GET", box_url, headers=auth("station-b"))
    assert (status, pdf) == (200, b"%PDF label of O-B")
    # another warehouse's label is not found, whichever way it is asked for
    assert (await call("GET", f"{box_url}?warehouse=B", headers=auth("station-a")))[0] == 404
    assert (await call("GET", f"{url}/v1/labels/job-O-B", headers=auth("station-a")))[0] == 404
    status, _ = await call("GET", f"{url}/v1/labels/job-O-B/BOX-7", headers=auth("station-a"))
    assert status == 404
    assert (await call("GET", f"{url}/v1/labels/no-such-job", headers=auth("station-a")))[0] == 404
    status, record = await call("GET", f"{url}/v1/labels/job-O-A", headers=auth("station-a"))
    assert status == 200 and record["parcels"][0]["warehouse_id"] == "A"
    # a station of two warehouses names the one it asks about
    status, body = await call("GET", box_url, headers=auth("floor"))
    assert (status, body["fields"][0]["field"]) == (400, "warehouse")
    status, pdf = await call("GET", f"{box_url}?warehouse=B", headers=auth("floor"))
    assert (status, pdf) == (200, b"%PDF label of O-B")
    # no credentials, a wrong one, a principal without the labels role
    assert (await call("GET", box_url))[0] == 401
    assert (await call("GET", box_url, headers={"Authorization": "Bearer guess"}))[0] == 401
    assert (await call("GET", box_url, headers=auth("oms")))[0] == 403


async def test_a_box_id_two_orders_used_is_409_naming_both_until_the_order_is_named(
    receiver: tuple[str, Settings, FolderStore],
) -> None:
    url, _, store = receiver
    assert await label_as_the_labeler_does(store, "O-1", "SHARED-BOX-1", "A")
    assert not await label_as_the_labeler_does(store, "O-2", "SHARED-BOX-1", "A")  # refused
    box_url = f"{url}/v1/boxes/SHARED-BOX-1/label"
    status, body = await call("GET", box_url, headers=auth("station-a"))
    assert (status, body["error"], body["orders"]) == (409, "box_id_ambiguous", ["O-1", "O-2"])
    status, pdf = await call("GET", f"{box_url}?order_id=O-1", headers=auth("station-a"))
    assert (status, pdf) == (200, b"%PDF label of O-1")
    status, body = await call("GET", f"{box_url}?order_id=O-2", headers=auth("station-a"))
    assert status == 409 and body["orders"] == ["O-1", "O-2"]
    # the other warehouse's station learns nothing of it
    assert (await call("GET", f"{box_url}?warehouse=A", headers=auth("station-b")))[0] == 404


async def test_orders_keep_to_the_principals_warehouses_and_come_from_upstream(
    receiver: tuple[str, Settings, FolderStore],
) -> None:
    """An upstream system posts orders of its warehouses only, and can never pass one off
    as TikTok's: the receiver sets the source."""
    url, settings, _ = receiver
    spoof = posted("T1")
    body = {**spoof, "source": "tiktok", "warehouse_id": "B"}
    status, answer = await call("POST", f"{url}/v1/orders", json=body, headers=auth("oms-a"))
    assert (status, answer["error"]) == (403, "forbidden")
    assert answer["fields"][0]["field"] == "warehouse_id"
    no_warehouse = {**spoof, "warehouse_id": ""}
    status, answer = await call(
        "POST", f"{url}/v1/orders", json=no_warehouse, headers=auth("oms-ab")
    )
    assert status == 400 and answer["fields"][0]["field"] == "warehouse_id"
    status, _ = await call("POST", f"{url}/v1/orders", json=no_warehouse, headers=auth("oms-a"))
    assert status == 202
    status, _ = await call("POST", f"{url}/v1/orders", json=body, headers=auth("oms"))  # every
    assert status == 202
    stored = models(Order, await consume(settings, ORDERS, lambda v: len(v) >= 2))
    assert [(o.warehouse_id, o.source) for o in stored] == [("A", "upstream"), ("B", "upstream")]
    # stored sealed: the buyer's street is nowhere in the record, and it opens for its order
    assert all(BUYER.street1.encode() not in encode(o) for o in stored)
    assert await open_recipient(settings, "T1", stored[0].recipient) == BUYER
