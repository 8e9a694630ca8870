"""The dashboard in a real browser: headless Chromium opens it while the devstack plays
traffic, and what it shows is checked against the topics.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when
missing); elsewhere the test is skipped with a message saying so.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from devstack.demo import Progress, send, watch
from devstack.demo_data import make_demo
from devstack.stack import Stack

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = ROOT / "var" / "screenshots"


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "no chromium/chromedriver: `sudo apt-get install chromium chromium-driver` "
            "(Debian) enables the browser test"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--window-size=1280,1800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and the browser it started, by their pids


def post(url: str, body: object) -> None:
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (local simulator)
        pass


def status_of(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    data = b'{"all": true}' if method == "POST" else None
    request = urllib.request.Request(  # noqa: S310 (local dashboard)
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


OPERATOR_TOKEN = "operator-token-for-the-browser-test"


QUERY_TEXT = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
QUERY_COUNT = "return document.querySelectorAll(arguments[0]).length;"
QUERY_BARS = "return [...document.querySelectorAll(arguments[0])].map((b) => +b.dataset.count);"


def wait_for(check: object, what: str, timeout_s: float = 60) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()  # type: ignore[operator]
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"the page never showed {what}")


def test_the_dashboard_shows_the_topics_live_and_replays_a_failure(
    tmp_path: Path, browser: object
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    driver = browser
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    # the page redraws its elements on every pushed event, so each read is one script
    # (find and read at once): an element found in one call may be gone by the next
    def text(selector: str) -> str:
        return str(driver.execute_script(QUERY_TEXT, selector))  # type: ignore[attr-defined]

    def count(selector: str) -> int:
        return int(driver.execute_script(QUERY_COUNT, selector))  # type: ignore[attr-defined]

    orders = make_demo(30, seed=21, run_id=431, now_s=int(time.time()))
    failing = make_demo(1, seed=22, run_id=432, now_s=int(time.time()))
    overrides = {
        "SIM_LABEL_LATENCY_MEDIAN_S": "0.3",
        "DASHBOARD_AUTH": "login",  # as in production: operators log in
        "DASHBOARD_COOKIE_SECURE": "false",  # plain HTTP on 127.0.0.1
    }
    operator = {"token": OPERATOR_TOKEN, "roles": ["operator"]}
    stack = Stack(tmp_path, overrides, principals={"ops": operator})
    with stack.running(say=False):
        settings, token = stack.settings, stack.token
        base = stack.dashboard_url
        # without login: 401 on the page, the API and replay; with a non-operator too
        for path, method in (("", "GET"), ("api/snapshot", "GET"), ("api/events", "GET")):
            assert status_of(base + path, method) == 401, path
        assert status_of(base + "api/failures/replay", "POST") == 401
        assert status_of(base + "api/snapshot", headers={"Authorization": "Bearer nope"}) == 401
        # the page offers the login form; the operator's token opens it
        driver.get(base)  # type: ignore[attr-defined]
        driver.find_element(By.ID, "token").send_keys(OPERATOR_TOKEN)  # type: ignore[attr-defined]
        driver.find_element(By.ID, "sign-in").click()  # type: ignore[attr-defined]
        wait_for(lambda: text("#status") in ("live", "connecting…"), "the page after login")
        cookie = driver.get_cookie("parcelflow_session")  # type: ignore[attr-defined]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        asyncio.run(send(orders, settings, stack.receiver_url, stack.simulator_url, token))
        progress = Progress(expected={o.order_id for o in orders})
        asyncio.run(watch(settings, progress, timeout_s=120, out=False))
        assert progress.pending == 0

        # the counters, pushed live (the page was opened before any traffic), equal the topics
        wait_for(lambda: text("#total-labels .n") == str(len(progress.labels)), "every label")
        assert text("#total-orders .n") == str(len(orders))
        assert text("#total-boxes .n") == str(sum(len(o.boxes) for o in orders))
        assert text("#total-jobs .n") == str(len(orders))
        assert text("#total-failures .n") == "0"
        assert text("#status") == "live"
        # latency plots, drawn: bars in each histogram and percentiles above them
        bars = driver.execute_script(QUERY_BARS, "#plot-job_to_label rect.bar")  # type: ignore[attr-defined]
        assert bars and sum(bars) == len(progress.labels)
        assert "p99" in text("#latency-box_to_job") and "n=30" in text("#latency-order_to_label")
        wait_for(lambda: "label-jobs.v1" in text("#lag"), "the labeler's lag")
        # the labeler's adaptive limit, read from its /metrics, plotted over time
        wait_for(lambda: text("#limit-now").startswith("now "), "the adaptive limit")
        assert count("#plot-limit polyline") > 0
        driver.save_screenshot(str(SCREENSHOTS / "dashboard.png"))  # type: ignore[attr-defined]

        # a scripted failure appears without a reload, with its reason
        post(
            f"{stack.simulator_url}/_sim/faults",
            {
                "api": "shipium",
                "faults": [{"status": 400, "message": "destinationAddress.postalCode invalid"}],
            },
        )
        asyncio.run(send(failing, settings, stack.receiver_url, stack.simulator_url, token))
        row = "#failures tbody tr[data-job-id]"
        wait_for(lambda: count(row) > 0, "the failure")
        assert "http_400: destinationAddress.postalCode invalid" in text(row)
        assert text("#total-failures .n") == "1"
        driver.save_screenshot(str(SCREENSHOTS / "dashboard-failure.png"))  # type: ignore[attr-defined]

        # replay from the page, as the signed-in operator: the job gets its label
        def click_replay() -> bool:
            try:
                driver.find_element(By.CSS_SELECTOR, f"{row} button").click()  # type: ignore[attr-defined]
            except StaleElementReferenceException:
                return False  # redrawn between find and click: find it again
            return True

        wait_for(click_replay, "a replay button that stays put")
        wait_for(lambda: text("#replay-result") == "replayed 1", "the replay")
        wait_for(lambda: text("#total-labels .n") == str(len(orders) + 1), "the replayed label")

        # at phone width nothing runs off the side
        driver.set_window_size(390, 1600)  # type: ignore[attr-defined]
        width = driver.execute_script(  # type: ignore[attr-defined]
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        driver.save_screenshot(str(SCREENSHOTS / "dashboard-phone.png"))  # type: ignore[attr-defined]
    assert width[0] <= width[1], f"wider than the phone's screen: {width}"
    assert (SCREENSHOTS / "dashboard.png").stat().st_size > 10_000
