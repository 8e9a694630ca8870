"""Which label jobs already have a label: rebuilt from ``labels.v1`` on every assignment.

``labels.v1`` and ``label-jobs.v1`` have the same key (order id) and partition count,
so the label of a job read from partition p of ``label-jobs.v1`` is in partition p of
``labels.v1``. When the labeler is assigned partition p it reads that partition of
``labels.v1`` to its end: a redelivered or replayed job whose label exists then costs
no second label call, across restarts and across replicas, with no local state.
"""

from __future__ import annotations

import structlog

from schemas.codec import decode
from schemas.label import LabelResult
from workers.kafka import read_to_end

log = structlog.get_logger(__name__)


class Ledger:
    def __init__(self, bootstrap: str, labels_topic: str) -> None:
        self.bootstrap = bootstrap
        self.labels_topic = labels_topic
        self.labels: dict[str, LabelResult] = {}

    def get(self, job_id: str) -> LabelResult | None:
        return self.labels.get(job_id)

    def add(self, result: LabelResult) -> None:
        self.labels[result.job_id] = result

    async def load(self, partitions: set[int]) -> int:
        """Read these partitions of labels.v1 to their end; returns labels read."""
        if not partitions:
            return 0
        read = 0
        for record in await read_to_end(self.bootstrap, self.labels_topic, partitions):
            label = decode(LabelResult, record.value)
            if isinstance(label, LabelResult):
                self.labels[label.job_id] = label
                read += 1
        log.info("ledger_loaded", partitions=sorted(partitions), labels=read)
        return read
