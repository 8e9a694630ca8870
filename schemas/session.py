"""Dashboard sessions ended before their time, on ``dashboard.sessions.v1``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import MAX_INT, Model


class SessionEnded(Model):
    """A session that no replica may honour any more, whatever its cookie says."""

    session_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    principal: str = Field(max_length=64)
    reason: Literal["logout"] = "logout"
    ended_at_ms: int = Field(ge=0, le=MAX_INT)
    expires_at_ms: int = Field(ge=0, le=MAX_INT, description="When the cookie ends anyway.")
