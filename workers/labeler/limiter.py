"""How many label calls to keep in flight, found from what the label provider does.

``Gradient`` is the pure limiter (after Netflix's Gradient2, TCP Vegas and AIMD's cut).
Calls report their latency and whether the provider pushed back (429, 503, a timeout).

- The first window (at most ``measure_calls`` in flight) measures the latency without a
  queue: the baseline. Then the limit starts at the initial one.
- Once per window: overload cuts the limit (``backoff``) and holds it through
  ``Retry-After``; latency above the baseline by more than the noise (``noise_s``,
  ``noise_share`` of the baseline, or three standard errors) moves the limit to
  ``limit * baseline / latency``; otherwise it grows by ``climb`` x sqrt(limit), by one
  call a window near the last queue (``cautious_s``), or doubles after a window that ran
  as many calls as last queued without a queue (the capacity rose). It does not grow
  while the calls never filled it.
- Each estimate is smoothed into the limit (``smoothing``); a window counts only calls
  started under the current limit (``started``/``ended`` carry a generation).

``Slots`` holds calls to the current limit (an asyncio semaphore whose size changes).
Why each rule is as it is, with what was measured: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class Gradient:
    min_limit: int = 4
    max_limit: int = 64
    limit: float = 16.0
    window_calls: int = 8  # calls per update, at least...
    window_s: float = 0.5  # ...and at least this long
    smoothing: float = 0.5  # share of the new estimate taken in each update
    backoff: float = 0.75  # the cut on overload
    drift: float = 0.01  # how fast the baseline follows latency that stays higher
    noise_s: float = 0.05  # latency within this of the baseline is not queueing (jitter)...
    noise_share: float = 0.05  # ...nor within this share of it...
    noise_z: float = 3.0  # ...nor within this many standard errors of the window's mean
    settle: float = 0.2  # share of a faster window's latency taken into the baseline
    climb: float = 2.0  # far from the last queueing, probe by this many sqrt(limit)
    cautious_s: float = 5.0  # after queueing was seen, probe by a call a window, not climb
    measure_calls: int = 4  # calls in flight at most until the baseline is measured
    # share of a group's probing this limiter does: 1/sqrt(replicas) when several probe
    # one provider, so that together they grow as fast as one would (and, each seeing
    # its share of the refusals, cut by backoff ** (1 / probe_share) on one)
    probe_share: float = 1.0
    # what the limiter has seen (exported as metrics by the labeler)
    long_s: float = 0.0  # the latency without queueing (the baseline)
    gradient: float = 1.0
    cuts: int = 0
    _window: list[float] = field(default_factory=list)
    _overload: bool = False
    _busiest: int = 0  # most calls in flight during the window
    _window_started: float | None = None
    _hold_until: float = 0.0  # no growth before (Retry-After)
    _queued_at: float = float("-inf")
    _generation: int = 0  # counts changes of ``current``
    _queued_calls: int = 0  # calls in flight when queueing was last seen
    _queued_s: float = float("inf")  # the latency then (inf: it was an overload)
    _rising: bool = False  # the capacity rose past the last queue: double until it shows

    def __post_init__(self) -> None:
        self.limit = float(min(self.max_limit, max(self.min_limit, self.limit)))

    @property
    def measuring(self) -> bool:
        """The first window: no baseline yet, at most ``measure_calls`` calls."""
        return self.long_s == 0.0

    @property
    def current(self) -> int:
        limit = min(int(self.limit), self.measure_calls) if self.measuring else int(self.limit)
        return max(self.min_limit, min(self.max_limit, limit))

    def started(self, in_flight: int) -> int:
        """A call started; ``in_flight`` counts it. Returns the limit's generation, to
        give back to ``ended``."""
        self._busiest = max(self._busiest, in_flight)
        return self._generation

    def ended(
        self,
        now: float,
        latency_s: float | None,
        overload: bool = False,
        retry_after_s: float | None = None,
        generation: int | None = None,
    ) -> bool:
        """A call ended: its latency (None if it failed otherwise), or the provider's push
        back. ``generation`` (from ``started``): a call that started under an earlier
        limit says nothing about this one, and is not counted (a Retry-After still
        holds). Returns True when the window closed and the limit was updated."""
        if self._window_started is None:
            self._window_started = now
        if generation is not None and generation != self._generation:
            if overload and retry_after_s:
                self._hold_until = max(self._hold_until, now + retry_after_s)
            return False
        if overload:
            self._overload = True
            if retry_after_s:
                self._hold_until = max(self._hold_until, now + retry_after_s)
        elif latency_s is not None:
            self._window.append(latency_s)
        calls = len(self._window) + (1 if self._overload else 0)
        # the measuring window: one round of its calls (later faster windows refine it)
        # a small limit closes its window after its own number of calls: with 3 in flight
        # a window of 8 would take three round trips, and the limit would trail the
        # provider by as much (several replicas sharing one provider run small limits)
        needed = min(self.window_calls, self.measure_calls if self.measuring else self.current)
        if calls < needed and not self._overload:
            return False
        if now - self._window_started < self.window_s:
            return False
        self._update(now)
        return True

    def warm(self, limit: float, baseline_s: float, now: float) -> None:
        """Take a limit learned elsewhere (other replicas of the group) and, when none was
        measured here yet, their latency without a queue. Growth from there starts as near
        a queue: nothing for ``cautious_s``, then the usual probing."""
        if baseline_s > 0 and self.measuring:
            self.long_s = baseline_s
        before = self.current
        self.limit = max(float(self.min_limit), min(float(self.max_limit), limit))
        self._queued(now, self.long_s)
        self._window.clear()
        self._overload, self._busiest, self._window_started = False, 0, now
        if self.current != before:
            self._generation += 1

    def nudge(self, limit: float) -> None:
        """Move to ``limit`` (held to the bounds) and nothing else: the replicas of a group
        even out their limits this way, their sum unchanged. The window goes on: a step
        toward an even share is no probe, and calls started before it still tell whether
        the provider queues."""
        self.limit = max(float(self.min_limit), min(float(self.max_limit), limit))

    def _update(self, now: float) -> None:
        before = self.current
        self._adjust(now)
        if self.current != before:
            self._generation += 1

    def _queued(self, now: float, latency_s: float) -> None:
        """Remember where the provider pushed back: when, at how many calls, how slow."""
        self._queued_at, self._queued_calls = now, self.current
        self._queued_s, self._rising = latency_s, False

    def _adjust(self, now: float) -> None:
        if self._overload:
            self._queued(now, float("inf"))
            # one of several replicas sees its share of the refusals: cut as the group must
            cut = self.backoff ** (1 / self.probe_share)
            self.limit = max(float(self.min_limit), self.limit * cut)
            self.cuts += 1
            self.gradient = self.backoff
        elif self._window:
            short = statistics.fmean(self._window)
            if self.measuring:
                self.long_s = short
            spread = statistics.pstdev(self._window) / math.sqrt(len(self._window))
            noise = max(self.noise_s, self.noise_share * self.long_s, self.noise_z * spread)
            if short - self.long_s > noise:  # queueing: what the provider sustains
                self.gradient = self.long_s / short
                estimate = self.current * self.gradient  # the calls that queued, not the float
                self._queued(now, short)
                # if it stays, it is the new normal
                self.long_s += self.drift * (short - self.long_s)
            else:  # no queue: probe for more, gently near where queueing began
                if short < self.long_s:  # faster: the baseline follows (slower: see drift)
                    self.long_s += self.settle * (short - self.long_s)
                self.gradient = 1.0
                gentle = now - self._queued_at < self.cautious_s
                # as many calls as queued last time, clearly faster than then and near
                # the baseline: the capacity rose past it, nothing to be careful of (the
                # baseline alone could have crept up to the queued latency)
                clear = short < self._queued_s - noise and short - self.long_s < noise / 2
                if gentle and clear and self._busiest >= self._queued_calls:
                    self._queued_at, gentle = float("-inf"), False
                    self._rising = True
                # near the last queue: a call at a time, and not past where it queued
                near = max(0.0, min(2.0, 2 * (self._queued_calls - self.limit)))
                probe = near if gentle else self.climb * math.sqrt(self.limit)
                probe *= self.probe_share
                if self._rising:
                    probe = max(probe, self.limit)
                if now < self._hold_until or self._busiest < self.current * 0.8:
                    probe = 0.0  # held after a Retry-After, or not needed: no growth (the
                    # calls in flight are whole: against the fraction, a limit of 3.9 would
                    # never see its 3 calls as filling it)
                estimate = self.limit + probe
            self.limit = self.limit * (1 - self.smoothing) + estimate * self.smoothing
            self.limit = max(float(self.min_limit), min(float(self.max_limit), self.limit))
        self._window.clear()
        self._overload = False
        self._busiest = 0
        self._window_started = now


class Slots:
    """At most ``limiter.current`` calls at once; waiters go in as the limit allows."""

    def __init__(self, limiter: Gradient) -> None:
        self.limiter = limiter
        self.in_flight = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Holds one call's place; yields the limit's generation (for ``ended``)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limiter.current)
            self.in_flight += 1
        generation = self.limiter.started(self.in_flight)
        try:
            yield generation
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def limit_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()
