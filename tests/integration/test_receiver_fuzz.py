"""Fuzz the receiver from its own OpenAPI document: nothing a client sends gives a 5xx.

Bodies come from the operations in ``/openapi.json`` (schemathesis strategies, valid and
invalid), from arbitrary JSON and from arbitrary bytes; each is sent signed or not, with a
good, wrong or missing bearer token. Every answer must be a status the document lists for the route,
and below 500 (the broker is up, so not even the documented 503).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.openapi import from_dict

from workers.receiver.app import create_app
from workers.settings import Settings
from workers.tiktok.signing import webhook_signature

POST_ROUTES = ["/webhooks/tiktok", "/v1/orders", "/v1/boxes"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def case_body(body: Any) -> Any:
    return None if body is NOT_SET else body


def fresh(body: Any) -> Any:
    """A generated webhook with a timestamp inside the freshness window."""
    return {**body, "timestamp": int(time.time())} if isinstance(body, dict) else body


def deeply_nested(depth: int) -> bytes:
    """A fresh, otherwise valid envelope whose data nests ``depth`` arrays (parsers take
    up to 1024 levels, re-encoding fails at about 255: once a 500)."""
    head = {"type": 1, "tts_notification_id": f"deep-{depth}", "shop_id": "s"}
    envelope = json.dumps({**head, "timestamp": int(time.time())}).encode()
    return envelope[:-1] + b', "data": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


def bodies(doc: dict[str, Any], path: str) -> st.SearchStrategy[bytes]:
    operation = from_dict(doc)[path]["POST"]
    from_doc = [
        operation.as_strategy(generation_mode=mode).map(lambda case: case_body(case.body))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    if path == "/webhooks/tiktok":
        from_doc.append(from_doc[0].map(fresh))
    deep = st.integers(min_value=1, max_value=900).map(deeply_nested)
    return st.one_of(*from_doc, json_values).map(dumps) | st.binary(max_size=300) | deep


def dumps(value: Any) -> bytes:
    """JSON as any client may send it: integers of any size included (orjson refuses them)."""
    if isinstance(value, bytes):  # schemathesis's invalid bodies may be raw bytes already
        return value
    return json.dumps(value).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


async def test_no_request_gives_a_5xx(make_settings: Callable[..., Settings], serve: Any) -> None:
    config = make_settings(receiver_max_body_bytes=2048)
    url = await serve(create_app(config))
    async with aiohttp.ClientSession() as http, http.get(f"{url}/openapi.json") as answer:
        doc = orjson.loads(await answer.read())
    secret = config.tiktok_app_secret.get_secret_value()
    cases = st.sampled_from(POST_ROUTES).flatmap(
        lambda path: st.tuples(
            st.just(path), bodies(doc, path), st.sampled_from(["good", "wrong", "none"])
        )
    )
    seen: dict[tuple[str, int], int] = {}

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases)
    def check(case: tuple[str, bytes, str]) -> None:
        path, body, auth = case
        headers = {"Content-Type": "application/json"}
        if path == "/webhooks/tiktok" and auth != "none":
            key = config.tiktok_app_key if auth == "good" else "someone-else"
            headers["Authorization"] = webhook_signature(key, secret, body)
        elif auth != "none":
            token = "ingest-test-token" if auth == "good" else "guess"
            headers["Authorization"] = f"Bearer {token}"
        status = post(f"{url}{path}", body, headers)
        seen[(path, status)] = seen.get((path, status), 0) + 1
        assert str(status) in doc["paths"][path]["post"]["responses"], (path, status, body)
        assert status < 500, (path, status, body)

    await asyncio.to_thread(check)
    # the fuzzer reached past authentication into validation and storage on every route
    for path in POST_ROUTES:
        statuses = {status for (p, status), _ in seen.items() if p == path}
        assert {401, 400} <= statuses, (path, seen)
    assert ("/webhooks/tiktok", 200) in seen and ("/v1/boxes", 202) in seen, seen
