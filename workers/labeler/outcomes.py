"""How a label call and a label job end: typed, so no caller reads a tuple by position
or compares strings. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from schemas.label import LabelFailure

Response = TypeVar("Response")


class Ended(StrEnum):
    """How one label-jobs.v1 record ended (the ``outcome`` of
    ``parcelflow_labeler_jobs_ended_total``)."""

    LABELED = "labeled"  # its label is on labels.v1 (made now, or found made before)
    FAILED = "failed"  # its failure is on label-failures.v1
    CANCELLED = "cancelled"  # a cancel job: the cancellation (or void) failure written
    DROPPED = "dropped"  # a create job of an order cancelled first: nothing to do
    REJECTED = "rejected"  # not a job at all: dead-lettered to label-jobs-rejected.v1


@dataclass(frozen=True)
class Answered(Generic[Response]):
    """A call that answered, after ``attempts`` tries; the last one took ``call_ms``."""

    response: Response
    attempts: int
    call_ms: int


# What a call with its retries comes to: an answer, or the failure that ends the job.
Called = Answered[Response] | LabelFailure
