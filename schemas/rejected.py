"""Dead letters: what a worker could not handle, with the original bytes and why."""

from __future__ import annotations

import base64

from pydantic import Field

from schemas.common import MAX_INT, Model


class RejectedRecord(Model):
    """One rejected input. A dead letter always fits a Kafka record: an original too large
    to carry whole keeps a prefix (``truncated``), its size and sha256, and where it is
    (source topic, partition, offset) while the source retains it."""

    source_topic: str
    partition: int = Field(
        ge=-1, description="-1 when the input did not come from Kafka.", le=MAX_INT
    )
    offset: int = Field(ge=-1, le=MAX_INT)
    key_b64: str | None = None
    value_b64: str = Field(description="The original bytes (or their prefix), base64.")
    value_size: int = Field(-1, ge=-1, description="Bytes of the original value (-1: none).")
    value_sha256: str = Field("", description="sha256 of the whole original value, hex.")
    truncated: bool = Field(False, description="value_b64 holds only a prefix.")
    reason: str
    worker: str
    rejected_at_ms: int = Field(ge=0, le=MAX_INT)

    def original(self) -> bytes:
        return base64.b64decode(self.value_b64)
