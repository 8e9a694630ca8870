"""Scripted answers: tests queue them, the next calls to an API consume them in order."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    status: int = 200
    code: int | None = None  # TikTok's body code (e.g. 105002)
    retry_after: float | None = None
    delay_s: float = 0.0
    message: str = "injected"
    # "created": the call does its work (a label is made), then answers ``status``; with
    # status 0 it drops the connection instead of answering. "": it fails before any work.
    after: str = ""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fault:
        return cls(
            status=int(raw.get("status", 200)),
            code=raw.get("code"),
            retry_after=raw.get("retry_after"),
            delay_s=float(raw.get("delay_s", 0.0)),
            message=str(raw.get("message", "injected")),
            after=str(raw.get("after", "")),
        )


@dataclass
class FaultQueue:
    queues: dict[str, deque[Fault]] = field(default_factory=dict)

    def push(self, api: str, faults: list[Fault]) -> None:
        self.queues.setdefault(api, deque()).extend(faults)

    def next(self, api: str) -> Fault | None:
        queue = self.queues.get(api)
        return queue.popleft() if queue else None
