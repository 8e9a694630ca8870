"""The planner's watch for offsets its consumer jumped over."""

from __future__ import annotations

from workers.planner.skips import SkipWatch


def test_a_jump_is_reported_with_the_offsets_skipped() -> None:
    watch = SkipWatch()
    assert [watch.see("boxes", 2, n) for n in (539, 540)] == [None, None]
    assert watch.see("boxes", 2, 542) == (541, 541)
    assert watch.see("boxes", 2, 543) is None
    assert watch.see("boxes", 2, 550) == (544, 549)


def test_partitions_and_topics_are_watched_apart() -> None:
    watch = SkipWatch()
    watch.see("boxes", 2, 10)
    assert watch.see("boxes", 3, 500) is None  # first sight of a partition: no judgement
    assert watch.see("orders", 2, 7) is None
    assert watch.see("boxes", 2, 11) is None


def test_redelivered_offsets_are_no_skip_and_forget_resets() -> None:
    watch = SkipWatch()
    for n in (100, 101, 102):
        watch.see("orders", 0, n)
    assert watch.see("orders", 0, 90) is None  # read again from the committed offset
    assert watch.see("orders", 0, 101) is None
    assert watch.see("orders", 0, 103) is None
    watch.forget()
    assert watch.see("orders", 0, 400) is None  # after a rebalance, from anywhere
