"""Notice offsets the planner's consumer jumped over.

Faust can skip offsets at start and at rebalances (``../shared/BROKER.md``): the records
are on the topic, past the committed offset, and never reach the agent. The auditor
republishes what they held; this makes the skip itself visible, in the planner's log,
when it happens.
"""

from __future__ import annotations


class SkipWatch:
    """The highest offset seen per topic partition; a jump over offsets is a skip."""

    def __init__(self) -> None:
        self.highest: dict[tuple[str, int], int] = {}

    def see(self, topic: str, partition: int, offset: int) -> tuple[int, int] | None:
        """The first and last offset jumped over to reach this one, if any.

        A redelivered offset (at or below the highest) is no skip.
        """
        key = (topic, partition)
        highest = self.highest.get(key)
        if highest is not None and offset <= highest:
            return None
        self.highest[key] = offset
        if highest is not None and offset > highest + 1:
            return highest + 1, offset - 1
        return None

    def forget(self) -> None:
        """After a rebalance: partitions may come back from where another worker left."""
        self.highest.clear()
