"""structlog, configured once per process: JSON lines rendered by orjson."""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

GROUP_LOGGER = "aiokafka.consumer.group_coordinator"
# Fields that name a buyer's personal data: never logged, whatever a call site passes
# (a backstop: no call site logs them; buyer data is sealed where it enters).
BUYER_FIELDS = frozenset(
    {
        "recipient",
        "recipient_address",
        "address",
        "name",
        "phone",
        "phone_number",
        "street1",
        "street2",
        "address_line1",
        "address_line2",
        "postal_code",
        "buyer_email",
        "buyer_message",
    }
)
REDACTED = "[redacted: buyer data]"


def redact_buyer_data(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: buyer data fields (also one level down) replaced."""
    for key, value in event.items():
        if key in BUYER_FIELDS:
            event[key] = REDACTED
        elif isinstance(value, dict) and BUYER_FIELDS.intersection(value):
            event[key] = {k: REDACTED if k in BUYER_FIELDS else v for k, v in value.items()}
    return event


def configure(level: str = "info", *, json: bool = True) -> None:
    """structlog for parcelflow's own lines, and the standard library's loggers (aiokafka,
    aiohttp, Faust, mode) rendered the same way: one JSON object per line on stderr."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    quieter = max(numeric, logging.WARNING)
    logging.config.dictConfig(stdlib_config(quieter, json=json, groups_level=numeric))
    renderer: structlog.typing.Processor
    if json:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_buyer_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def stdlib_config(
    level: int | str, *, json: bool = True, groups_level: int | str | None = None
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that renders standard-library records (Faust's and
    mode's included: the planner passes it to Faust's worker) like structlog's lines.
    aiokafka's consumer-group lines (joined group X, generation N; partitions assigned
    and revoked: a few per rebalance) log at ``groups_level``, by default ``level``."""
    renderer = (
        structlog.processors.JSONRenderer(serializer=dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    redact_buyer_data,
                    renderer,
                ],
                "foreign_pre_chain": [
                    structlog.stdlib.add_log_level,
                    structlog.stdlib.add_logger_name,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                ],
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {GROUP_LOGGER: {"level": level if groups_level is None else groups_level}},
        "root": {"level": level, "handlers": ["default"]},
    }


def dump_tasks() -> None:
    """Print every asyncio task's stack to stderr (wired to SIGUSR1 in the workers)."""
    import asyncio

    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task.get_coro()!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()
