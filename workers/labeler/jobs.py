"""One label job from start to end. A job passes each part once, in this order:
``decide`` (what to do, from the ledger), ``filing`` (claim its box ids), ``calls`` (the
label call with its retries), ``filing`` again (store the documents), ``writer`` (the
records). The consumer loop around it is in ``worker.py``."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from schemas.common import Address, now_ms
from schemas.label import LabelFailure, LabelJob
from workers.buyer.keys import Erased, Opener, Unreadable
from workers.labeler import decide
from workers.labeler.calls import Caller, creating
from workers.labeler.codes import FailureCode
from workers.labeler.decide import Action
from workers.labeler.filing import Filing
from workers.labeler.ledger import Ledger
from workers.labeler.outcomes import Answered, Called, Ended
from workers.labeler.provider import LabelProvider, LabelResponse, PackageLog
from workers.labeler.writer import Writer
from workers.labels.store import open_store
from workers.settings import LabelerSettings

log = structlog.get_logger(__name__)


def scrubbed(message: str, recipient: Address) -> str:
    """A provider's error message without the recipient's values: a vendor may quote the
    address it refused ("no such postal code 73301"), and failure records are kept."""
    for value in recipient.model_dump().values():
        if isinstance(value, str) and len(value.strip()) >= 3:
            message = message.replace(value, "[buyer data]")
    return message


def package_log(writer: Writer) -> PackageLog:
    """Records a box's package on label-attempts.v1 the moment the provider names it."""

    async def record(job: LabelJob, box_id: str, package_id: str) -> None:
        made = decide.package_made(job, box_id, package_id, now_ms())
        await writer.publish(writer.attempts, job.order_id, made)
        log.info("package_created", job_id=job.job_id, box_id=box_id, package_id=package_id)

    return record


class JobRunner:
    """Runs label jobs to their end; at most ``max_in_flight`` label calls at once."""

    def __init__(
        self,
        settings: LabelerSettings,
        writer: Writer,
        providers: Mapping[str, LabelProvider],
        max_in_flight: int,
        opener: Opener,
    ) -> None:
        self.settings = settings
        self.opener = opener
        self.providers = providers
        self.writer = writer
        # one adaptive limit per provider: each finds its own capacity
        self.callers = {name: Caller(settings, writer, max_in_flight) for name in providers}
        self.calls = self.callers[settings.label_provider]  # the default's: shared warm
        self.filing = Filing(open_store(settings), settings.box_id_reuse_after_s)
        w = self.writer
        self.ledger = Ledger(settings, w.labels, w.attempts, w.failures)

    async def handle_job(self, job: LabelJob) -> Ended:
        """Run one job to its end; how it ended."""
        action = decide.decide(job, self.ledger)
        if action is Action.RECORD_CANCEL:
            return await self.cancel(job)
        if action is Action.DROP:
            log.info("label_job_dropped_cancelled", job_id=job.job_id, order_id=job.order_id)
            return Ended.DROPPED
        if action is Action.REPUBLISH:
            done = self.ledger.get(job.job_id)
            assert done is not None  # noqa: S101 (decided on it)
            await self.writer.publish(self.writer.labels, job.order_id, done)  # same event id
            return Ended.LABELED
        # a job a dead process started was routed then: only its boxes are claimed again
        routing = (
            None
            if action is Action.RECOVER
            else decide.routing_failure(job, self.settings, now_ms())
        )
        opened = await self.recipient(job)
        if isinstance(opened, LabelFailure):
            return await self.refuse(job, opened)
        refused = routing or await self.filing.claim_boxes(job)
        if refused is not None:
            return await self.refuse(job, refused)
        name = decide.provider_of(job, self.settings)
        provider, calls = self.providers[name], self.callers[name]
        if action is Action.RECOVER:
            # A process that died may have made this label: look before making another.
            found = await calls.with_retries(job, provider.find_label, timed=False)
            if not isinstance(found, LabelFailure) and found.response is not None:
                log.info("label_recovered", job_id=job.job_id, order_id=job.order_id)
                return await self.finish(job, Answered(found.response, 1, found.call_ms))
        await self.writer.publish(self.writer.attempts, job.order_id, decide.attempt(job, now_ms()))
        self.ledger.attempted.add(job.job_id)
        called = await calls.with_retries(job, creating(provider, opened))
        if isinstance(called, LabelFailure) and opened is not None:
            called = called.model_copy(update={"message": scrubbed(called.message, opened)})
        return await self.finish(job, called)

    async def recipient(self, job: LabelJob) -> Address | LabelFailure | None:
        """The job's recipient, opened (``workers.buyer``); or why there is no label to
        make: the buyer data was erased, or the sealed recipient does not open."""
        try:
            opened = await self.opener.open(job.order_id, job.recipient, job.shop_id)
        except Unreadable as exc:
            return decide.failure(
                job, FailureCode.RECIPIENT_UNREADABLE, str(exc), False, 0, now_ms()
            )
        if isinstance(opened, Erased):
            return decide.failure(job, FailureCode.ERASED, opened.reason, False, 0, now_ms())
        return opened

    async def cancel(self, job: LabelJob) -> Ended:
        """A cancel job: the cancellation failure (or, once labeled, the void one)."""
        self.ledger.cancelled.add(job.job_id)
        labeled = self.ledger.get(job.job_id) is not None
        await self.writer.publish(
            self.writer.failures, job.order_id, decide.cancellation(job, labeled, now_ms())
        )
        return Ended.CANCELLED

    async def refuse(self, job: LabelJob, refused: LabelFailure) -> Ended:
        await self.writer.publish(self.writer.failures, job.order_id, refused)
        log.warning(
            "label_job_refused", job_id=job.job_id, order_id=job.order_id, code=refused.error_code
        )
        return Ended.FAILED

    async def finish(self, job: LabelJob, called: Called[LabelResponse]) -> Ended:
        """Store and publish a label call's outcome; how the job ended."""
        if isinstance(called, LabelFailure):
            await self.writer.publish(self.writer.failures, job.order_id, called)
            log.warning(
                "label_failed",
                job_id=job.job_id,
                order_id=job.order_id,
                code=called.error_code,
                attempts=called.attempts,
            )
            return Ended.FAILED
        documents = await self.filing.store(job, called.response)
        if isinstance(documents, LabelFailure):
            await self.writer.publish(self.writer.failures, job.order_id, documents)
            return Ended.FAILED
        result = decide.result(
            job, called.response, documents, called.attempts, called.call_ms, now_ms()
        )
        await self.filing.index(result)
        await self.writer.publish(self.writer.labels, job.order_id, result)
        self.ledger.add(result)
        log.info(
            "labeled",
            job_id=job.job_id,
            order_id=job.order_id,
            parcels=len(result.parcels),
            call_ms=result.call_ms,
        )
        return Ended.LABELED
