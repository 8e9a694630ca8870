"""Labels in an S3-compatible object store, fetched through the receiver's label API.

The stack starts moto's S3 server (``--label-store s3``) with a bucket of its own; every
process that reads or writes labels uses it through aiobotocore, as it would AWS S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import botocore.session
import orjson
import pytest

from workers.devstack.demo import Progress, send, watch
from workers.devstack.demo_data import make_demo
from workers.devstack.stack import Stack

pytestmark = pytest.mark.slow


def get(url: str, token: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local)
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_labels_go_to_the_object_store_and_a_station_fetches_its_box(tmp_path: Path) -> None:
    orders = make_demo(12, seed=31, run_id=433, now_s=int(time.time()))
    overrides = {"SIM_LABEL_LATENCY_MEDIAN_S": "0.2", "LABEL_FORMATS": '["pdf", "zpl"]'}
    stack = Stack(tmp_path, overrides, label_store="s3")
    with stack.running(say=False):
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
                    fetched[(label.job_id, parcel.box_id, document.format)] = body
        label = next(iter(progress.labels.values()))
        box = label.parcels[0].box_id
        base = stack.receiver_url
        status, kind, body = get(f"{base}/v1/boxes/{box}/label?format=zpl", token)
        assert (status, kind) == (200, "application/x-zpl")
        assert body == fetched[(label.job_id, box, "zpl")] and body.startswith(b"^XA")
        status, kind, body = get(f"{base}/v1/labels/{label.job_id}/{box}", token)
        assert (status, kind, body) == (200, "application/pdf", fetched[(label.job_id, box, "pdf")])
        status, _, body = get(f"{base}/v1/labels/{label.job_id}", token)
        record = orjson.loads(body)
        assert status == 200 and record["order_id"] == label.order_id
        assert [p["tracking_id"] for p in record["parcels"]] == [
            p.tracking_id for p in label.parcels
        ]
        assert get(f"{base}/v1/boxes/{box}/label", "wrong")[0] == 401
        assert get(f"{base}/v1/boxes/no-such-box/label", token)[0] == 404
        assert get(f"{base}/v1/labels/{label.job_id}/{box}?format=gif", token)[0] == 400
    assert progress.pending == 0 and len(fetched) == 2 * sum(len(o.boxes) for o in orders)
