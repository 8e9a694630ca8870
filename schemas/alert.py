"""Operational alerts on ``alerts.v1`` (a shop to re-authorize, a box without order...)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas.common import MAX_INT, Id, Model


class Alert(Model):
    event_id: Id
    kind: str = Field(description="e.g. seller_deauthorized, authorization_expiring.")
    shop_id: str = ""
    order_id: str = ""
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    at_ms: int = Field(ge=0, le=MAX_INT)
