"""An AsyncAPI 3.0 document of parcelflow's topics, for the teams that consume them.

Generated from the topic registry (``schemas/topics.py``) and the exported JSON Schemas
(``schemas/json/``): a channel per topic with its key, retention and cleanup policy, a
message per topic whose payload is that topic's JSON Schema. ``python -m schemas.export``
writes it beside the schemas as ``schemas/asyncapi.json``; a test fails while it is stale.
"""

from __future__ import annotations

from typing import Any

from schemas.topics import ALL_TOPICS, TopicSpec

TITLE = "parcelflow topics"
KAFKA_BINDING = "0.5.0"


def channel_id(spec: TopicSpec) -> str:
    return spec.name.removesuffix(".v1").replace(".", "-")


def message(spec: TopicSpec) -> dict[str, Any]:
    return {
        "name": spec.model.__name__,
        "title": spec.description,
        "contentType": "application/json",
        "payload": {"$ref": f"json/{spec.name}.json"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"The {spec.key}."},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def channel(spec: TopicSpec) -> dict[str, Any]:
    config: dict[str, Any] = {"cleanup.policy": [spec.cleanup_policy]}
    config["retention.ms"] = spec.retention_ms
    return {
        "address": spec.name,
        "description": f"{spec.description} Keyed by {spec.key}.",
        "messages": {channel_id(spec): {"$ref": f"#/components/messages/{channel_id(spec)}"}},
        "bindings": {
            "kafka": {
                "topic": spec.name,
                "topicConfiguration": config,
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


# The label events stream of the receiver's HTTP API (Server-Sent Events), beside the topics.
LABEL_EVENTS = "label-events"
LABEL_EVENTS_CHANNEL = {
    "address": "/v1/labels/events",
    "description": "Server-Sent Events of the receiver (GET, a bearer token with the labels "
    "role): event: label per label made for the caller's warehouses, resumable with "
    "Last-Event-ID (docs/http-api.md).",
    "servers": [{"$ref": "#/servers/receiver"}],
    "messages": {LABEL_EVENTS: {"$ref": f"#/components/messages/{LABEL_EVENTS}"}},
}
LABEL_EVENTS_MESSAGE = {
    "name": "LabelEvent",
    "title": "A label made (event: label).",
    "contentType": "application/json",
    "payload": {"$ref": f"json/{LABEL_EVENTS}.json"},
}


def document(version: str = "0.1.0") -> dict[str, Any]:
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": version,
            "description": "The Kafka topics parcelflow reads and writes: TikTok webhooks, "
            "orders, box-closed events, parcel plans, label jobs, labels, failures, alerts, "
            "the shared TikTok tokens and the dead letters of each input. Every topic but the "
            "tokens is co-partitioned by order id or shop id; with PARCELFLOW_TOPIC_NAMESPACE "
            "set, every address carries that prefix.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "receiver": {
                "host": "parcelflow-receiver:8080",
                "protocol": "http",
                "description": "The receiver's HTTP API (behind HTTPS at the ingress).",
            }
        },
        "channels": {channel_id(spec): channel(spec) for spec in ALL_TOPICS}
        | {LABEL_EVENTS: LABEL_EVENTS_CHANNEL},
        "operations": {
            "receiveLabelEvents": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{LABEL_EVENTS}"},
                "summary": "A packing station's print agent follows its labels.",
            }
        },
        "components": {
            "messages": {channel_id(spec): message(spec) for spec in ALL_TOPICS}
            | {LABEL_EVENTS: LABEL_EVENTS_MESSAGE}
        },
    }
