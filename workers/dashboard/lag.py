"""Consumer lag of parcelflow's consumer groups, as any monitor of the cluster reads it:
the groups' committed offsets (OffsetFetch) against the partitions' end offsets."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Gauge

from schemas.topics import BOXES, LABEL_JOBS, ORDERS, WEBHOOKS, WEBHOOKS_PARKED, TopicSpec
from workers.kafka import Topics
from workers.kafka_auth import client_options
from workers.settings import KafkaSettings

LAG = Gauge(
    "parcelflow_consumer_lag",
    "Records not yet consumed: end offset minus the group's committed offset.",
    ["group", "topic", "partition"],
)


def groups(settings: KafkaSettings) -> dict[str, tuple[str, list[TopicSpec]]]:
    """Each stage's consumer group and the topics it consumes, by stage name."""
    names = Topics(settings)
    return {
        "enricher": (names.group("parcelflow-enricher"), [WEBHOOKS]),
        "enricher (parked)": (names.group("parcelflow-enricher-parked"), [WEBHOOKS_PARKED]),
        "planner": (names.group(settings.planner_app_id), [ORDERS, BOXES]),
        "labeler": (names.group("parcelflow-labeler"), [LABEL_JOBS]),
    }


class LagReader:
    """Reads lag per stage, group and partition. A consumer per group asks for its
    committed offsets (OffsetFetch); it never subscribes, so it never joins the group.
    (aiokafka's admin client cannot decode the embedded broker's OffsetFetch answer.)"""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.names = Topics(settings)
        self.ends = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
        self.members = {
            group: AIOKafkaConsumer(
                **client_options(settings), group_id=group, enable_auto_commit=False
            )
            for group, _ in groups(settings).values()
        }

    async def start(self) -> None:
        await self.ends.start()
        for member in self.members.values():
            await member.start()

    async def stop(self) -> None:
        for member in self.members.values():
            await member.stop()
        await self.ends.stop()

    async def read(self) -> list[dict[str, Any]]:
        """One row per stage and topic: the lag summed over partitions, and per partition.
        Partitions a group never committed count from their beginning."""
        rows = []
        for stage, (group, specs) in groups(self.settings).items():
            for spec in specs:
                topic = self.names(spec)
                parts = self.ends.partitions_for_topic(topic)
                if not parts:
                    await self.ends.topics()  # fetches the cluster's metadata
                    parts = self.ends.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                if not tps:
                    continue
                ends = await self.ends.end_offsets(tps)
                begins = await self.ends.beginning_offsets(tps)
                per_partition = {}
                for tp in tps:
                    done = await self.members[group].committed(tp)
                    at = done if done is not None and done >= 0 else begins[tp]
                    lag = max(0, ends[tp] - at)
                    per_partition[str(tp.partition)] = lag
                    LAG.labels(group, topic, str(tp.partition)).set(lag)
                rows.append(
                    {
                        "stage": stage,
                        "group": group,
                        "topic": topic,
                        "lag": sum(per_partition.values()),
                        "partitions": per_partition,
                    }
                )
        return rows
