"""TikTok Shop webhooks (Partner API 202309) as the receiver stores them."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Id, Model


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

    type: int = Field(ge=0)
    tts_notification_id: Id
    shop_id: Id
    timestamp: int = Field(ge=0, description="Unix seconds, set by TikTok.")
    data: dict[str, Any]


class WebhookRecord(Model):
    """Value of ``tiktok.webhooks.v1``: the verified envelope plus when it was received."""

    event_id: Id = Field(description="The envelope's tts_notification_id (dedupe key).")
    received_at_ms: int
    app_key: str
    webhook: TikTokWebhook
