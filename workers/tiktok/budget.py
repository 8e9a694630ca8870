"""TikTok's call limit per app and shop, shared by every process that calls TikTok.

TikTok counts calls per app and shop over every caller: the enricher's Get Order Detail
and, for shops whose labels come from TikTok Shipping, the labeler's package and document
calls. Each of those processes limits its calls to a shop (one limiter per shop,
``TikTokClient.limiter``) to an equal share of ``tiktok_rate_limit_qps``: the limit over
the members of the enricher's and the labeler's consumer groups, which it reads from the
broker (DescribeGroups) every ``tiktok_budget_every_s``. A replica that starts or stops
changes every share within a period; a process that cannot read the groups keeps the
share it had.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from workers.kafka import Topics
from workers.kafka_auth import client_options
from workers.settings import TikTokWorkerSettings
from workers.tiktok.client import TikTokClient

log = structlog.get_logger(__name__)
SHARE = Gauge(
    "parcelflow_tiktok_shop_qps",
    "TikTok calls per second per shop this process may make: its share of the app's limit.",
)


def sharing_groups(settings: TikTokWorkerSettings) -> list[str]:
    """The consumer groups whose members call TikTok with this app."""
    names = Topics(settings)
    groups = [names.group("parcelflow-enricher")]
    if "tiktok" in settings.providers_in_use():
        groups.append(names.group("parcelflow-labeler"))
    return groups


def members_of(answers: list[Any]) -> int:
    """Members of the described groups that exist (DescribeGroups answers)."""
    return sum(
        len(group["members"])
        for answer in answers
        for group in answer.to_object()["groups"]
        if group["error_code"] == 0
    )


async def members(admin: AIOKafkaAdminClient, groups: list[str]) -> int:
    """The members of ``groups`` now, one group per request: a group nobody joined yet
    has none (the embedded broker answers such a request in a form aiokafka cannot
    decode, which is read as none)."""
    found = 0
    for group in groups:
        try:
            found += members_of(await admin.describe_consumer_groups([group]))
        except ValueError:
            continue
    return found


def share_of(limit_qps: float, members: int) -> float:
    return limit_qps / max(1, members)


async def keep_shared(
    settings: TikTokWorkerSettings, client: TikTokClient, stop: asyncio.Event
) -> None:
    """Until ``stop``: set the client's share of the limit from the groups' members."""
    SHARE.set(client.qps)
    groups = sharing_groups(settings)
    admin = AIOKafkaAdminClient(**client_options(settings))
    started = False
    try:
        while not stop.is_set():
            try:
                if not started:
                    await admin.start()
                    started = True
                counted = await members(admin, groups)
            except (KafkaError, OSError) as exc:
                log.warning("tiktok_budget_unread", error=type(exc).__name__)
            else:
                qps = share_of(settings.tiktok_rate_limit_qps, counted)
                if qps != client.qps:
                    log.info("tiktok_budget_shared", processes=counted, shop_qps=round(qps, 2))
                client.share(qps)
                SHARE.set(qps)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.tiktok_budget_every_s)
    finally:
        if started:
            await admin.close()
