"""``parcelflow topics`` and the workers' topic check, on the real broker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.processes import settings_env
from workers.kafka_auth import client_options
from workers.settings import Settings
from workers.topics import TopicsMismatch, apply, current, ensure_topics

pytestmark = pytest.mark.slow


def parcelflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_apply_creates_every_topic_with_its_configs_and_check_passes(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(topics_auto_create=False)
    with pytest.raises(TopicsMismatch, match=r"orders\.v1: missing"):
        await ensure_topics(settings)  # nothing there, and not allowed to create
    planned = parcelflow(settings, "topics", "plan")
    assert planned.returncode == 0 and "create" in planned.stdout
    rows = await apply(settings)
    assert {r.action for r in rows} == {"ok"}, [r.action for r in rows if r.action != "ok"]
    orders = next(r for r in rows if r.wanted.name.endswith("orders.v1"))
    assert orders.observed is not None and orders.observed.partitions == 2
    assert orders.observed.configs.get("retention.ms") == str(14 * 86_400_000)
    await ensure_topics(settings)  # now the check passes
    checked = parcelflow(settings, "topics", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith("ok: every topic is as parcelflow needs")


async def test_a_worker_refuses_to_start_when_the_join_topics_differ(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A platform team made warehouse.boxes.v1 with 3 partitions, orders.v1 with 2: the
    join would silently break, so no worker starts, and the message says why."""
    settings = make_settings(topics_auto_create=False)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{settings.topic_namespace}warehouse.boxes.v1", 3, 1)])
    finally:
        await admin.close()
    await apply(settings)  # everything else as wanted; boxes cannot be fixed in place
    problems = [p for r in await current(settings) for p in r.problems]
    assert problems == [
        f"{settings.topic_namespace}warehouse.boxes.v1: 3 partitions, the co-partitioned "
        "topics need 2 (PARCELFLOW_TOPIC_PARTITIONS)"
    ]
    started = parcelflow(settings, "labeler")
    assert started.returncode == 2
    assert "not starting: topics are not as parcelflow needs" in started.stderr
    assert "warehouse.boxes.v1: 3 partitions" in started.stderr
    assert "Traceback" not in started.stderr
    assert parcelflow(settings, "topics", "check").returncode == 1
