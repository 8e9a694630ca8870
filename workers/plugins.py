"""What other installed packages add to parcelflow, found by entry point, never imported.

A package lists a module under the entry-point group ``parcelflow.plugins`` (see
``pyproject.toml``); the module may define:

- ``add_commands(sub)``: more ``parcelflow`` subcommands (``sub`` is argparse's
  subparsers object). The devstack adds ``run``, ``up``, ``chaos``, ``scale``, ``soak``,
  ``send`` and ``simulator`` this way.
- ``find_settings(command) -> str | None``: before a client command reads its settings,
  point them at something running (the devstack: its ``var/run/current.env``); returns
  what it used, for one line on stderr.
- ``adapt_kafka_clients(client)``: fix a Kafka-compatible broker's known differences in
  this process's Kafka clients, given how to connect (``client_options``). Called only
  when ``PARCELFLOW_KAFKA_EMBEDDED`` is true: the devstack corrects the embedded
  broker's end offsets.

So production code never imports the devstack, and a production image without it is
whole.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from workers.kafka_auth import client_options
from workers.settings import KafkaSettings

GROUP = "parcelflow.plugins"


@cache
def plugins() -> tuple[ModuleType, ...]:
    """The plugins installed; one whose package was left out of this install (the
    production image copies no ``devstack/``) is skipped, any other error raised."""
    found = []
    for entry in entry_points(group=GROUP):
        try:
            found.append(entry.load())
        except ModuleNotFoundError as exc:
            if exc.name != entry.module.split(".")[0]:
                raise
    return tuple(found)


def hooks(name: str) -> list[Any]:
    return [getattr(p, name) for p in plugins() if callable(getattr(p, name, None))]


def adapt_kafka_clients(settings: KafkaSettings) -> None:
    """Install the embedded broker's client corrections in this process (idempotent)."""
    if not settings.kafka_embedded:
        return
    adapters = hooks("adapt_kafka_clients")
    if not adapters:
        raise RuntimeError(
            "PARCELFLOW_KAFKA_EMBEDDED=true, but no installed package adapts Kafka clients "
            "to the embedded broker (install parcelflow with its devstack)"
        )
    for adapt in adapters:
        adapt(client_options(settings))
