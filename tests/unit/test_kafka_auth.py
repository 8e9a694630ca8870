"""Every Kafka client of every process gets the security settings, built in one place."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from tests.conftest import FAKE_SECRETS
from workers.kafka import make_consumer, make_producer
from workers.kafka_auth import FileTokenProvider, client_options, faust_credentials
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def secured(ca_file: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        **FAKE_SECRETS,
        "kafka_bootstrap": "broker-1:9096,broker-2:9096",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "parcelflow",
        "kafka_sasl_password": "s3cret",
        "kafka_ssl_cafile": ca_file,
        **overrides,
    }
    return Settings(**values)


async def test_producers_and_consumers_connect_with_sasl_over_tls(ca_file: Path) -> None:
    settings = secured(ca_file)
    producer, consumer = make_producer(settings), make_consumer(settings, "group", "topic")
    await producer.stop()  # never started: nothing to close but the objects
    await consumer.stop()
    for inner in (producer.client, consumer._client):
        assert inner._bootstrap_servers == "broker-1:9096,broker-2:9096"
        assert inner._security_protocol == "SASL_SSL"
        assert inner._sasl_mechanism == "SCRAM-SHA-512"
        assert (inner._sasl_plain_username, inner._sasl_plain_password) == ("parcelflow", "s3cret")
        assert isinstance(inner._ssl_context, ssl.SSLContext)
        assert inner._ssl_context.check_hostname
        assert inner._ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_the_planner_gets_the_same_as_faust_credentials(ca_file: Path) -> None:
    from workers.planner.app import create_app

    app = create_app(secured(ca_file))
    credentials = app.conf.broker_credentials
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("parcelflow", "s3cret")
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    tls_only = faust_credentials(secured(ca_file, kafka_security_protocol="SSL"))
    assert tls_only is not None and tls_only.protocol.value == "SSL"
    assert faust_credentials(secured(ca_file, kafka_security_protocol="PLAINTEXT")) is None


def test_each_mechanism_and_protocol_maps_to_aiokafka_options(
    ca_file: Path, tmp_path: Path
) -> None:
    assert client_options(Settings(**FAKE_SECRETS)) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    tls = client_options(secured(ca_file, kafka_security_protocol="SSL"))
    assert tls["security_protocol"] == "SSL" and "sasl_mechanism" not in tls
    plain = client_options(
        secured(
            ca_file,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_allow_insecure=True,
        )
    )
    assert "ssl_context" not in plain and plain["sasl_mechanism"] == "PLAIN"
    token = tmp_path / "token"
    oauth = client_options(
        secured(ca_file, kafka_sasl_mechanism="OAUTHBEARER", kafka_sasl_oauth_token_file=token)
    )
    assert isinstance(oauth["sasl_oauth_token_provider"], FileTokenProvider)
    assert "sasl_plain_password" not in oauth
    no_check = client_options(
        secured(ca_file, kafka_ssl_check_hostname=False, kafka_allow_insecure=True)
    )
    assert not no_check["ssl_context"].check_hostname


async def test_the_oauth_token_is_read_from_its_file_at_each_authentication(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token"
    provider = FileTokenProvider(path)
    path.write_text("first\n")
    assert await provider.token() == "first"
    path.write_text("second")
    assert await provider.token() == "second"


def test_insecure_kafka_settings_are_refused_unless_allowed(ca_file: Path) -> None:
    with pytest.raises(ValidationError, match="kafka_ssl_check_hostname=false"):
        secured(ca_file, kafka_ssl_check_hostname=False)
    with pytest.raises(ValidationError, match="password in clear"):
        secured(ca_file, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN")
    # SCRAM never sends the password itself: allowed over plaintext
    scram = secured(ca_file, kafka_security_protocol="SASL_PLAINTEXT")
    assert client_options(scram)["sasl_mechanism"] == "SCRAM-SHA-512"


def test_incomplete_security_settings_are_refused_at_start(ca_file: Path) -> None:
    with pytest.raises(ValidationError, match="needs kafka_sasl_username"):
        secured(ca_file, kafka_sasl_username="")
    with pytest.raises(ValidationError, match="OAUTHBEARER needs"):
        secured(ca_file, kafka_sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ValidationError, match="both kafka_ssl_certfile and kafka_ssl_keyfile"):
        secured(ca_file, kafka_ssl_certfile=ca_file)


def test_the_password_never_shows_in_settings_output(ca_file: Path) -> None:
    settings = secured(ca_file)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_no_kafka_client_is_built_without_the_security_options() -> None:
    """Every aiokafka client in workers/ is made from ``client_options`` (directly, by
    make_producer and make_consumer, which spread it, or from options handed to the
    function as ``client``): none can miss TLS or SASL."""
    missing = []
    for path in sorted((ROOT / "workers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in CLIENTS:
                continue
            spread = [k.value for k in node.keywords if k.arg is None]
            from_options = any(
                (isinstance(v, ast.Call) and getattr(v.func, "id", "") == "client_options")
                or (isinstance(v, ast.Name) and v.id == "client")  # options passed in
                for v in spread
            )
            if not from_options and not (path.name == "kafka.py" and spread):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert missing == []
