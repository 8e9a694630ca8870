"""Errors that carry their own verdict: the retry loop reads ``retriable``, and a typed
code says what went wrong."""

from __future__ import annotations

from enum import StrEnum


class HttpCode(str):
    """An HTTP error status no named code covers, as a code: ``http_400``, ``http_503``."""

    __slots__ = ()


class VendorCode(str):
    """A code an API put in its answer's body (TikTok's ``105002``), kept as it came."""

    __slots__ = ()


# What an ApiError's code may be: a member of a code enum (the labeler's FailureCode,
# the TikTok client's TikTokCode), or one of the two wrappers above; never a bare string.
ErrorCode = StrEnum | HttpCode | VendorCode


class ConfigError(ValueError):
    """A setting that keeps a worker from starting: said in one line, exit code 2."""


def http_code(status: int) -> HttpCode:
    return HttpCode(f"http_{status}")


class ApiError(Exception):
    """A failed call to an external API."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode,
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


def problem_of(exc: BaseException) -> str:
    """What went wrong, without the values it went wrong on: a buyer's name or street may
    be one (``int('Jane')`` says so in its message). A missing key names the key."""
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        return f"KeyError: missing {exc.args[0][:64]!r}"
    return type(exc).__name__
