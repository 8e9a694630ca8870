"""Topics as code: what the registry wants, what the cluster has, and what to do about it.

``parcelflow topics plan`` prints both side by side, ``apply`` creates what is missing and
alters what it may, ``check`` verifies what a worker needs (every topic there, the
co-partitioned topics with the partitions the planner's table has, a maximum message
size at least the largest record parcelflow writes). Every worker checks at start and
refuses to start on a mismatch; it creates missing topics itself only where
``PARCELFLOW_TOPICS_AUTO_CREATE`` lets it (the devstack; not where a platform team owns
the topics). The comparison is pure; only ``observe``, ``apply`` and ``ensure_topics``
talk to the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from schemas.topics import ALL_TOPICS, COPARTITIONED, TopicSpec
from workers.kafka_auth import client_options
from workers.settings import KafkaSettings

log = structlog.get_logger(__name__)

TOPIC_EXISTS = 36
CONFIG_NAMES = ("cleanup.policy", "retention.ms", "max.message.bytes", "min.insync.replicas")


class TopicsMismatch(RuntimeError):
    """The cluster's topics are not what parcelflow needs: one message says what."""


@dataclass(frozen=True)
class Wanted:
    name: str
    partitions: int
    replication: int
    configs: dict[str, str]
    copartitioned: bool


@dataclass(frozen=True)
class Observed:
    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)  # what the broker reported


@dataclass(frozen=True)
class Row:
    wanted: Wanted
    observed: Observed | None
    action: str  # "ok", "create", "alter ...", or what cannot be done
    problems: tuple[str, ...] = ()


def changelog_topic(settings: KafkaSettings) -> str:
    """The planner's table changelog, which Faust declares: provisioned like the rest."""
    return f"{settings.topic_namespace}{settings.planner_app_id}-orders-changelog"


def wanted(settings: KafkaSettings) -> list[Wanted]:
    copartitioned = {spec.name for spec in COPARTITIONED}

    def configs(spec: TopicSpec) -> dict[str, str]:
        return {
            "cleanup.policy": spec.cleanup_policy,
            "retention.ms": str(spec.retention_ms),
            "max.message.bytes": str(settings.kafka_max_message_bytes),
            "min.insync.replicas": str(settings.topic_min_insync_replicas),
        }

    topics = [
        Wanted(
            spec.full_name(settings.topic_namespace),
            settings.topic_partitions,
            settings.topic_replication,
            configs(spec),
            spec.name in copartitioned,
        )
        for spec in ALL_TOPICS
    ]
    table = {
        **configs(ALL_TOPICS[0]),
        "cleanup.policy": "compact",
        "retention.ms": "-1",
    }
    topics.append(
        Wanted(
            changelog_topic(settings),
            settings.topic_partitions,
            settings.topic_replication,
            table,
            True,
        )
    )
    return topics


def compare(settings: KafkaSettings, observed: dict[str, Observed]) -> list[Row]:
    """What to do for each wanted topic, and what is wrong with the ones that exist."""
    rows = []
    for want in wanted(settings):
        have = observed.get(want.name)
        if have is None:
            rows.append(Row(want, None, "create", (f"{want.name}: missing",)))
            continue
        problems = []
        if want.copartitioned and have.partitions != want.partitions:
            problems.append(
                f"{want.name}: {have.partitions} partitions, the co-partitioned topics "
                f"need {want.partitions} (PARCELFLOW_TOPIC_PARTITIONS)"
            )
        size = have.configs.get("max.message.bytes")
        if size is not None and int(size) < settings.kafka_max_message_bytes:
            problems.append(
                f"{want.name}: max.message.bytes {size} is below "
                f"PARCELFLOW_KAFKA_MAX_MESSAGE_BYTES ({settings.kafka_max_message_bytes})"
            )
        differ = {
            name: value
            for name, value in want.configs.items()
            if name in have.configs and have.configs[name] != value
        }
        if problems and have.partitions != want.partitions:
            action = "cannot fix: partitions of a keyed topic are never changed in place"
        elif differ:
            action = "alter " + ", ".join(f"{k}={v}" for k, v in sorted(differ.items()))
        else:
            action = "ok"
        rows.append(Row(want, have, action, tuple(problems)))
    return rows


def render(rows: list[Row]) -> str:
    """A plain table, one topic a line."""
    header = ("topic", "partitions", "replication", "retention.ms", "max.message.bytes", "action")
    lines = [header]
    for row in rows:
        have, want = row.observed, row.wanted
        if have is None:
            cells = ("-/" + str(want.partitions), "-/" + str(want.replication), "-", "-")
        else:
            cells = (
                f"{have.partitions}/{want.partitions}",
                f"{have.replication}/{want.replication}",
                have.configs.get("retention.ms", "?"),
                have.configs.get("max.message.bytes", "?"),
            )
        lines.append((want.name, *cells, row.action))
    widths = [max(len(str(line[n])) for line in lines) for n in range(len(header))]
    text = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(t.rstrip() for t in text) + "\n(have/want; '?': the broker did not say)"


async def observe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, Observed]:
    """Partitions, replication and the configs the broker reports, of the topics there."""
    existing = set(await admin.list_topics()) & set(names)
    if not existing:
        return {}
    described = await admin.describe_topics(sorted(existing))
    configs: dict[str, dict[str, str]] = {name: {} for name in existing}
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(existing)]
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                entries = resource[4]
                configs[resource[3]] = {
                    entry[0]: entry[1] for entry in entries if entry[0] in CONFIG_NAMES
                }
    except KafkaError as exc:  # a broker that cannot describe configs: partitions only
        log.warning("topic_configs_unknown", error=type(exc).__name__)
    return {
        topic["topic"]: Observed(
            partitions=len(topic["partitions"]),
            replication=len(topic["partitions"][0]["replicas"]) if topic["partitions"] else 0,
            configs=configs.get(topic["topic"], {}),
        )
        for topic in described
        if topic["error_code"] == 0
    }


async def current(settings: KafkaSettings) -> list[Row]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return compare(settings, await observe(admin, [w.name for w in wanted(settings)]))
    finally:
        await admin.close()


async def apply(settings: KafkaSettings, create_only: bool = False) -> list[Row]:
    """Create missing topics with their configs; alter differing configs (unless
    ``create_only``). Partition counts are never changed. Returns the rows after."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        names = [w.name for w in wanted(settings)]
        rows = compare(settings, await observe(admin, names))
        new = [
            NewTopic(
                row.wanted.name,
                row.wanted.partitions,
                row.wanted.replication,
                topic_configs=row.wanted.configs,
            )
            for row in rows
            if row.action == "create"
        ]
        if new:
            response = await admin.create_topics(new)
            for topic_error in getattr(response, "topic_errors", []):
                name, code = topic_error[0], topic_error[1]
                if code not in (0, TOPIC_EXISTS):
                    raise TopicsMismatch(f"creating topic {name} failed with Kafka error {code}")
            log.info("topics_created", topics=[t.name for t in new])
        alters = [r for r in rows if r.action.startswith("alter")]
        if alters and not create_only:
            resources = [
                ConfigResource(ConfigResourceType.TOPIC, r.wanted.name, configs=r.wanted.configs)
                for r in alters
            ]
            try:
                await admin.alter_configs(resources)
            except KafkaError as exc:
                log.warning("topic_configs_not_altered", error=f"{type(exc).__name__}: {exc}")
        return compare(settings, await observe(admin, names))
    finally:
        await admin.close()


async def ensure_topics(settings: KafkaSettings) -> None:
    """At a worker's start: create what is missing where allowed, then check; raise
    TopicsMismatch, with every problem in one message, if the worker cannot run."""
    if settings.topics_auto_create:
        rows = await apply(settings, create_only=True)
    else:
        rows = await current(settings)
    problems = [p for row in rows for p in row.problems]
    if problems:
        hint = (
            "run `parcelflow topics plan` to see them and `parcelflow topics apply` (or ask "
            "the platform team) to fix them"
        )
        raise TopicsMismatch(f"topics are not as parcelflow needs: {'; '.join(problems)}; {hint}")
