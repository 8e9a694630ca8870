"""The Kafka ACLs `parcelflow topics acls` prints: each principal only what it needs."""

from __future__ import annotations

from pathlib import Path

import yaml

from workers.acls import acls, principal_of
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_keda_may_describe_exactly_the_groups_and_topics_it_scales_on() -> None:
    keda = ROOT / "deploy" / "k8s" / "overlays" / "production" / "keda.yaml"
    triggers = [
        trigger["metadata"]
        for doc in yaml.safe_load_all(keda.read_text())
        if doc and doc["kind"] == "ScaledObject"
        for trigger in doc["spec"]["triggers"]
    ]
    wanted = {("group", t["consumerGroup"]) for t in triggers}
    wanted |= {("topic", t["topic"]) for t in triggers}
    granted = {
        (a.resource, a.name, a.operation)
        for a in acls(Settings())
        if a.principal == principal_of("keda")
    }
    assert granted == {(kind, name, "Describe") for kind, name in wanted}


def test_the_dashboard_writes_no_topic_a_worker_acts_on_but_its_own() -> None:
    writes = {
        a.name
        for a in acls(Settings())
        if a.principal == principal_of("dashboard") and a.operation == "Write"
    }
    assert "label-jobs.v1" not in writes
