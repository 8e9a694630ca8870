"""Shared fixtures: one real broker per test session, unique names per test.

The broker is, in order of preference: ``PARCELFLOW_KAFKA_BOOTSTRAP`` when set; a
testcontainers Apache Kafka where a Docker engine answers; else the embedded Tansu.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from workers.settings import Settings


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    embedded: bool


def docker_answers() -> bool:
    """A Docker engine answers on its socket (checked without leaking a connection)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def own_ports() -> None:
    """Under pytest-xdist (``make test`` runs three workers), each worker draws the ports
    of the stacks and brokers it starts from a slice of its own: two workers never hand
    out the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    from devstack.broker import embedded

    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    low, high = embedded._PORT_RANGE
    size = (high - low + 1) // count
    start = low + int(worker.removeprefix("gw")) * size
    embedded._PORT_RANGE = (start, start + size - 1)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    given = os.environ.get("PARCELFLOW_KAFKA_BOOTSTRAP")
    if given:
        yield Broker(given, embedded=os.environ.get("PARCELFLOW_KAFKA_EMBEDDED") == "true")
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield Broker(kafka.get_bootstrap_server(), embedded=False)
        return
    from devstack.broker.embedded import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield Broker(embedded.bootstrap, embedded=True)


FAKE_SECRETS: dict[str, Any] = {
    "tiktok_app_key": "testapp",
    "tiktok_app_secret": "test-app-secret",
    "tiktok_access_token": "TTP_access_1",
    "tiktok_refresh_token": "TTP_refresh_1",
    "tiktok_shop_cipher": "ROW_test",
    "shipium_api_key": "shipium-test-key",
    "tiktok_token_key": "k4iB0sGQZxX0kPnXvFJ7oZ3c8W9dQe4rT2yU6iO1pAs=",
    "buyer_kek": "local",
    "buyer_local_key": "0Oq2c5o8v1mQ4sWgqJ3kY7tN9xR6bL2eH5uA8zC1dF4=",
    "principals": {
        "test-everything": {
            "token": "ingest-test-token",
            "roles": ["orders", "boxes", "labels", "operator"],
            "warehouses": ["*"],
        }
    },
}


@pytest.fixture
def make_settings(broker: Broker, tmp_path: Any) -> Callable[..., Settings]:
    """Settings on the session broker, in a namespace of their own (unique topics, groups)."""
    namespace = f"t{uuid.uuid4().hex[:10]}."

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap": broker.bootstrap,
            "kafka_embedded": broker.embedded,
            "topic_namespace": namespace,
            "topic_partitions": 2,
            "planner_data_dir": tmp_path / "planner",
            "label_dir": tmp_path / "labels",
            "tiktok_token_file": tmp_path / "tiktok-tokens.json",
            **FAKE_SECRETS,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    """Serve aiohttp apps on 127.0.0.1, port 0; returns their base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
