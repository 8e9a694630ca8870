"""Which label jobs already have a label: rebuilt from ``labels.v1`` on every assignment.

``labels.v1`` and ``label-jobs.v1`` have the same key (order id) and partition count,
so the label of a job read from partition p of ``label-jobs.v1`` is in partition p of
``labels.v1``. When the labeler is assigned partition p it reads that partition of
``labels.v1`` to its end: a redelivered or replayed job whose label exists then costs
no second label call, across restarts and across replicas, with no local state.

The same goes for ``label-attempts.v1``, written before a job's first call: a job with
an attempt but no label may have been labeled by a process that died before publishing
it, so the labeler looks it up at Shipium before it creates one. And for
``label-failures.v1``: a job cancelled before its label stays cancelled after a restart.
"""

from __future__ import annotations

import structlog

from schemas.codec import decode
from schemas.label import LabelAttempt, LabelFailure, LabelResult
from workers.kafka import read_to_end
from workers.labeler.codes import DECISIONS
from workers.settings import LabelerSettings

log = structlog.get_logger(__name__)


class Ledger:
    def __init__(
        self, settings: LabelerSettings, labels_topic: str, attempts_topic: str, failures_topic: str
    ) -> None:
        self.settings = settings
        self.labels_topic = labels_topic
        self.attempts_topic = attempts_topic
        self.failures_topic = failures_topic
        self.cancelled: set[str] = set()
        self.labels: dict[str, LabelResult] = {}
        self.attempted: set[str] = set()

    def get(self, job_id: str) -> LabelResult | None:
        return self.labels.get(job_id)

    def add(self, result: LabelResult) -> None:
        self.labels[result.job_id] = result

    async def load(self, partitions: set[int]) -> int:
        """Read these partitions of labels.v1 to their end; returns labels read."""
        if not partitions:
            return 0
        read = 0
        for record in await read_to_end(self.settings, self.labels_topic, partitions):
            label = decode(LabelResult, record.value)
            if isinstance(label, LabelResult):
                self.labels[label.job_id] = label
                read += 1
        for record in await read_to_end(self.settings, self.attempts_topic, partitions):
            attempt = decode(LabelAttempt, record.value)
            if isinstance(attempt, LabelAttempt):
                self.attempted.add(attempt.job_id)
        for record in await read_to_end(self.settings, self.failures_topic, partitions):
            failure = decode(LabelFailure, record.value)
            if isinstance(failure, LabelFailure) and failure.error_code in DECISIONS:
                self.cancelled.add(failure.job_id)
        log.info(
            "ledger_loaded",
            cancelled=len(self.cancelled),
            partitions=sorted(partitions),
            labels=read,
            attempted=len(self.attempted),
        )
        return read
