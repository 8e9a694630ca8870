"""Notice offsets the planner's consumer never delivered.

The planner's consumer delivers every offset (``workers.planner.delivery``), but a jump
can still happen: records thrown away at a resume arrive again when the consumer reads
from the committed offset. So a jump is only a suspicion; an offset is reported as
skipped when it has not arrived ``grace_ms`` after the jump over it was seen. The
auditor republishes what such offsets held; this makes the loss visible in the
planner's log and metrics, when it happens.
"""

from __future__ import annotations

MAX_WATCHED = 100_000  # offsets awaited at once; past it the oldest are judged at once


class SkipWatch:
    """Per topic partition: the highest offset seen, and the offsets jumped over, each
    with when the jump was seen."""

    def __init__(self, grace_ms: int = 30_000) -> None:
        self.grace_ms = grace_ms
        self.highest: dict[tuple[str, int], int] = {}
        self.awaited: dict[tuple[str, int, int], int] = {}  # (topic, partition, offset) -> at

    def see(self, topic: str, partition: int, offset: int, now_ms: int = 0) -> None:
        key = (topic, partition)
        highest = self.highest.get(key)
        if highest is not None and offset <= highest:
            self.awaited.pop((topic, partition, offset), None)  # a late one: no skip
            return
        self.highest[key] = offset
        if highest is not None:
            for missing in range(highest + 1, offset):
                self.awaited[(topic, partition, missing)] = now_ms

    def overdue(self, now_ms: int) -> list[tuple[str, int, int, int]]:
        """Ranges (topic, partition, first, last) never delivered within the grace; each
        is reported once."""
        cutoff = now_ms - self.grace_ms
        late = sorted(k for k, at in self.awaited.items() if at <= cutoff)
        if len(self.awaited) - len(late) > MAX_WATCHED:
            late = sorted(self.awaited)
        for key in late:
            del self.awaited[key]
        ranges: list[tuple[str, int, int, int]] = []
        for topic, partition, offset in late:
            if ranges and ranges[-1][:2] == (topic, partition) and ranges[-1][3] == offset - 1:
                ranges[-1] = (topic, partition, ranges[-1][2], offset)
            else:
                ranges.append((topic, partition, offset, offset))
        return ranges

    def forget(self) -> None:
        """After a rebalance: partitions may come back from where another worker left,
        and what was awaited is another worker's to deliver."""
        self.highest.clear()
        self.awaited.clear()
