"""The planner's watch for offsets its consumer never delivered."""

from __future__ import annotations

from workers.planner.skips import SkipWatch


def test_a_jump_is_reported_only_once_its_offsets_are_overdue() -> None:
    watch = SkipWatch(grace_ms=1000)
    for n in (539, 540):
        watch.see("boxes", 2, n, now_ms=0)
    watch.see("boxes", 2, 542, now_ms=10)
    watch.see("boxes", 2, 543, now_ms=20)
    watch.see("boxes", 2, 550, now_ms=30)
    assert watch.overdue(now_ms=500) == []  # may still arrive
    assert watch.overdue(now_ms=1030) == [("boxes", 2, 541, 541), ("boxes", 2, 544, 549)]
    assert watch.overdue(now_ms=5000) == []  # reported once


def test_offsets_that_arrive_late_are_no_skip() -> None:
    """A resume threw buffered records away; the consumer reads them again from the
    committed offset: the jump was not a loss."""
    watch = SkipWatch(grace_ms=1000)
    for n in (100, 101, 102, 110, 111):
        watch.see("orders", 0, n, now_ms=0)
    for n in range(95, 112):  # refetched from the committed offset
        watch.see("orders", 0, n, now_ms=50)
    assert watch.overdue(now_ms=10_000) == []


def test_partitions_and_topics_are_watched_apart_and_forget_resets() -> None:
    watch = SkipWatch(grace_ms=0)
    watch.see("boxes", 2, 10)
    watch.see("boxes", 3, 500)  # first sight of a partition: no judgement
    watch.see("orders", 2, 7)
    watch.see("boxes", 2, 11)
    watch.see("boxes", 2, 13)
    watch.forget()
    watch.see("orders", 0, 400)
    assert watch.overdue(now_ms=1) == []


def test_the_planners_read_offsets_never_report_an_offset() -> None:
    """What Faust's consumer sees: no offset was read, so none is dropped as read and no
    gap is recorded; partitions with no commit are the ones to rewind."""
    from workers.planner.delivery import NeverRead, unset

    offsets = NeverRead()
    offsets["orders:0"] = 541
    offsets.update({"orders:1": 7})
    assert offsets["orders:0"] is None and offsets.get("orders:1") is None
    assert offsets.pop("orders:0", None) is None and len(offsets) == 0 and list(offsets) == []
    assert unset({"a": None, "b": 0, "c": 12}) == ["a", "b"]
