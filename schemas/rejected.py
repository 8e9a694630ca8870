"""Dead letters: what a worker could not handle, with the original bytes and why."""

from __future__ import annotations

import base64

from pydantic import Field

from schemas.common import Model


class RejectedRecord(Model):
    source_topic: str
    partition: int = Field(ge=-1, description="-1 when the input did not come from Kafka.")
    offset: int = Field(ge=-1)
    key_b64: str | None = None
    value_b64: str = Field(description="The original bytes, base64.")
    reason: str
    worker: str
    rejected_at_ms: int = Field(ge=0)

    def original(self) -> bytes:
        return base64.b64decode(self.value_b64)
