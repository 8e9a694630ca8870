"""The labeler's flow control, pure: when to pause and resume the consumer, and which
offsets may be committed.

Jobs finish out of order (a slow call behind a fast one); the commit point of a partition
only moves past an offset when it and everything before it is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from aiokafka import TopicPartition


class Flow(Enum):
    PAUSE = "pause"  # every assigned partition: the backlog waits in Kafka
    RESUME = "resume"
    KEEP = "keep"


@dataclass(frozen=True)
class Holding:
    """How many jobs the labeler holds in memory, and when it takes more."""

    max_in_flight: int
    resume_fraction: float

    def most(self, limit: int) -> int:
        """Jobs held at most under call limit ``limit``: the limit and a margin for jobs
        writing their attempt or result records, which are not calls. The margin does not
        shrink with the limit: when calls are fast, most of a job's time is its writes
        (see docs/architecture.md, flow control), and a margin tied to a small limit held
        the labeler below the rate jobs came in. Still bounded by settings."""
        return limit + max(16, self.max_in_flight // 2)

    def low_water(self, limit: int) -> int:
        most = self.most(limit)
        return min(most - 1, int(most * self.resume_fraction))

    def decide(self, held: int, limit: int, blocked: bool, paused: bool) -> Flow:
        """Pause at the most (or while calls are blocked: the label API refuses the key);
        resume at the low-water mark."""
        if held >= self.most(limit) or blocked:
            return Flow.PAUSE
        if held <= self.low_water(limit) and paused:
            return Flow.RESUME
        return Flow.KEEP


@dataclass
class PartitionProgress:
    started: list[int] = field(default_factory=list)  # ascending
    finished: set[int] = field(default_factory=set)
    committed: int | None = None  # next offset to read, as committed


class OffsetTracker:
    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, PartitionProgress] = {}

    @property
    def in_flight(self) -> int:
        return sum(len(p.started) - len(p.finished) for p in self.partitions.values())

    def start(self, tp: TopicPartition, offset: int) -> None:
        progress = self.partitions.setdefault(tp, PartitionProgress())
        if progress.started and offset <= progress.started[-1]:
            raise ValueError(f"{tp} offset {offset} started out of order")
        progress.started.append(offset)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        progress = self.partitions.get(tp)
        if progress is not None and offset in progress.started:
            progress.finished.add(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (next offset to read), and forget what they cover."""
        out: dict[TopicPartition, int] = {}
        for tp, progress in self.partitions.items():
            done = 0
            while done < len(progress.started) and progress.started[done] in progress.finished:
                progress.finished.discard(progress.started[done])
                done += 1
            if done:
                progress.committed = progress.started[done - 1] + 1
                del progress.started[:done]
                out[tp] = progress.committed
        return out

    def forget(self, tps: set[TopicPartition]) -> None:
        """Drop revoked partitions: their unfinished jobs will be redelivered elsewhere."""
        for tp in tps:
            self.partitions.pop(tp, None)
