"""Topics as code: what parcelflow wants, compared with what a cluster reports. Pure."""

from __future__ import annotations

from tests.conftest import FAKE_SECRETS
from workers.settings import Settings
from workers.topics import Observed, changelog_topic, compare, render, wanted

SETTINGS = Settings(**FAKE_SECRETS, topic_namespace="t.", topic_partitions=6)


def matching() -> dict[str, Observed]:
    return {
        w.name: Observed(w.partitions, w.replication, dict(w.configs)) for w in wanted(SETTINGS)
    }


def test_the_registry_wants_every_topic_with_its_retention_and_size_and_the_changelog() -> None:
    topics = {w.name: w for w in wanted(SETTINGS)}
    assert topics["t.labels.v1"].configs["retention.ms"] == str(30 * 86_400_000)
    assert topics["t.orders.v1"].configs["max.message.bytes"] == str(1024 * 1024)
    assert topics[changelog_topic(SETTINGS)].configs["cleanup.policy"] == "compact"
    copartitioned = {w.name for w in topics.values() if w.copartitioned}
    assert {"t.orders.v1", "t.warehouse.boxes.v1", "t.label-jobs.v1", "t.labels.v1"} <= (
        copartitioned
    )
    assert "t.alerts.v1" not in copartitioned


def test_a_cluster_as_wanted_has_nothing_to_do_and_no_problem() -> None:
    rows = compare(SETTINGS, matching())
    assert {r.action for r in rows} == {"ok"} and not any(r.problems for r in rows)


def test_missing_topics_are_created_and_named_as_problems() -> None:
    observed = matching()
    del observed["t.label-attempts.v1"]
    rows = {r.wanted.name: r for r in compare(SETTINGS, observed)}
    assert rows["t.label-attempts.v1"].action == "create"
    assert rows["t.label-attempts.v1"].problems == ("t.label-attempts.v1: missing",)


def test_co_partitioning_and_message_size_are_checked_and_partitions_never_changed() -> None:
    observed = matching()
    observed["t.warehouse.boxes.v1"] = Observed(4, 1, {"max.message.bytes": "1048576"})
    observed["t.orders.v1"] = Observed(6, 1, {"max.message.bytes": "500000"})
    observed["t.alerts.v1"] = Observed(3, 1, {})  # not co-partitioned: any count will do
    rows = {r.wanted.name: r for r in compare(SETTINGS, observed)}
    assert rows["t.warehouse.boxes.v1"].problems == (
        "t.warehouse.boxes.v1: 4 partitions, the co-partitioned topics need 6 "
        "(PARCELFLOW_TOPIC_PARTITIONS)",
    )
    assert rows["t.warehouse.boxes.v1"].action.startswith("cannot fix")
    assert "max.message.bytes 500000 is below" in rows["t.orders.v1"].problems[0]
    assert rows["t.orders.v1"].action == "alter max.message.bytes=1048576"
    assert rows["t.alerts.v1"].problems == ()


def test_configs_the_broker_does_not_report_are_not_problems_and_the_table_says_so() -> None:
    observed = {name: Observed(o.partitions, o.replication, {}) for name, o in matching().items()}
    rows = compare(SETTINGS, observed)
    assert not any(r.problems for r in rows)
    table = render(rows)
    assert table.splitlines()[0].split() == [
        "topic",
        "partitions",
        "replication",
        "retention.ms",
        "max.message.bytes",
        "action",
    ]
    assert "t.orders.v1" in table and "6/6" in table and "?" in table
