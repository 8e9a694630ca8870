"""Buyer data protection: the data keys on ``buyer.keys.v1`` and the erasures on
``buyer.erasures.v1``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import MAX_INT, Id, Model, OptionalId


class DataKey(Model):
    """One data key of a shop, wrapped by a key-encryption key in a key service. The
    record's key is ``<shop id>/<key id>``; a tombstone destroys the data key (every
    recipient sealed under it becomes unreadable)."""

    key_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    shop_id: Id
    kek_id: str = Field(max_length=300, description="The KEK that wraps it: <service>:<name>.")
    wrapped: str = Field(max_length=4096, description="The wrapped key, base64.")
    created_at_ms: int = Field(ge=0, le=MAX_INT)
    writer: str = Field(max_length=128, description="The replica that made it.")


class Erasure(Model):
    """An erasure of an order's or a shop's buyer data: asked (who, what, when), then done
    (what was destroyed, when). The audit trail an auditor reads (kept 400 days)."""

    event_id: Id
    status: Literal["requested", "done", "cancelled"] = "requested"
    request_id: Id = Field(description="The request's event id (its own, when requested).")
    scope: Literal["order", "shop"]
    shop_id: OptionalId = ""
    order_id: OptionalId = ""
    principal: str = Field(
        max_length=64, description="Who asked (an operator, or deauthorization)."
    )
    reason: str = Field("", max_length=512)
    keys_destroyed: int = Field(0, ge=0, le=MAX_INT)
    labels_deleted: int = Field(0, ge=0, le=MAX_INT)
    at_ms: int = Field(ge=0, le=MAX_INT)
    not_before_ms: int = Field(
        0,
        ge=0,
        le=MAX_INT,
        description="When the erasure takes effect (0: at once; a de-authorization's: "
        "after PARCELFLOW_DEAUTHORIZED_ERASE_AFTER_S, unless cancelled first).",
    )


class ErasureRequest(Model):
    """``POST /v1/erasures``: an order or a shop, and why."""

    order_id: OptionalId = ""
    shop_id: OptionalId = ""
    reason: str = Field("", max_length=512)
