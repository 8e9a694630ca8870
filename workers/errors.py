"""Errors that carry their own verdict: the retry loop reads ``retriable``."""

from __future__ import annotations


class ApiError(Exception):
    """A failed call to an external API."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retriable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retriable = retriable
        self.status = status
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def retry_after_seconds(header: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form; an HTTP date is ignored)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None
