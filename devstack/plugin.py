"""The devstack as a parcelflow plugin (entry point ``parcelflow.plugins``, see
``workers/plugins.py``): its commands, a running devstack's settings for client
commands, and the embedded broker's end-offsets correction in every Kafka client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devstack.broker.offsets import install_end_offsets_correction
from devstack.commands import add_commands
from devstack.discover import use_running_devstack

__all__ = ["adapt_kafka_clients", "add_commands", "find_settings"]


def find_settings() -> str | None:
    used = use_running_devstack()
    return None if used is None else f"the running devstack ({used})"


def adapt_kafka_clients(client: Mapping[str, Any]) -> None:
    install_end_offsets_correction(client)
