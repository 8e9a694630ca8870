"""The adaptive concurrency limiter over scripted latency and error sequences."""

from __future__ import annotations

import asyncio
import math
import random
import statistics

from workers.labeler.limiter import Gradient, Slots


class Script:
    """Drives a limiter as a busy labeler would: windows of calls at the limit."""

    def __init__(self, limiter: Gradient) -> None:
        self.limiter, self.now = limiter, 0.0
        limiter.ended(0.0, None)  # the first window starts now: each window() is one

    def calls(self) -> int:
        """A window's calls: ``window_calls`` (the first, measuring one: ``measure_calls``)."""
        if not self.limiter.long_s:
            return min(self.limiter.window_calls, self.limiter.measure_calls)
        return self.limiter.window_calls

    def window(self, latency_s: float, busy: bool = True) -> float:
        calls = self.calls()
        for _ in range(calls):
            self.limiter.started(self.limiter.current if busy else 1)
        self.now += self.limiter.window_s
        for _ in range(calls):
            self.limiter.ended(self.now, latency_s)
        return self.limiter.limit

    def jittery(self, median_s: float, sigma: float, rng: random.Random) -> float:
        """A window whose calls vary as a real provider's do (lognormal), none queued."""
        calls = self.calls()
        for _ in range(calls):
            self.limiter.started(self.limiter.current)
        self.now += self.limiter.window_s
        for _ in range(calls):
            self.limiter.ended(self.now, rng.lognormvariate(math.log(median_s), sigma))
        return self.limiter.limit

    def overload(self, retry_after_s: float | None = None) -> float:
        self.now += self.limiter.window_s
        self.limiter.ended(self.now, None, overload=True, retry_after_s=retry_after_s)
        return self.limiter.limit


def test_steady_latency_grows_the_limit_to_its_maximum_gradually_once_it_queued() -> None:
    limiter = Gradient(min_limit=2, max_limit=64, limit=16)
    script = Script(limiter)
    assert limiter.current == 4, "the baseline is measured with few calls in flight"
    script.window(1.0)
    assert limiter.current == 16, "then the limit is the initial one"
    start = [script.window(1.0) for _ in range(5)]
    steps = [(b - a, a) for a, b in zip([16.0, *start], start, strict=False)]
    assert all(0 < step <= a**0.5 + 1e-9 for step, a in steps), "sqrt(limit) a window"
    while script.window(1.0) < 64:
        pass
    script.window(2.0)  # a queue: half-way (smoothed) to what the provider sustains
    assert limiter.current == 48
    before = [limiter.limit]
    limits = [script.window(1.0) for _ in range(60)]
    before += limits
    steps = [(b - a, a) for a, b in zip(before, limits, strict=False)]
    assert all(0 <= step <= a**0.5 + 1e-9 for step, a in steps), "sqrt(limit) a window at most"
    assert limits[-1] == 64


def test_rising_latency_lowers_the_limit_and_a_429_cuts_it() -> None:
    script = Script(Gradient(min_limit=2, max_limit=64, limit=32))
    for _ in range(10):
        script.window(1.0)
    before = script.limiter.limit
    after = [script.window(3.0) for _ in range(5)]  # the provider queues: 3x the baseline
    assert after[-1] < before * 0.8 and after == sorted(after, reverse=True)
    assert script.limiter.gradient < 0.8  # the baseline follows slowly: latency stays "high"
    level = script.limiter.limit
    assert script.overload() == max(2, level * 0.75)
    assert script.limiter.cuts == 1


def test_after_a_cut_recovery_is_gradual_and_waits_for_retry_after() -> None:
    script = Script(Gradient(min_limit=2, max_limit=64, limit=40))
    for _ in range(5):
        script.window(1.0)
    cut = script.overload(retry_after_s=3.0)
    held = [script.window(1.0) for _ in range(5)]  # 2.5 s: still inside Retry-After
    assert held == [cut] * 5
    grown = [script.window(1.0) for _ in range(5)]
    assert grown == sorted(grown) and grown[-1] > cut
    assert grown[0] - cut < 3, "one window adds a little"


def test_latency_that_varies_call_to_call_is_not_taken_for_queueing() -> None:
    # A provider at 2 s per call with the devstack simulator's spread (lognormal, 0.35):
    # no call ever waits in a queue, so the limit must not shrink. Taking the lowest
    # window as the baseline made every later window look queued: the limit sank to 2.
    for seed in range(5):
        script = Script(Gradient(min_limit=2, max_limit=64, limit=16))
        rng = random.Random(seed)
        limits = [script.jittery(2.0, 0.35, rng) for _ in range(200)]
        assert min(limits) >= 12, f"seed {seed}: sank to {min(limits):.1f}"
        held = statistics.fmean(limits[100:])  # a false alarm now and then costs a little
        assert held >= 40, f"seed {seed}: held {held:.1f} of 64 on average"


def test_calls_started_under_an_earlier_limit_do_not_move_it() -> None:
    limiter = Gradient(min_limit=2, max_limit=64, limit=16)
    script = Script(limiter)
    for _ in range(3):
        script.window(1.0)  # grows: each window changes the limit
    old = limiter.started(limiter.current)
    script.window(1.0)
    assert limiter.started(limiter.current) != old, "the limit changed: a new generation"
    level, now = limiter.limit, script.now
    for n in range(40):  # slow answers to calls made under the old limit: not counted
        assert not limiter.ended(now + 1 + n, 3.0, generation=old)
    assert not limiter.ended(now + 50, None, overload=True, generation=old)
    assert limiter.limit == level and limiter.cuts == 0
    for window in range(3):  # the same answers to calls made under the current limit
        fresh = limiter.started(limiter.current)
        for n in range(limiter.window_calls):
            limiter.ended(now + 60 + window * 10 + n, 3.0, generation=fresh)
    assert limiter.limit < level * 0.8


def test_it_holds_at_a_capacity_and_climbs_at_once_when_the_capacity_rises() -> None:
    # A provider that queues above its capacity (latency grows with the crowd, as the
    # devstack simulator's does), driven as the labeler drives the limiter: the limit's
    # calls start together and end a latency later. Near where it last queued the limit
    # probes a call at a time; when as many calls run again without a queue, the
    # capacity has risen: it doubles (smoothed: x1.5) a window until the queue shows,
    # without waiting out ``cautious_s`` (5 s) first.
    limiter, now = Gradient(min_limit=2, max_limit=64, limit=8), 0.0

    def window(capacity: int) -> float:
        nonlocal now
        calls = limiter.current
        generation = [limiter.started(n + 1) for n in range(calls)][-1]
        now += max(1.0, calls / capacity)
        for _ in range(calls):
            limiter.ended(now, max(1.0, calls / capacity), generation=generation)
        return limiter.limit

    held = [window(8) for _ in range(40)][10:]
    assert 7 <= min(held) and max(held) < 10, f"around a capacity of 8: {held}"
    rising = [window(48) for _ in range(100)]
    assert rising[4] > 40, f"the rise found and climbed (doubling) within 5 s: {rising}"
    held = [abs(limit - 48) <= 4.8 for limit in rising[8:]]
    assert sum(held) >= 0.9 * len(held), f"and held within 10%: {rising}"
    assert max(rising[8:]) <= 60, f"probing (it must, to find a rise) stays near: {rising}"


def test_a_short_backlog_does_not_grow_the_limit() -> None:
    script = Script(Gradient(min_limit=2, max_limit=64, limit=10))
    assert [script.window(1.0, busy=False) for _ in range(10)] == [10.0] * 10


def test_slots_admit_calls_up_to_the_current_limit() -> None:
    async def go() -> list[int]:
        limiter = Gradient(min_limit=1, max_limit=10, limit=2, measure_calls=10)
        slots, peak, running = Slots(limiter), [0], [0]

        async def call() -> None:
            async with slots.slot():
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                await asyncio.sleep(0.01)
                running[0] -= 1

        await asyncio.gather(*(call() for _ in range(10)))
        first = peak[0]
        limiter.limit, peak[0] = 5, 0
        await slots.limit_changed()
        await asyncio.gather(*(call() for _ in range(20)))
        return [first, peak[0]]

    assert asyncio.run(go()) == [2, 5]


def test_a_warm_limiter_starts_at_the_shared_limit_skips_measuring_and_probes_later() -> None:
    limiter = Gradient(min_limit=2, max_limit=64, limit=16)
    script = Script(limiter)
    limiter.warm(40.0, 1.0, script.now)
    assert (limiter.current, limiter.long_s, limiter.measuring) == (40, 1.0, False)
    # near a queue for cautious_s: windows without a queue do not grow it...
    for _ in range(int(limiter.cautious_s / limiter.window_s) - 1):
        assert script.window(1.0) == 40.0
    # ...then it probes for more as a cold one does
    for _ in range(6):
        script.window(1.0)
    assert limiter.limit > 44
    # a share above the ceiling or below the floor is held to them
    limiter.warm(500.0, 1.0, script.now)
    assert limiter.current == 64
    limiter.warm(0.5, 1.0, script.now)
    assert limiter.current == 2


def test_calls_started_before_a_warm_limit_do_not_count_in_its_first_window() -> None:
    limiter = Gradient(min_limit=2, max_limit=64, limit=16)
    script = Script(limiter)
    script.window(1.0)  # measured: baseline 1 s
    old = limiter.started(10)
    limiter.warm(30.0, 1.0, script.now)
    for _ in range(limiter.window_calls):
        limiter.ended(script.now + 1.0, 9.0, generation=old)  # slow, under the old limit
    assert limiter.limit == 30.0


def test_a_limiter_of_three_replicas_probes_at_a_share_of_the_pace() -> None:
    alone, shared = Gradient(limit=16), Gradient(limit=16, probe_share=1 / math.sqrt(3))
    for limiter in (alone, shared):
        script = Script(limiter)
        script.window(1.0)  # measured
        for _ in range(4):
            script.window(1.0)
    grown_alone, grown_shared = alone.limit - 16, shared.limit - 16
    assert 0 < grown_shared < grown_alone * 0.7


def test_nudge_moves_the_limit_within_its_bounds_and_keeps_the_window() -> None:
    limiter = Gradient(min_limit=2, max_limit=64, limit=16)
    script = Script(limiter)
    script.window(1.0)  # measured: baseline 1 s
    before = [limiter.started(n + 1) for n in range(limiter.window_calls)]
    limiter.nudge(30.0)
    assert limiter.current == 30
    # the calls started before the step still make the window: they show a queue
    closed = [limiter.ended(script.now + 1.0, 2.0, generation=g) for g in before]
    assert closed[-1] and limiter.gradient < 0.6 and limiter.limit < 30
    limiter.nudge(1000.0)
    assert limiter.current == 64


def test_a_small_limit_closes_its_window_after_its_own_number_of_calls() -> None:
    limiter = Gradient(min_limit=2, max_limit=64, limit=3)
    script = Script(limiter)
    script.window(1.0)  # measured with 3 calls
    calls = limiter.current
    assert calls < limiter.window_calls
    started = [limiter.started(n + 1) for n in range(calls)]
    closed = [limiter.ended(script.now + 1.0, 1.0, generation=g) for g in started]
    assert closed == [False] * (calls - 1) + [True]


def test_a_small_fractional_limit_that_its_calls_fill_still_grows() -> None:
    limiter = Gradient(min_limit=2, max_limit=64, limit=16)
    script = Script(limiter)
    script.window(1.0)  # measured
    limiter.nudge(3.9)  # 3 calls fill it: 3 < 0.8 x 3.9, yet nothing is left unused
    for _ in range(4):
        n = limiter.current
        started = [limiter.started(k + 1) for k in range(n)]
        script.now += 1.0
        for generation in started:
            limiter.ended(script.now, 1.0, generation=generation)
    assert limiter.current > 4


def test_one_of_three_replicas_cuts_harder_on_a_refusal() -> None:
    """Each of three replicas sees a third of the refusals: each cuts as the group must."""
    alone, shared = Gradient(limit=16), Gradient(limit=16, probe_share=1 / math.sqrt(3))
    for limiter in (alone, shared):
        script = Script(limiter)
        script.window(1.0)
        limiter.started(limiter.current)
        limiter.ended(script.now + 1.0, None, overload=True)
    assert shared.limit < alone.limit * 0.85
