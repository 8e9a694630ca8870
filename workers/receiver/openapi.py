"""The receiver's OpenAPI 3.1 document, built from the pydantic models it validates with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.box import BoxClosed
from schemas.buyer import ErasureRequest
from schemas.order import OrderPosted
from schemas.webhook import TikTokWebhook

REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
            },
        },
    },
}


def json_body(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }


def error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }


EMPTY_OK = {"description": "Stored durably in Kafka (acks=all), or a duplicate. Empty body."}
UNAVAILABLE = error("The broker did not ack in time: nothing is promised, retry.")
TOO_LARGE = error("Body over PARCELFLOW_RECEIVER_MAX_BODY_BYTES.")
BEARER_401 = error("Missing or wrong bearer token.")


def document(max_body_bytes: int) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths = intake_paths(components) | label_paths() | ops_paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "parcelflow receiver",
            "version": "1",
            "description": f"Bodies up to {max_body_bytes} bytes. A 2xx means the event is "
            "in Kafka; no other 5xx than 503 is ever answered.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "tiktokSignature": {"type": "apiKey", "in": "header", "name": "Authorization"},
            },
        },
    }


def intake_paths(components: dict[str, Any]) -> dict[str, Any]:
    """What writes to Kafka: TikTok's webhooks, order and box events."""
    accepted = {
        "description": "Stored durably in Kafka (acks=all).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}, "event_id": {"type": "string"}},
                }
            }
        },
    }
    ingest_responses = {
        "202": accepted,
        "400": error("Not JSON, or a field is invalid (named in `fields`)."),
        "401": BEARER_401,
        "413": TOO_LARGE,
        "503": UNAVAILABLE,
    }
    return {
        "/webhooks/tiktok": {
            "post": {
                "summary": "TikTok Shop webhook (any type; unknown types are kept).",
                "description": "Authorization: hex(HMAC-SHA256(app_secret, app_key + raw body)) "
                "for one of the configured TikTok apps. Answered within 3 s.",
                "security": [{"tiktokSignature": []}],
                "requestBody": json_body(TikTokWebhook, components),
                "responses": {
                    "200": EMPTY_OK,
                    "400": error(
                        "Not JSON, invalid envelope, or timestamp outside the freshness window; "
                        "kept in tiktok.webhooks.rejected.v1."
                    ),
                    "401": {"description": "Missing or wrong signature. Empty body."},
                    "413": TOO_LARGE,
                    "503": UNAVAILABLE,
                },
            }
        },
        "/v1/orders": {
            "post": {
                "summary": "An order event that already carries TikTok item ids.",
                "security": [{"bearer": []}],
                "requestBody": json_body(OrderPosted, components),
                "responses": ingest_responses,
            }
        },
        "/v1/boxes": {
            "post": {
                "summary": "A box closed at a packing station.",
                "security": [{"bearer": []}],
                "requestBody": json_body(BoxClosed, components),
                "responses": ingest_responses,
            }
        },
        "/v1/erasures": {
            "post": {
                "summary": "Ask for the erasure of an order's or a shop's buyer data (the "
                "operator role): the request is on buyer.erasures.v1 when this answers; a "
                "labeler destroys the data keys and deletes the labels, the planner "
                "tombstones the join state.",
                "security": [{"bearer": []}],
                "requestBody": json_body(ErasureRequest, components),
                "responses": {
                    "202": _ok(),
                    "400": error("Not exactly one of order_id and shop_id, or invalid."),
                    "401": BEARER_401,
                    "403": error("The principal lacks the operator role."),
                    "503": UNAVAILABLE,
                },
            }
        },
    }


def label_paths() -> dict[str, Any]:
    """The label fetch API, and the void refusal."""
    return {
        "/v1/labels/{job_id}/void": {
            "post": {
                "summary": "Void a label: refused, TikTok Shop labels are voided in Seller Center.",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"401": BEARER_401, "409": error("Voiding is not possible here.")},
            }
        },
        "/v1/labels/events": {
            "get": {
                "summary": "Server-Sent Events: the labels of the caller's warehouses as they "
                "are made (event: label), after one event: ready. Resumable with "
                "Last-Event-ID; a heartbeat comment every PARCELFLOW_LABEL_EVENTS_PING_S.",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "station",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 128},
                    },
                    {
                        "name": "from",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["start"]},
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream; each label event's data is JSON: job_id, "
                        "order_id, labeled_at_ms and parcels (box_id, warehouse_id, "
                        "station_id, tracking_id, formats, document).",
                        "content": {"text/event-stream": {}},
                    },
                    "400": error("station too long."),
                    "401": BEARER_401,
                    "429": error("PARCELFLOW_LABEL_EVENTS_PER_PRINCIPAL streams open already."),
                },
            }
        },
        "/v1/labels/{job_id}": {
            "get": {
                "summary": "A label job's label: parcels, tracking ids, formats.",
                "security": [{"bearer": []}],
                "parameters": [path_id("job_id")],
                "responses": {
                    "200": _ok(),
                    "401": BEARER_401,
                    "404": error("No label for this job (yet)."),
                    "410": error("The label was erased with its buyer data."),
                },
            }
        },
        "/v1/labels/{job_id}/{box_id}": {
            "get": {
                "summary": "One parcel's label document.",
                "security": [{"bearer": []}],
                "parameters": [path_id("job_id"), path_id("box_id"), FORMAT],
                "responses": _document_responses(),
            }
        },
        "/v1/boxes/{box_id}/label": {
            "get": {
                "summary": "The label document of a box, by its id alone (a packing station).",
                "security": [{"bearer": []}],
                "parameters": [path_id("box_id"), FORMAT],
                "responses": _document_responses(),
            }
        },
    }


def ops_paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": {"summary": "The process is up.", "responses": {"200": _ok()}}},
        "/readyz": {
            "get": {
                "summary": "The broker answers.",
                "responses": {"200": _ok(), "503": error("The broker does not answer.")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "responses": {"200": {"description": "Prometheus text format."}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document.", "responses": {"200": {"description": "OpenAPI"}}}
        },
    }


def path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["pdf", "png", "zpl"]},
}


def _document_responses() -> dict[str, Any]:
    return {
        "200": {
            "description": "The document.",
            "content": {
                "application/pdf": {},
                "image/png": {},
                "application/x-zpl": {},
            },
        },
        "400": error("Not a known format."),
        "401": BEARER_401,
        "404": error("No label (in this format) for this box (yet)."),
        "409": error("Two orders used this box id: ask again with ?order_id=."),
        "410": error("The label was erased with its buyer data."),
    }


def _ok() -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
