"""The labeler's commit bookkeeping and retry delays."""

from __future__ import annotations

import random

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from workers.labeler.flow import OffsetTracker
from workers.retry import backoff_delay

TP = TopicPartition("label-jobs.v1", 0)


def test_commit_only_the_contiguous_prefix_of_finished_jobs() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.start(TP, offset)
    tracker.finish(TP, 11)
    tracker.finish(TP, 13)
    assert tracker.committable() == {}
    assert tracker.in_flight == 2
    tracker.finish(TP, 10)
    assert tracker.committable() == {TP: 12}
    tracker.finish(TP, 12)
    assert tracker.committable() == {TP: 14}
    assert tracker.in_flight == 0


def test_revoked_partition_is_forgotten_uncommitted() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 5)
    tracker.forget({TP})
    tracker.finish(TP, 5)
    assert tracker.committable() == {}
    assert tracker.in_flight == 0


def test_out_of_order_start_is_refused() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 5)
    with pytest.raises(ValueError, match="out of order"):
        tracker.start(TP, 5)


@given(st.permutations(list(range(20))))
def test_any_finish_order_commits_exactly_up_to_the_first_unfinished(order: list[int]) -> None:
    tracker = OffsetTracker()
    for offset in range(20):
        tracker.start(TP, offset)
    done: set[int] = set()
    committed = 0
    for offset in order:
        tracker.finish(TP, offset)
        done.add(offset)
        committed = tracker.committable().get(TP, committed)
        first_unfinished = min(set(range(21)) - done)
        assert committed == first_unfinished


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(1)
    ceilings = [
        max(backoff_delay(a, base_s=1, max_s=8, rng=rng) for _ in range(200))
        for a in (1, 2, 3, 4, 6)
    ]
    assert ceilings[0] <= 1 < ceilings[2] <= 4 < ceilings[3] <= 8
    assert ceilings[4] <= 8
    assert backoff_delay(1, base_s=0.1, max_s=1, retry_after_s=5, rng=rng) == 5
