"""TikTok Shop webhooks (Partner API 202309) as the receiver stores them."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import MAX_INT, Id, Model


class WebhookType(IntEnum):
    ORDER_STATUS_CHANGE = 1
    RECIPIENT_ADDRESS_UPDATE = 3
    PACKAGE_UPDATE = 4
    SELLER_DEAUTHORIZATION = 6
    UPCOMING_AUTHORIZATION_EXPIRATION = 7
    CANCELLATION_STATUS_CHANGE = 11


class TikTokWebhook(BaseModel):
    """The envelope exactly as TikTok sends it. Unknown fields and types are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: int = Field(ge=0, le=MAX_INT)
    tts_notification_id: Id
    shop_id: Id
    timestamp: int = Field(ge=0, description="Unix seconds, set by TikTok.", le=MAX_INT)
    data: dict[str, Any]


class WebhookRecord(Model):
    """Value of ``tiktok.webhooks.v1``: the verified envelope plus when it was received."""

    event_id: Id = Field(description="The envelope's tts_notification_id (dedupe key).")
    received_at_ms: int = Field(ge=0, le=MAX_INT)
    app_key: str
    webhook: TikTokWebhook


class ParkedWebhook(Model):
    """Value of ``tiktok.webhooks.parked.v1``: a webhook the enricher could not handle yet.

    Its shop must re-authorize, or TikTok did not answer after every retry. The enricher
    takes it again at ``due_at_ms`` (and again later while the cause lasts): never dropped.
    """

    record: WebhookRecord
    reason: str
    attempts: int = Field(ge=1, description="Times the enricher tried this webhook.", le=MAX_INT)
    parked_at_ms: int = Field(ge=0, le=MAX_INT)
    due_at_ms: int = Field(ge=0, le=MAX_INT)
