"""The auditor's repair requests, on ``planner.repairs.v1``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from schemas.common import MAX_INT, Id, Model

Offset = Annotated[int, Field(ge=0, le=MAX_INT)]


class RepairRequest(Model):
    """The auditor asks the planner to join again records it already has: an order's latest
    order event and its boxes, named by offset in ``orders.v1`` and ``warehouse.boxes.v1``
    (co-partitioned: one partition number for both). The planner reads them itself, so the
    auditor can name records but never write one."""

    event_id: Id
    order_id: Id
    partition: int = Field(ge=0, le=100_000)
    order_offset: Offset | None = None
    box_offsets: list[Offset] = Field(default_factory=list, max_length=1000)
    boxes: list[Id] = Field(
        default_factory=list, max_length=1000, description="Boxes that should have a plan."
    )
    job_missing: bool = Field(
        default=False, description="The order was released and its label job never came."
    )
    requested_at_ms: int = Field(ge=0, le=MAX_INT)
