"""The dashboard's door: login, sessions, bearer tokens, and live pages that share one
snapshot per tick and are capped (no broker is needed: the board is filled by hand)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from schemas.codec import encode
from schemas.label import LabelFailure
from tests.conftest import FAKE_SECRETS
from tests.integration.kafka_helpers import provisioned
from tests.unit.factories import job, order
from workers.auth import Principals
from workers.dashboard.access import COOKIE, Access, token_print
from workers.dashboard.app import PUSHES, dashboard_app
from workers.dashboard.board import Board
from workers.runtime import Runtime
from workers.settings import Settings

OPERATOR = "operator-token-0123456789"
STATION = "station-token-0123456789"
OPERATOR_A = "operator-a-token-0123456789"


class CountingBoard(Board):
    made = 0

    def snapshot(self, now_ms: int, warehouses: frozenset[str] | None = None) -> dict[str, Any]:
        self.made += 1
        return super().snapshot(now_ms, warehouses)


@pytest.fixture
async def dashboard(serve: Any) -> AsyncIterator[tuple[str, CountingBoard, asyncio.Event]]:
    settings = Settings(
        **{
            **FAKE_SECRETS,
            "principals": {
                "ops": {"token": OPERATOR, "roles": ["operator"]},
                "ops-a": {"token": OPERATOR_A, "roles": ["operator"], "warehouses": ["A"]},
                "station": {"token": STATION, "roles": ["labels"], "warehouses": ["A"]},
            },
        },
        dashboard_auth="login",
        dashboard_cookie_secure=False,
        dashboard_max_clients=2,
        dashboard_session_key="k" * 32,
    )
    board, stop = CountingBoard(), asyncio.Event()
    runtime = Runtime(settings, "dashboard", stop)
    app = dashboard_app(runtime, board, Access(settings, Principals.from_settings(settings)))
    url = await serve(app)
    ticker = asyncio.create_task(app[PUSHES].tick(stop))
    yield url, board, stop
    stop.set()
    await ticker


async def test_login_sets_a_strict_httponly_session_and_only_operators_get_one(
    dashboard: tuple[str, CountingBoard, asyncio.Event],
) -> None:
    url, _, _ = dashboard
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        for path in ("/", "/api/snapshot", "/api/events"):
            async with http.get(url + path) as r:
                assert r.status == 401, path
        async with http.get(url + "/") as r:
            assert "Operator token" in await r.text()  # the page offers the login
        async with http.post(url + "/api/failures/replay", json={"all": True}) as r:
            assert r.status == 401
        async with http.post(url + "/login", data={"token": STATION}) as r:
            assert r.status == 401 and COOKIE not in r.cookies  # not an operator
        async with http.post(url + "/login", data={"token": OPERATOR}, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        value = r.cookies[COOKIE].value
        async with http.get(url + "/api/snapshot") as r:  # the session cookie goes along
            assert r.status == 200 and "totals" in await r.json()
        async with http.post(url + "/api/failures/replay", data="job_ids=x") as r:
            assert r.status == 415  # a form (from another site): refused
        async with http.post(url + "/logout") as r:
            assert r.status == 200
        async with http.get(url + "/api/snapshot") as r:
            assert r.status == 401
    async with aiohttp.ClientSession() as http:  # the same cookie, kept and sent again
        replayed = {"Cookie": f"{COOKIE}={value}"}
        async with http.get(url + "/api/snapshot", headers=replayed) as r:
            assert r.status == 401  # the logout ended the session, not only the cookie
    async with aiohttp.ClientSession() as http:
        bearer = {"Authorization": f"Bearer {OPERATOR}"}
        async with http.get(url + "/api/snapshot", headers=bearer) as r:
            assert r.status == 200
        forged = {"Cookie": f"{COOKIE}=9999999999:ops:{'0' * 64}"}
        async with http.get(url + "/api/snapshot", headers=forged) as r:
            assert r.status == 401


async def test_live_pages_share_one_snapshot_per_tick_and_are_capped(
    dashboard: tuple[str, CountingBoard, asyncio.Event],
) -> None:
    url, board, _ = dashboard
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    received: list[int] = [0, 0]
    streaming = [asyncio.Event(), asyncio.Event()]

    async def page(n: int, http: aiohttp.ClientSession) -> None:
        async with http.get(url + "/api/events", headers=bearer) as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"data: "):
                    received[n] += 1
                    streaming[n].set()
                    if received[n] >= 4:
                        return

    async with aiohttp.ClientSession() as http:
        pages = [asyncio.create_task(page(n, http)) for n in range(2)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in streaming)), 10)
        async with http.get(url + "/api/events", headers=bearer) as r:
            assert r.status == 503  # a third page: over dashboard_max_clients
        before = board.made
        await asyncio.wait_for(asyncio.gather(*pages), 15)
    pushed = sum(received)
    made = board.made - before
    # two pages, each pushed every tick: one snapshot per tick, not one per page
    assert made <= pushed / 2 + 1, (made, pushed)


def failure_of(order_id: str, warehouse: str) -> LabelFailure:
    j = job(order_id).model_copy(update={"warehouse_id": warehouse})
    return LabelFailure(
        event_id=f"failure-{j.job_id}",
        job_id=j.job_id,
        order_id=order_id,
        error_code="http_500",
        message="boom",
        retriable=True,
        attempts=3,
        job=j,
        failed_at_ms=1,
    )


async def test_an_operator_of_some_warehouses_sees_only_theirs(
    dashboard: tuple[str, CountingBoard, asyncio.Event],
) -> None:
    """Failures and held orders of other warehouses, and the counts that add up every
    warehouse, are not shown to an operator of warehouse A; an operator of every one sees
    them all."""
    url, board, _ = dashboard
    for order_id, warehouse in (("OA", "A"), ("OB", "B")):
        board.take("failures", encode(failure_of(order_id, warehouse)), 1)
    board.take("orders", encode(order("OB")), 1)
    async with aiohttp.ClientSession() as http:
        scoped = {"Authorization": f"Bearer {OPERATOR_A}"}
        async with http.get(url + "/api/snapshot", headers=scoped) as r:
            mine = await r.json()
        async with http.get(
            url + "/api/snapshot", headers={"Authorization": f"Bearer {OPERATOR}"}
        ) as r:
            every = await r.json()
    assert [f["order_id"] for f in mine["failures"]] == ["OA"] and mine["scope"] == ["A"]
    assert mine["totals"]["orders"] == 0 and mine["lag"] == []
    assert sorted(f["order_id"] for f in every["failures"]) == ["OA", "OB"]
    assert every["totals"]["orders"] == 1 and "scope" not in every


async def test_login_and_logout_refuse_other_sites(
    dashboard: tuple[str, CountingBoard, asyncio.Event],
) -> None:
    url, _, _ = dashboard
    async with aiohttp.ClientSession() as http:
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
            for path in ("/login", "/logout"):
                async with http.post(url + path, data={"token": OPERATOR}, headers=headers) as r:
                    assert r.status == 403, (path, headers)
        same = {"Sec-Fetch-Site": "same-origin"}
        async with http.post(
            url + "/login", data={"token": OPERATOR}, headers=same, allow_redirects=False
        ) as r:
            assert r.status == 303


def test_a_token_change_ends_the_sessions_made_with_the_old_one() -> None:
    def access(token: str) -> Access:
        settings = Settings(
            **{**FAKE_SECRETS, "principals": {"ops": {"token": token, "roles": ["operator"]}}},
            dashboard_session_key="k" * 32,
            dashboard_cookie_secure=False,
        )
        return Access(settings, Principals.from_settings(settings))

    before = access(OPERATOR)
    key = before.principals.key_of("ops")
    assert key is not None
    value, _ = before.sessions.issue("ops", token_print(key), now=time.time())
    request = make_mocked_request("GET", "/api/snapshot", headers={"Cookie": f"{COOKIE}={value}"})
    assert before.identify(request) is not None
    after = access("a-new-operator-token-0123456789")  # the same key, a restart
    assert after.identify(request) is None


async def test_a_logout_ends_the_session_on_every_replica(
    make_settings: Callable[..., Settings],
) -> None:
    """Two dashboard replicas on one broker: a session signed in on either works on both,
    and a logout on one is refused by the other within moments (dashboard.sessions.v1)."""
    from workers.dashboard.app import follow_sessions

    settings = make_settings(dashboard_session_key="k" * 32, dashboard_cookie_secure=False)
    await provisioned(settings)
    replicas = [Access(settings, Principals.from_settings(settings)) for _ in range(2)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(follow_sessions(settings, a, stop)) for a in replicas]
    try:
        for _ in range(300):  # both replicas read the topic to its end
            if all(a.ended.write is not None for a in replicas):
                break
            await asyncio.sleep(0.1)
        one, other = replicas
        key = one.principals.key_of("test-everything")
        assert key is not None
        value, _ = one.sessions.issue("test-everything", token_print(key), now=time.time())
        cookie = {"Cookie": f"{COOKIE}={value}"}
        assert other.identify(make_mocked_request("GET", "/", headers=cookie)) is not None
        await one.logout(make_mocked_request("POST", "/logout", headers=cookie))
        for _ in range(150):
            if other.identify(make_mocked_request("GET", "/", headers=cookie)) is None:
                break
            await asyncio.sleep(0.1)
        assert other.identify(make_mocked_request("GET", "/", headers=cookie)) is None
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
