"""Which offsets may be committed: per partition, the contiguous prefix of finished jobs.

Pure bookkeeping. Jobs finish out of order (a slow call behind a fast one); the commit
point of a partition only moves past an offset when it and everything before it is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition


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
