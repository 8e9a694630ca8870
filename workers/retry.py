"""Exponential backoff with full jitter, honouring a server's Retry-After."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]; never less than the
    server's Retry-After when it gave one.
    """
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
