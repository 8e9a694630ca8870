"""What the labeler keeps in the label store: each parcel's documents, the label record
by job (for the fetch API), and the claim of each box id for its order."""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Counter

from schemas.codec import encode
from schemas.common import now_ms
from schemas.label import LabelDocument, LabelFailure, LabelJob, LabelResult
from workers.labeler import decide
from workers.labeler.codes import FailureCode
from workers.labeler.provider import LabelResponse
from workers.labels import claims
from workers.labels.store import CONTENT_TYPES, LabelStore, manifest_name, put_document
from workers.retry import backoff_delay

log = structlog.get_logger(__name__)
BOX_REFUSED = Counter(
    "parcelflow_labeler_box_id_refused",
    "Label jobs refused because another order holds one of their box ids in its warehouse.",
)
STORE_ATTEMPTS = 3


class Filing:
    def __init__(self, documents: LabelStore, box_id_reuse_after_s: float) -> None:
        self.documents = documents
        self.reuse_after_ms = int(box_id_reuse_after_s * 1000)

    async def store(
        self, job: LabelJob, response: LabelResponse
    ) -> list[list[LabelDocument]] | LabelFailure:
        """Each parcel's documents (every format) in the label store, or the failure that
        ends the job (tried a few times first: a disk may be full, a bucket away)."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return [
                    await self.parcel_documents(job, parcel.box_id, package.documents)
                    for parcel, package in zip(job.parcels, response.packages, strict=True)
                ]
            except Exception as exc:  # noqa: BLE001 (a disk or an object store: any error)
                log.warning(
                    "label_store_retry",
                    job_id=job.job_id,
                    order_id=job.order_id,
                    error=f"{type(exc).__name__}: {str(exc)[:300]}",
                )
                if attempt == STORE_ATTEMPTS:
                    message = f"label made, document not stored: {type(exc).__name__}: {exc}"
                    return decide.failure(
                        job, FailureCode.STORE_FAILED, message, True, attempt, now_ms()
                    )
                await asyncio.sleep(backoff_delay(attempt, base_s=0.2, max_s=2.0))
        raise AssertionError("unreachable")  # pragma: no cover

    async def parcel_documents(
        self, job: LabelJob, box_id: str, formats: dict[str, bytes]
    ) -> list[LabelDocument]:
        documents = []
        for fmt, data in formats.items():
            if fmt not in CONTENT_TYPES or not data:
                continue
            put = await put_document(self.documents, job.job_id, box_id, fmt, data)
            documents.append(
                LabelDocument(format=fmt, uri=put.uri, sha256=put.sha256, size=put.size)
            )
        return documents

    async def index(self, result: LabelResult) -> None:
        """The label record by job, for the fetch API (a box finds its job by its claim).
        Best effort: labels.v1 holds the truth; a failure here is logged, the label still
        counts."""
        try:
            await self.documents.put(
                manifest_name(result.job_id), encode(result), "application/json"
            )
        except Exception as exc:  # noqa: BLE001 (see above)
            log.warning("label_index_failed", job_id=result.job_id, error=type(exc).__name__)

    async def claim_boxes(self, job: LabelJob) -> LabelFailure | None:
        """Claim every box of the job for its order (``workers/labels/claims.py``); the
        failure that ends the job when another order holds one of its box ids."""
        at = now_ms()
        for parcel in job.parcels:
            wanted = claims.Claim(
                warehouse_id=parcel.warehouse_id,
                box_id=parcel.box_id,
                order_id=job.order_id,
                job_id=job.job_id,
                claimed_at_ms=at,
            )
            try:
                held = await claims.claim(self.documents, wanted, self.reuse_after_ms)
            except Exception as exc:  # noqa: BLE001 (a disk or an object store: any error)
                message = f"box claim not written: {type(exc).__name__}: {str(exc)[:200]}"
                return decide.failure(job, FailureCode.STORE_FAILED, message, True, 0, at)
            if held is not None:
                BOX_REFUSED.inc()
                message = (
                    f"box id {parcel.box_id} is held in warehouse {parcel.warehouse_id or '-'} "
                    f"by order {held.order_id} (job {held.job_id}): close the box under "
                    "another id, or replay once the box id may be reused "
                    "(PARCELFLOW_BOX_ID_REUSE_AFTER_S)"
                )
                return decide.failure(job, FailureCode.BOX_ID_IN_USE, message, False, 0, at)
        return None
