"""Replays of failed label jobs an operator asked for, on ``label-replays.v1``."""

from __future__ import annotations

from pydantic import Field

from schemas.common import MAX_INT, Id, Model


class ReplayRequest(Model):
    """An operator asks the labeler to run a failed job again. It names the job only: the
    labeler takes the job from its own failure record, and only a replayable one."""

    event_id: Id
    job_id: Id
    order_id: Id
    principal: str = Field(max_length=64, description="The operator who asked.")
    requested_at_ms: int = Field(ge=0, le=MAX_INT)
