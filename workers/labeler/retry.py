"""When a failed label call is tried again, and when a job gives up. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from workers.errors import ApiError
from workers.retry import backoff_delay
from workers.settings import LabelerSettings


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    max_age_ms: int
    base_s: float
    max_s: float

    @classmethod
    def from_settings(cls, settings: LabelerSettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.labeler_max_attempts,
            max_age_ms=int(settings.labeler_max_age_s * 1000),
            base_s=settings.labeler_backoff_base_s,
            max_s=settings.labeler_backoff_max_s,
        )

    def delay(self, attempt: int, error: ApiError, age_ms: int) -> float | None:
        """Seconds before attempt ``attempt + 1``, or None: the job fails with ``error``.

        Not retried: an error that says so, a job older than ``max_age_ms``, or the last
        attempt. A server's Retry-After is honoured.
        """
        if not error.retriable or age_ms > self.max_age_ms or attempt >= self.max_attempts:
            return None
        return backoff_delay(
            attempt, base_s=self.base_s, max_s=self.max_s, retry_after_s=error.retry_after_s
        )
