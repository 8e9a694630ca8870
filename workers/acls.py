"""What each worker may do on the Kafka cluster: the ACLs of its own principal.

In production every worker connects as its own principal (a client certificate's
subject with mTLS, or a SCRAM user with SASL_SSL), so a platform team can grant each
exactly what it needs and nothing more. ``parcelflow topics acls`` prints them from the
topic registry, as ``kafka-acls.sh`` commands or as a table. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import (
    ALERTS,
    BOXES,
    BOXES_REJECTED,
    BUYER_KEYS,
    ERASURES,
    LABEL_ATTEMPTS,
    LABEL_FAILURES,
    LABEL_JOBS,
    LABEL_JOBS_REJECTED,
    LABELS,
    LIMITS,
    ORDERS,
    ORDERS_REJECTED,
    PLANS,
    REPAIRS,
    REPLAYS,
    SESSIONS,
    TOKENS,
    WEBHOOKS,
    WEBHOOKS_PARKED,
    WEBHOOKS_REJECTED,
    TopicSpec,
)
from workers.kafka import Topics
from workers.settings import KafkaSettings
from workers.topics import changelog_topic, wanted


@dataclass(frozen=True)
class Access:
    """What one worker reads, writes and which consumer groups it uses."""

    reads: tuple[TopicSpec, ...] = ()
    writes: tuple[TopicSpec, ...] = ()
    groups: tuple[str, ...] = ()  # base names (the namespace is added)
    changelog: bool = False  # the planner's table changelog: read and written
    group_offsets: bool = False  # reads every parcelflow group's committed offsets
    # other workers' groups whose members it counts (TikTok's call limit is shared)
    describes: tuple[str, ...] = ()

    def plus(self, more: Access) -> Access:
        return Access(
            reads=self.reads + more.reads,
            writes=self.writes + more.writes,
            groups=self.groups + more.groups,
            changelog=self.changelog or more.changelog,
            group_offsets=self.group_offsets or more.group_offsets,
            describes=self.describes + more.describes,
        )


WORKERS: dict[str, Access] = {
    "receiver": Access(
        # label events for the stations (GET /v1/labels/events): the labels, read only
        reads=(LABELS,),
        # it seals posted orders' recipients under data keys of its own; an operator's
        # erasure is asked for on ERASURES (the labeler does it)
        writes=(WEBHOOKS, WEBHOOKS_REJECTED, ORDERS, BOXES, ALERTS, BUYER_KEYS, ERASURES),
    ),
    "enricher": Access(
        # the shops' TikTok tokens, shared by its replicas: only the enricher reads them
        reads=(WEBHOOKS, WEBHOOKS_PARKED, TOKENS),
        writes=(ORDERS, WEBHOOKS_PARKED, WEBHOOKS_REJECTED, ALERTS, TOKENS, BUYER_KEYS),
        groups=("parcelflow-enricher", "parcelflow-enricher-parked"),
    ),
    "planner": Access(
        # the auditor's repair requests: records named by offset, read back by the planner
        reads=(ORDERS, BOXES, REPAIRS, ERASURES),
        writes=(PLANS, LABEL_JOBS, ORDERS_REJECTED, BOXES_REJECTED),
        changelog=True,
    ),
    "labeler": Access(
        # the ledger reads its own records back: a redelivered job is never labeled twice;
        # the replicas share what they learned of the provider through LIMITS
        # an operator's replay: the request read, the job of its own failure record sent
        # only the labeler unwraps buyer data keys (and reads which were destroyed)
        reads=(
            LABEL_JOBS,
            LABELS,
            LABEL_ATTEMPTS,
            LABEL_FAILURES,
            LIMITS,
            REPLAYS,
            BUYER_KEYS,
            ERASURES,
        ),
        writes=(
            LABELS,
            LABEL_FAILURES,
            LABEL_ATTEMPTS,
            LABEL_JOBS_REJECTED,
            ALERTS,
            LIMITS,
            LABEL_JOBS,
            BUYER_KEYS,  # an erasure's tombstones
            ERASURES,  # an erasure done
        ),
        groups=("parcelflow-labeler", "parcelflow-labeler-replays", "parcelflow-labeler-erasures"),
    ),
    "auditor": Access(
        reads=(ORDERS, BOXES, PLANS, LABEL_JOBS, LABELS, LABEL_FAILURES),
        # it asks the planner to join missed records again; it writes no order or box
        writes=(REPAIRS, BOXES_REJECTED, ALERTS),
    ),
    "dashboard": Access(
        reads=(
            ORDERS,
            BOXES,
            PLANS,
            LABEL_JOBS,
            LABELS,
            LABEL_FAILURES,
            ALERTS,
            WEBHOOKS_PARKED,
            REPLAYS,
            REPAIRS,
            SESSIONS,
        ),
        # replays asked for (the labeler checks and acts); sessions ended by a logout
        writes=(REPLAYS, SESSIONS),
        group_offsets=True,
    ),
}

# Where a shop's labels come from TikTok Shipping, the labelers read the shops' tokens (and
# write the settings' tokens when the topic has none), and the labelers and enrichers count
# each other's members: they share TikTok's call limit.
TIKTOK_SHIPPING: dict[str, Access] = {
    "labeler": Access(reads=(TOKENS,), writes=(TOKENS,), describes=("parcelflow-enricher",)),
    "enricher": Access(describes=("parcelflow-labeler",)),
}


# the consumer groups KEDA scales on, and the topic of each trigger
KEDA_WATCHES: tuple[tuple[str, TopicSpec], ...] = (
    ("labeler", LABEL_JOBS),
    ("enricher", WEBHOOKS),
    ("enricher-parked", WEBHOOKS_PARKED),
    ("planner", ORDERS),
    ("planner", BOXES),
)


def accesses(settings: KafkaSettings) -> dict[str, Access]:
    """Each worker's access for these settings: TikTok Shipping adds to two of them."""
    in_use = getattr(settings, "providers_in_use", None)  # ProviderSettings, when given
    if in_use is None or "tiktok" not in in_use():
        return WORKERS
    return {
        w: a.plus(TIKTOK_SHIPPING[w]) if w in TIKTOK_SHIPPING else a for w, a in WORKERS.items()
    }


@dataclass(frozen=True, order=True)
class Acl:
    principal: str
    resource: str  # topic, group or cluster
    name: str
    operation: str


def principal_of(worker: str) -> str:
    return f"User:parcelflow-{worker}"


def acls(settings: KafkaSettings) -> list[Acl]:
    """Every ACL, per worker principal, plus the topics job's."""
    names = Topics(settings)
    every_topic = [w.name for w in wanted(settings)]
    rows: set[Acl] = set()
    for worker, access in accesses(settings).items():
        who = principal_of(worker)
        # every worker checks every topic at start (partitions, co-partitioning, configs)
        for topic in every_topic:
            rows |= {Acl(who, "topic", topic, op) for op in ("Describe", "DescribeConfigs")}
        reads = {names(t) for t in access.reads}
        writes = {names(t) for t in access.writes}
        if access.changelog:
            reads.add(changelog_topic(settings))
            writes.add(changelog_topic(settings))
        rows |= {Acl(who, "topic", t, "Read") for t in reads}
        rows |= {Acl(who, "topic", t, "Write") for t in writes}
        groups = [names.group(g) for g in access.groups]
        if worker == "planner":
            groups.append(names.group(settings.planner_app_id))
        rows |= {Acl(who, "group", g, "Read") for g in groups}
        rows |= {Acl(who, "group", names.group(g), "Describe") for g in access.describes}
        if access.group_offsets:
            for other in WORKERS.values():
                rows |= {Acl(who, "group", names.group(g), "Describe") for g in other.groups}
            rows.add(Acl(who, "group", names.group(settings.planner_app_id), "Describe"))
    # KEDA's Kafka scaler reads each scaled group's lag: its committed offsets and the
    # topics' end offsets (deploy/k8s/overlays/production/keda.yaml)
    keda = principal_of("keda")
    for group, watched in KEDA_WATCHES:
        name = settings.planner_app_id if group == "planner" else f"parcelflow-{group}"
        rows.add(Acl(keda, "group", names.group(name), "Describe"))
        rows.add(Acl(keda, "topic", names(watched), "Describe"))
    topics_job = principal_of("topics")
    for topic in every_topic:
        for op in ("Create", "Describe", "DescribeConfigs", "AlterConfigs"):
            rows.add(Acl(topics_job, "topic", topic, op))
    return sorted(rows)


def as_commands(rows: list[Acl], bootstrap: str) -> str:
    """``kafka-acls.sh`` commands, one per ACL."""
    kinds = {"topic": "--topic", "group": "--group"}
    return "\n".join(
        f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config admin.properties "
        f"--add --allow-principal {a.principal} --operation {a.operation} "
        f"{kinds[a.resource]} {a.name}"
        for a in rows
    )


def as_table(rows: list[Acl]) -> str:
    lines = ["| principal | resource | name | operation |", "|---|---|---|---|"]
    lines += [f"| {a.principal} | {a.resource} | `{a.name}` | {a.operation} |" for a in rows]
    return "\n".join(lines)
