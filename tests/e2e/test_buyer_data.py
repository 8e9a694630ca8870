"""Buyer data as a reviewer checks it: the demo runs, then every record of every topic
(keys and values) and every log and state file of the run is searched for the demo
buyers' names, phones and streets; an order and a shop are erased.

The devstack's key service is its own SoftHSM2 token when Debian's softhsm2 is installed
(``.ci/run`` installs it), a local key otherwise.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
from pydantic import BaseModel

from devstack.demo import Progress, send, watch
from devstack.demo_data import DemoOrder, make_demo
from devstack.stack import Stack
from schemas.buyer import Erasure
from schemas.codec import decode, encode
from schemas.label import LabelFailure, LabelJob
from schemas.topics import (
    ALL_TOPICS,
    BUYER_KEYS,
    ERASURES,
    LABEL_FAILURES,
    LABEL_JOBS,
    TopicSpec,
)
from workers.kafka import Topics, make_producer, read_to_end
from workers.plugins import adapt_kafka_clients
from workers.settings import Settings

pytestmark = pytest.mark.slow
M = TypeVar("M", bound=BaseModel)


def call(method: str, url: str, token: str, body: object = None) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 (local)
        url,
        data=orjson.dumps(body) if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def buyer_data(orders: list[DemoOrder]) -> set[bytes]:
    """What no topic, log or state file may hold in clear: each buyer's name, phone and
    street, as TikTok gives them."""
    found = set()
    for order in orders:
        address = order.tiktok["recipient_address"]
        for field in ("name", "phone_number", "address_line1"):
            if address.get(field):
                found.add(address[field].encode())
    return found


async def every_record(settings: Settings) -> list[bytes]:
    """Each record's key and value, of every topic parcelflow has (and the changelog)."""
    names = Topics(settings)
    topics = [names(spec) for spec in ALL_TOPICS]
    topics.append(f"{settings.topic_namespace}{settings.planner_app_id}-orders-changelog")
    found: list[bytes] = []
    for topic in topics:
        for record in await read_to_end(settings, topic):
            found += [record.key or b"", record.value or b""]
    return found


def run_files(run_dir: Path) -> list[Path]:
    """The run's logs and state files: every file but the label documents (labels carry
    the address by design), the simulator's own log (the vendors' side) and the key
    service's token."""
    skip = {run_dir / "labels", run_dir / "softhsm"}
    return [
        p
        for p in run_dir.rglob("*")
        if p.is_file() and not any(s in p.parents for s in skip) and p.name != "simulator.log"
    ]


def box_label(stack: Stack, order: DemoOrder) -> int:
    box = order.boxes[0]
    warehouse = box.warehouse_id or order.tiktok["warehouse_id"]
    url = f"{stack.receiver_url}/v1/boxes/{box.box_id}/label?warehouse={warehouse}"
    return call("GET", url, stack.token)[0]


async def first(
    settings: Settings,
    spec: TopicSpec,
    model: type[M],
    wanted: Callable[[M], bool],
    timeout_s: float = 60,
) -> M:
    """The first record of ``spec`` that is a ``model`` and ``wanted``, waited for."""
    deadline = time.monotonic() + timeout_s
    while True:
        for record in await read_to_end(settings, Topics(settings)(spec)):
            found = decode(model, record.value)
            if isinstance(found, model) and wanted(found):
                return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no such record on {spec.name} within {timeout_s} s")
        await asyncio.sleep(0.5)


async def erased(settings: Settings, request_id: str) -> Erasure:
    def done(e: Erasure) -> bool:
        return e.status == "done" and e.request_id == request_id

    return await first(settings, ERASURES, Erasure, done)


async def send_job(settings: Settings, job: LabelJob) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = Topics(settings)(LABEL_JOBS)
        await producer.send_and_wait(topic, encode(job), key=job.order_id.encode())
    finally:
        await producer.stop()


async def live_keys(settings: Settings) -> dict[bytes, bytes]:
    live: dict[bytes, bytes] = {}
    for record in await read_to_end(settings, Topics(settings)(BUYER_KEYS)):
        if record.value is None:
            live.pop(record.key or b"", None)
        else:
            live[record.key or b""] = record.value
    return live


def test_no_buyer_data_in_clear_and_erasures_of_an_order_and_a_shop(tmp_path: Path) -> None:
    orders = make_demo(40, seed=21, run_id=707, now_s=int(time.time()), shops=3)
    secret = buyer_data(orders)
    stack = Stack(tmp_path, {"SIM_LABEL_LATENCY_MEDIAN_S": "0.2"})
    with stack.running(say=False):
        settings = stack.settings
        adapt_kafka_clients(settings)
        asyncio.run(send(orders, settings, stack.receiver_url, stack.simulator_url, stack.token))
        progress = Progress.of(orders)
        asyncio.run(watch(settings, progress, timeout_s=120, out=False))
        assert progress.pending == 0
        records = asyncio.run(every_record(settings))
        requests = urllib.request.urlopen(  # noqa: S310 (local simulator)
            f"{stack.simulator_url}/_sim/shipium/requests", timeout=10
        ).read()

        # erase one order, and a shop with no order in common
        order, shop_order = orders[0], next(o for o in orders if o.shop_id != orders[0].shop_id)
        shop = shop_order.shop_id
        kept = next(o for o in orders if o.shop_id not in (shop, order.shop_id))
        assert box_label(stack, order) == 200 and box_label(stack, shop_order) == 200
        # the order by the CLI (it waits for the erasure done), the shop by the route
        erase = subprocess.run(
            [sys.executable, "-m", "workers.cli", "erase", "--order", order.order_id],
            env=stack.env,
            capture_output=True,
            timeout=150,
        )
        assert erase.returncode == 0, erase.stderr
        by_order = Erasure.model_validate_json(erase.stdout)
        status, body = call(
            "POST", f"{stack.receiver_url}/v1/erasures", stack.token, {"shop_id": shop}
        )
        assert status == 202
        by_shop = asyncio.run(erased(settings, orjson.loads(body)["request_id"]))
        keys = asyncio.run(live_keys(settings))
        statuses = [box_label(stack, o) for o in (order, shop_order, kept)]

        # a job of the erased order (sent again, as a replay would): it ends "erased",
        # and no label is bought
        calls_before = len(orjson.loads(requests))
        original = first(settings, LABEL_JOBS, LabelJob, lambda j: j.order_id == order.order_id)
        again = asyncio.run(original).model_copy(
            update={"job_id": "job-after-erasure", "event_id": "job-after-erasure"}
        )
        asyncio.run(send_job(settings, again))
        failure = asyncio.run(
            first(settings, LABEL_FAILURES, LabelFailure, lambda f: f.job_id == again.job_id)
        )
        calls_after = len(
            orjson.loads(
                urllib.request.urlopen(  # noqa: S310 (local)
                    f"{stack.simulator_url}/_sim/shipium/requests", timeout=10
                ).read()
            )
        )
    files = {p: p.read_bytes() for p in run_files(tmp_path)}

    # the labeler opened every recipient for its label call (the check can find them)...
    assert all(s in requests for s in secret)
    # ...and none is anywhere in clear: not in a record, a log or a state file
    leaks = [(s, "a record") for s in secret if any(s in r for r in records)]
    leaks += [(s, str(p)) for s in secret for p, data in files.items() if s in data]
    assert leaks == []
    assert any(p.name == "labeler.log" for p in files) and len(records) > 100

    assert (by_order.scope, by_order.labels_deleted, by_order.keys_destroyed) == ("order", 1, 0)
    assert by_shop.scope == "shop" and by_shop.keys_destroyed >= 1 and by_shop.labels_deleted >= 1
    assert not any(key.startswith(f"{shop}/".encode()) for key in keys)  # shredded
    assert any(key.startswith(f"{kept.shop_id}/".encode()) for key in keys)  # untouched
    assert statuses == [410, 410, 200]
    assert failure.error_code == "erased" and not failure.retriable
    assert calls_after == calls_before  # no provider call for the erased order
