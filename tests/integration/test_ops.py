"""Every worker serves /healthz, /readyz and /metrics on its ops port, the same way."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.broker.embedded import EmbeddedBroker, free_port
from tests.integration.processes import settings_env, worker_process
from workers.settings import Settings
from workers.topics import ensure_topics

pytestmark = pytest.mark.slow

READY = {
    "enricher": b"enricher_ready",
    "labeler": b"labeler_ready",
    "auditor": b"auditor_ready",
    "planner": b"Worker]: Ready",
}
METRIC = {
    "enricher": "parcelflow_enricher_orders_total",
    "labeler": "parcelflow_labeler_jobs_ended_total",
    "auditor": "parcelflow_auditor_repairs_total",
    "planner": "python_info",
}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (local)
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as refused:
        return int(refused.code), refused.read().decode()
    except urllib.error.URLError as unreachable:  # not listening (yet)
        return 0, str(unreachable)


def eventually_ready(url: str, timeout_s: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = get(url)
        if status == 200 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.3)


@pytest.mark.parametrize("name", ["enricher", "labeler", "auditor", "planner"])
def test_each_worker_is_healthy_ready_and_measured_on_its_ops_port(
    name: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(ops_port=port)
    asyncio.run(ensure_topics(settings))
    with worker_process(name, settings, tmp_path / f"{name}.log", READY[name]):
        base = f"http://127.0.0.1:{port}"
        status, body = eventually_ready(f"{base}/healthz")  # Faust starts it with its tasks
        assert status == 200 and json.loads(body)["worker"] == name
        status, body = eventually_ready(f"{base}/readyz")
        assert status == 200, body
        status, body = get(f"{base}/metrics")
        assert status == 200 and METRIC[name] in body
        probe = subprocess.run(
            [sys.executable, "-m", "workers.cli", "health", "--ready"],
            env=settings_env(settings),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert probe.returncode == 0, probe.stderr  # the container's HEALTHCHECK


def test_readyz_says_why_when_the_broker_is_gone(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    with EmbeddedBroker() as broker:  # a broker of its own: this test stops it
        settings = make_settings(
            kafka_bootstrap=broker.bootstrap,
            kafka_embedded=True,
            ops_port=port,
            kafka_request_timeout_s=2.0,
        )
        asyncio.run(ensure_topics(settings))
        with worker_process("labeler", settings, tmp_path / "l.log", READY["labeler"]):
            assert eventually_ready(f"http://127.0.0.1:{port}/readyz")[0] == 200
            broker.stop()
            deadline = time.monotonic() + 30
            while (answer := get(f"http://127.0.0.1:{port}/readyz"))[0] == 200:
                assert time.monotonic() < deadline, "still ready without a broker"
                time.sleep(0.5)
            status, body = answer
            assert status == 503 and "the broker does not answer" in body
            assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # alive all the same
