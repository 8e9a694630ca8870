"""Labels in an S3-compatible object store, fetched through the receiver's label API,
by callers who each see only what they may.

The stack starts moto's S3 server (``--label-store s3``) with a bucket of its own; every
process that reads or writes labels uses it through aiobotocore, as it would AWS S3
(box claims with its conditional writes). One stack serves both tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import orjson
import pytest

from devstack.demo import Progress, send, watch
from devstack.demo_data import make_demo
from devstack.stack import Stack

pytestmark = pytest.mark.slow


def get(url: str, token: str) -> tuple[int, str, bytes]:
    return call("GET", url, token)


def call(method: str, url: str, token: str, body: object = None) -> tuple[int, str, bytes]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(  # noqa: S310 (local)
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local)
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


# name -> (token, principal): an upstream system, a station per warehouse, an operator
CALLERS: dict[str, tuple[str, dict[str, object]]] = {
    "oms": ("oms-token-0123456789abc", {"roles": ["orders"]}),
    "station-a1": (
        "station-a1-token-01234",
        {"roles": ["boxes", "labels"], "warehouses": ["WH-A"]},
    ),
    "station-b1": (
        "station-b1-token-01234",
        {"roles": ["boxes", "labels"], "warehouses": ["WH-B"]},
    ),
    "ops": ("ops-token-0123456789abc", {"roles": ["operator"]}),
}
CALLERS = {name: (t, {"token": t, **spec}) for name, (t, spec) in CALLERS.items()}


def token_of(name: str) -> str:
    return CALLERS[name][0]


def upstream_order(order_id: str, warehouse: str, units: int) -> dict[str, object]:
    return {
        "event_id": f"oms-{order_id}",
        "order_id": order_id,
        "shop_id": "7495000000000000000",
        "status": "AWAITING_SHIPMENT",
        "update_time": int(time.time()),
        "warehouse_id": warehouse,
        "recipient": {
            "name": f"Buyer of {order_id}",
            "street1": "1 Main St",
            "city": "Austin",
            "state": "TX",
            "postal_code": "78701",
        },
        "line_items": [
            {"item_id": f"{order_id}-item-{n}", "sku_id": "SKU-MUG", "product_id": "P-MUG"}
            for n in range(units)
        ],
    }


def closed_box(box_id: str, order_id: str, units: int) -> dict[str, object]:
    return {
        "event_id": f"box-{order_id}-{box_id}",
        "box_id": box_id,
        "order_id": order_id,
        "station_id": "PACK-01",
        "items": [{"sku": "SKU-MUG", "quantity": units}],
        "weight": {"value": 1.5},
        "dimensions": {"length": 10, "width": 8, "height": 4},
        "last_box": True,
        "closed_at_ms": int(time.time() * 1000),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = {"SIM_LABEL_LATENCY_MEDIAN_S": "0.2", "LABEL_FORMATS": '["pdf", "zpl"]'}
    callers = {name: spec for name, (_, spec) in CALLERS.items()}
    running = Stack(
        tmp_path_factory.mktemp("stack"), overrides, principals=callers, label_store="s3"
    )
    with running.running(say=False):
        yield running


def test_labels_go_to_the_object_store_and_a_station_fetches_its_box(stack: Stack) -> None:
    orders = make_demo(12, seed=31, run_id=433, now_s=int(time.time()))
    env, token = stack.env, stack.token
    asyncio.run(send(orders, stack.settings, stack.receiver_url, stack.simulator_url, token))
    progress = Progress(expected={o.order_id for o in orders})
    asyncio.run(watch(stack.settings, progress, timeout_s=120, out=False))
    s3: Any = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=env["PARCELFLOW_LABEL_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    fetched = {}
    for label in progress.labels.values():
        for parcel in label.parcels:
            assert [d.format for d in parcel.documents] == ["pdf", "zpl"]
            for document in parcel.documents:
                bucket, _, key = document.uri.removeprefix("s3://").partition("/")
                obj = s3.get_object(Bucket=bucket, Key=key)
                body = obj["Body"].read()
                assert hashlib.sha256(body).hexdigest() == document.sha256
                assert len(body) == document.size
                assert obj["ContentType"] in {"application/pdf", "application/x-zpl"}
                assert obj.get("ServerSideEncryption") == "AES256"  # labels carry addresses
                fetched[(label.job_id, parcel.box_id, document.format)] = body
    label = next(iter(progress.labels.values()))
    box = label.parcels[0].box_id
    base = stack.receiver_url
    where = f"warehouse={label.parcels[0].warehouse_id}"
    status, kind, body = get(f"{base}/v1/boxes/{box}/label?format=zpl&{where}", token)
    assert (status, kind) == (200, "application/x-zpl")
    assert body == fetched[(label.job_id, box, "zpl")] and body.startswith(b"^XA")
    status, kind, body = get(f"{base}/v1/labels/{label.job_id}/{box}", token)
    assert (status, kind, body) == (200, "application/pdf", fetched[(label.job_id, box, "pdf")])
    status, _, body = get(f"{base}/v1/labels/{label.job_id}", token)
    record = orjson.loads(body)
    assert status == 200 and record["order_id"] == label.order_id
    assert [p["tracking_id"] for p in record["parcels"]] == [p.tracking_id for p in label.parcels]
    assert get(f"{base}/v1/boxes/{box}/label", "wrong")[0] == 401
    assert get(f"{base}/v1/boxes/no-such-box/label?{where}", token)[0] == 404
    assert get(f"{base}/v1/boxes/{box}/label", token)[0] == 400  # which warehouse?
    assert get(f"{base}/v1/labels/{label.job_id}/{box}?format=gif", token)[0] == 400
    assert progress.pending == 0 and len(fetched) == 2 * sum(len(o.boxes) for o in orders)


def test_two_warehouses_each_station_gets_only_its_own_box_label(
    stack: Stack, tmp_path: Path
) -> None:
    """An upstream system, a station per warehouse and an operator; one box id used by two
    orders in warehouse A and by a third order in warehouse B."""
    base = stack.receiver_url
    post = lambda who, path, body: call("POST", f"{base}{path}", token_of(who), body)  # noqa: E731
    for order_id, warehouse in (("T-A1", "WH-A"), ("T-A2", "WH-A"), ("T-B1", "WH-B")):
        assert post("oms", "/v1/orders", upstream_order(order_id, warehouse, 2))[0] == 202
    # a station posts only to its warehouse (403), the upstream system posts no boxes
    foreign = closed_box("SHARED-BOX-1", "T-A1", 2) | {"warehouse_id": "WH-A"}
    status, _, body = post("station-b1", "/v1/boxes", foreign)
    assert status == 403 and b"may not post boxes of this warehouse" in body
    assert post("oms", "/v1/boxes", closed_box("X", "T-A1", 2))[0] == 403
    # each station closes SHARED-BOX-1 for an order of its warehouse: both get labels
    assert post("station-a1", "/v1/boxes", closed_box("SHARED-BOX-1", "T-A1", 2))[0] == 202
    assert post("station-b1", "/v1/boxes", closed_box("SHARED-BOX-1", "T-B1", 2))[0] == 202
    first = Progress(expected={"T-A1", "T-B1"})
    asyncio.run(watch(stack.settings, first, timeout_s=90, out=False))
    assert first.pending == 0 and not first.failures.keys() & {"T-A1", "T-B1"}
    job_a1, job_b1 = first.labels["T-A1"].job_id, first.labels["T-B1"].job_id
    # a second order in WH-A reuses the box id: refused with a reason the operator sees
    assert post("station-a1", "/v1/boxes", closed_box("SHARED-BOX-1", "T-A2", 2))[0] == 202
    second = Progress(expected={"T-A2"})
    asyncio.run(watch(stack.settings, second, timeout_s=90, out=False))
    refused = second.failures["T-A2"]
    assert refused.error_code == "box_id_in_use" and "order T-A1" in refused.message
    # the dashboard reads label-failures.v1 on its own: it shows the refusal within seconds
    deadline = time.monotonic() + 15
    while True:
        board = orjson.loads(urllib.request.urlopen(f"{stack.dashboard_url}api/snapshot").read())  # noqa: S310
        shown = [f for f in board["failures"] if f["order_id"] == "T-A2"]
        if shown or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [f["reason"] for f in shown] == ["box_id_in_use"]
    metrics = urllib.request.urlopen(stack.metrics_urls["labeler"]).read().decode()  # noqa: S310
    assert "parcelflow_labeler_box_id_refused_total 1.0" in metrics

    box_url = f"{base}/v1/boxes/SHARED-BOX-1/label"
    # station A cannot tell which order's box it holds: 409 naming both, then by order
    status, _, body = get(box_url, token_of("station-a1"))
    assert status == 409 and orjson.loads(body)["orders"] == ["T-A1", "T-A2"]
    # the other warehouse's labels are not found, whichever way they are asked for
    assert get(f"{box_url}?warehouse=WH-A", token_of("station-b1"))[0] == 404
    assert get(f"{base}/v1/labels/{job_a1}", token_of("station-b1"))[0] == 404
    assert get(f"{base}/v1/labels/{job_a1}/SHARED-BOX-1", token_of("station-b1"))[0] == 404
    assert get(f"{base}/v1/labels/{job_b1}", token_of("station-b1"))[0] == 200
    assert get(box_url, token_of("oms"))[0] == 403
    assert call("POST", f"{base}/v1/labels/{job_a1}/void", token_of("station-a1"))[0] == 403
    assert call("POST", f"{base}/v1/labels/{job_a1}/void", token_of("ops"))[0] == 409

    # each station prints the PDF of its own box, with parcelflow's own command
    def print_label(who: str, *flags: str) -> bytes:
        out = tmp_path / f"{who}.pdf"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
        env |= {"PARCELFLOW_API_TOKEN": token_of(who), "PARCELFLOW_KAFKA_BOOTSTRAP": "unused:1"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "workers.cli",
                "labels",
                "get",
                "--box",
                "SHARED-BOX-1",
                "--format",
                "pdf",
                "--url",
                base,
                "-o",
                str(out),
                *flags,
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=60,
        )
        return out.read_bytes()

    def stored(job_id: str) -> bytes:
        return get(f"{base}/v1/labels/{job_id}/SHARED-BOX-1", stack.token)[2]

    pdf_a = print_label("station-a1", "--order-id", "T-A1")
    pdf_b = print_label("station-b1")
    assert pdf_a.startswith(b"%PDF") and pdf_b.startswith(b"%PDF") and pdf_a != pdf_b
    assert (pdf_a, pdf_b) == (stored(job_a1), stored(job_b1))
