"""parcelflow's Kafka clients over real TLS (and mutual TLS) to the embedded broker.

The broker is reached only through TLS (see ``devstack.broker.tls``), with certificates
of a throwaway CA made for the test. A client that does not trust that CA is refused;
with mutual TLS, so is a client without a certificate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from devstack.broker.embedded import EmbeddedBroker
from devstack.broker.tls import Certificates, make_certificates
from schemas.order import Order
from schemas.topics import ORDERS
from tests.integration.kafka_helpers import models
from tests.unit.factories import order
from workers.kafka import Topics, make_consumer, make_producer, publish
from workers.settings import Settings
from workers.topics import ensure_topics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(certificates: Certificates) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tls=certificates) as broker:
        yield broker


@pytest.fixture(scope="module")
def mtls_broker(certificates: Certificates) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tls=certificates, client_auth=True) as broker:
        yield broker


async def round_trip(settings: Settings) -> list[Order]:
    """Create the topics, write an order and read it back, all through ``settings``."""
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish(producer, Topics(settings)(ORDERS), "TLS1", order("TLS1"))
    finally:
        await producer.stop()
    consumer = make_consumer(settings, Topics(settings).group("tls-test"), Topics(settings)(ORDERS))
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while not values:
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    values += [m.value for m in messages]
    finally:
        await consumer.stop()
    return models(Order, values)


async def refused(settings: Settings) -> bool:
    producer = make_producer(settings, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(producer.start(), 15)
    except (KafkaConnectionError, TimeoutError):
        return True
    finally:
        await producer.stop()
    return False


async def test_the_clients_work_over_tls_with_the_ca_and_are_refused_without_it(
    make_settings: Callable[..., Settings], tls_broker: EmbeddedBroker, certificates: Certificates
) -> None:
    tls = make_settings(
        kafka_bootstrap=tls_broker.bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certificates.ca,
    )
    assert [o.order_id for o in await round_trip(tls)] == ["TLS1"]
    assert await refused(tls.model_copy(update={"kafka_ssl_cafile": None}))  # system CAs only
    assert await refused(tls.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}))


async def test_mutual_tls_needs_the_client_certificate(
    make_settings: Callable[..., Settings], mtls_broker: EmbeddedBroker, certificates: Certificates
) -> None:
    mtls = make_settings(
        kafka_bootstrap=mtls_broker.bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certificates.ca,
        kafka_ssl_certfile=certificates.client_cert,
        kafka_ssl_keyfile=certificates.client_key,
    )
    assert [o.order_id for o in await round_trip(mtls)] == ["TLS1"]
    without = mtls.model_copy(update={"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None})
    assert await refused(without)


def test_certificates_are_private(certificates: Certificates) -> None:
    for path in (certificates.ca, certificates.server_key, certificates.client_key):
        assert Path(path).stat().st_mode & 0o777 == 0o600
