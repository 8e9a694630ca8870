"""How every Kafka client of parcelflow connects: TLS and SASL, from the settings.

One place builds the options, so that every aiokafka producer, consumer and admin client,
Faust's app and the CLI tools connect the same way to a managed or secured cluster
(Amazon MSK, Confluent Cloud, Aiven, Strimzi). Names follow the Kafka clients'
(``security.protocol``, ``sasl.mechanism``, ``ssl.ca.location``...).
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any

import faust
import structlog
from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from workers.settings import KafkaSettings

log = structlog.get_logger(__name__)
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAUTHBEARER tokens read from a file at each (re)authentication: the file a
    Kubernetes projected token, a sidecar or a cron job keeps fresh."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def token(self) -> str:
        token = self.path.read_text().strip()
        if not token:
            raise ValueError(f"the OAUTHBEARER token file {self.path} is empty")
        return token


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context: the cluster's CA (or the system's), a client certificate for
    mTLS, and the hostname check (on unless turned off)."""
    password = settings.kafka_ssl_key_password.get_secret_value() or None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        password=password,
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


@functools.cache
def warn_insecure(protocol: str, mechanism: str, check_hostname: bool) -> None:
    """Once per process: what kafka_allow_insecure let through (the settings refuse it
    otherwise)."""
    if protocol in TLS_PROTOCOLS and not check_hostname:
        log.warning("kafka_insecure", problem="TLS without checking the brokers' host names")
    if protocol == "SASL_PLAINTEXT" and mechanism == "PLAIN":
        log.warning("kafka_insecure", problem="a SASL PLAIN password sent without TLS")


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers and security."""
    protocol = settings.kafka_security_protocol
    if settings.kafka_allow_insecure:
        warn_insecure(protocol, settings.kafka_sasl_mechanism, settings.kafka_ssl_check_hostname)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
    }
    if protocol in TLS_PROTOCOLS:
        options["ssl_context"] = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        mechanism = settings.kafka_sasl_mechanism
        options["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            assert settings.kafka_sasl_oauth_token_file is not None  # noqa: S101 (validated)
            options["sasl_oauth_token_provider"] = FileTokenProvider(
                settings.kafka_sasl_oauth_token_file
            )
        else:
            options["sasl_plain_username"] = settings.kafka_sasl_username
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def faust_credentials(settings: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """The same security for Faust's ``broker_credentials``."""
    protocol = settings.kafka_security_protocol
    if settings.kafka_allow_insecure:
        warn_insecure(protocol, settings.kafka_sasl_mechanism, settings.kafka_ssl_check_hostname)
    context = ssl_context(settings) if protocol in TLS_PROTOCOLS else None
    if protocol not in SASL_PROTOCOLS:
        return None if context is None else faust.SSLCredentials(context)
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        assert settings.kafka_sasl_oauth_token_file is not None  # noqa: S101 (validated)
        token = FileTokenProvider(settings.kafka_sasl_oauth_token_file)
        credentials: Any = faust.OAuthCredentials(oauth_cb=token, ssl_context=context)
    else:
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    return credentials  # type: ignore[no-any-return]
