"""The group's capacity from the labeler replicas' limit reports."""

from __future__ import annotations

from schemas.limits import LimitReport
from workers.labeler.shares import even_share, learned, running

NOW = 1_000_000_000
SECOND = 1000


def report(writer: str, limit: float, age_s: float, leaving: bool = False) -> LimitReport:
    return LimitReport(
        writer=writer,
        limit=limit,
        baseline_s=1.0 + limit / 1000,
        partitions=2,
        leaving=leaving,
        at_ms=NOW - int(age_s * SECOND),
    )


def group(*reports: LimitReport) -> dict[str, LimitReport]:
    return {r.writer: r for r in reports}


def test_the_capacity_is_what_the_running_replicas_hold_together() -> None:
    # a, b run now; c stopped 10 s ago, d stopped long ago: their capacity was taken over
    reports = group(
        report("a", 20, 2),
        report("b", 28, 4),
        report("c", 16, 10, leaving=True),
        report("d", 9, 60),
    )
    found = learned(reports, NOW, fresh_ms=15 * SECOND, window_ms=120 * SECOND)
    assert found is not None
    assert (found.capacity, found.replicas) == (48, 2)
    assert found.baseline_s == 1.024  # the median of theirs


def test_when_no_replica_runs_the_last_ones_within_the_window_count() -> None:
    # the whole group restarted: a and b stopped (a said so, b was killed), c long ago
    reports = group(report("a", 30, 5, leaving=True), report("b", 18, 40), report("c", 50, 200))
    found = learned(reports, NOW, fresh_ms=15 * SECOND, window_ms=120 * SECOND)
    assert found is not None
    assert (found.capacity, found.replicas) == (48, 2)


def test_nothing_recent_means_a_cold_start() -> None:
    assert learned({}, NOW, fresh_ms=15 * SECOND, window_ms=120 * SECOND) is None
    old = group(report("a", 30, 300))
    assert learned(old, NOW, fresh_ms=15 * SECOND, window_ms=120 * SECOND) is None


def test_a_replica_at_its_ceiling_says_the_provider_may_take_more() -> None:
    capped = report("a", 64, 2).model_copy(update={"ceiling": 64.0})
    below = report("b", 30, 2).model_copy(update={"ceiling": 64.0})
    found = learned(group(capped, below), NOW, fresh_ms=15 * SECOND, window_ms=120 * SECOND)
    assert found is not None and found.at_least
    found = learned(group(below), NOW, fresh_ms=15 * SECOND, window_ms=120 * SECOND)
    assert found is not None and not found.at_least


def test_replicas_even_out_by_partitions_and_keep_their_sum() -> None:
    group_now = [report("a", 40, 1), report("b", 6, 1), report("c", 2, 1)]
    shares = [even_share(group_now, r.partitions) for r in group_now]
    assert shares == [16, 16, 16]
    assert even_share(group_now, 4) == 32  # twice the partitions: twice the share
    assert even_share(group_now[:1], 2) is None  # alone: nothing to even out
    assert even_share(group_now, 0) is None  # no partitions held


def test_only_replicas_that_report_and_have_not_left_run_now() -> None:
    reports = group(report("a", 10, 1), report("b", 10, 20), report("c", 10, 1, leaving=True))
    assert [r.writer for r in running(reports, NOW, 15 * SECOND)] == ["a"]
